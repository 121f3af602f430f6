import assert from "node:assert/strict";
import { test } from "node:test";
import { startTestTidemark, type TestTidemark } from "../helpers/tidemark.js";
import { makeDataset } from "./dataset.js";
import { identityCases, identityEvents, makeIdentityDataset } from "./identity-dataset.js";
import { checkEventsQueries, queryCases } from "./query-cases.js";

/**
 * The behaviour every pipeline must show, run unchanged against each one: ingest, idempotency,
 * isolation between projects, and every query kind, whose answers are computed independently in
 * tests/conformance/dataset.ts.
 *
 * `setup` returns the environment that selects the pipeline, or a string: the reason to skip.
 */
export function pipelineConformance(
  name: string,
  setup: () => Promise<Record<string, string> | string>,
): void {
  test(`pipeline conformance: ${name}`, { timeout: 180_000 }, async (t) => {
    const env = await setup();
    if (typeof env === "string") {
      t.skip(env);
      return;
    }
    const tidemark = await startTestTidemark(env);
    t.after(() => tidemark.close());
    const data = makeDataset();
    const project = await tidemark.createProject("ENTERPRISE", `conformance ${name}`);
    await ingest(tidemark, project.api_key, data);
    await waitForStored(tidemark, project.id, data.length);

    await t.test("stores every event once, with the ledger in agreement", async () => {
      const stats = await tidemark.request("GET", `/api/v1/project/${project.id}/stats`, {
        key: tidemark.token,
      });
      assert.equal(stats.status, 200);
      assert.equal(stats.body.stored, data.length);
      assert.equal(stats.body.accepted, data.length);
      assert.equal(stats.body.received, data.length);
    });

    await t.test("a retried batch is stored once and counted as duplicates", async () => {
      const retry = data.slice(0, 50);
      const response = await tidemark.request("POST", "/api/v1/event/batch", {
        key: project.api_key,
        body: { events: retry },
      });
      assert.equal(response.status, 202);
      if (response.body.duplicates !== undefined) assert.equal(response.body.duplicates, 50);
      const single = await tidemark.request("POST", "/api/v1/event", {
        key: project.api_key,
        body: data[60],
      });
      assert.equal(single.status, 202);
      if (single.body.duplicate !== undefined) assert.equal(single.body.duplicate, true);
      const stats = await waitForLedger(tidemark, project.id, (s) => s.duplicate === 51);
      assert.equal(stats.stored, data.length);
      assert.equal(stats.accepted, data.length);
      assert.equal(stats.received, data.length + 51);
    });

    await t.test("a project's keys neither write to nor read another project", async () => {
      const other = await tidemark.createProject("ENTERPRISE", `other ${name}`);
      const event = { event: "Elsewhere", distinct_id: "x", uuid: "00000000-0000-4000-8000-00000000abcd" };
      assert.equal(
        (await tidemark.request("POST", "/api/v1/event", { key: other.api_key, body: event })).status,
        202,
      );
      await waitForStored(tidemark, other.id, 1);
      const mine = await query(tidemark, project.read_key, {
        kind: "top_events",
        from: "2000-01-01",
        to: "2100-01-01",
        limit: 100,
      });
      assert.ok(!mine.events.some((e: { event: string }) => e.event === "Elsewhere"));
      const theirs = await query(tidemark, other.read_key, {
        kind: "top_events",
        from: "2000-01-01",
        to: "2100-01-01",
      });
      assert.deepEqual(theirs.events, [{ event: "Elsewhere", count: 1 }]);
      const stats = await tidemark.request("GET", `/api/v1/project/${project.id}/stats`, {
        key: other.read_key,
      });
      assert.equal(stats.status, 403);
    });

    // Every query kind, with the answers computed independently (query-cases.ts, shared with the
    // store-level checks of the ClickHouse backend).
    for (const c of queryCases(data)) {
      await t.test(c.name, async () => {
        const answer = await query(tidemark, project.read_key, c.spec);
        assert.equal(typeof answer.took_ms, "number");
        delete answer.took_ms;
        assert.deepEqual(answer, c.expected);
      });
    }

    await t.test("events: newest first, filters, cursor pagination", () =>
      checkEventsQueries(data, (spec) => query(tidemark, project.read_key, spec)),
    );

    // Identity: a project of its own, whose links and person properties come from stored events
    // like any other (tests/conformance/identity-dataset.ts).
    const people = makeIdentityDataset();
    const identity = await tidemark.createProject("ENTERPRISE", `identity ${name}`);
    await ingest(tidemark, identity.api_key, people);
    await waitForStored(tidemark, identity.id, people.length);
    for (const c of identityCases(people)) {
      await t.test(c.name, async () => {
        const answer = await query(tidemark, identity.read_key, c.spec);
        delete answer.took_ms;
        assert.deepEqual(answer, c.expected);
      });
    }
    await t.test("identity: events filtered by a person property", async () => {
      const { expected, actual } = await identityEvents(people, (spec) =>
        query(tidemark, identity.read_key, spec),
      );
      assert.ok(expected.length > 0);
      assert.deepEqual(actual, expected);
    });
    await t.test("identity: a link stored later changes the next answer", async () => {
      const spec = {
        kind: "funnel",
        steps: ["Page View", "Purchase"],
        window_seconds: 86_400,
        from: "2026-11-02",
        to: "2026-11-03",
      };
      const send = async (events: object[]) => {
        const response = await tidemark.request("POST", "/api/v1/event/batch", {
          key: identity.api_key,
          body: { events },
        });
        assert.equal(response.status, 202, JSON.stringify(response.body));
      };
      await send([
        { event: "Page View", distinct_id: "late_anon", timestamp: "2026-11-02T10:00:00Z" },
        { event: "Purchase", distinct_id: "late_user", timestamp: "2026-11-02T11:00:00Z" },
      ]);
      await waitForStored(tidemark, identity.id, people.length + 2);
      const before = await query(tidemark, identity.read_key, spec);
      assert.deepEqual(
        before.steps.map((s: { count: number }) => s.count),
        [1, 0],
      );
      await send([
        {
          event: "$identify",
          distinct_id: "late_user",
          timestamp: "2026-11-02T12:00:00Z",
          properties: { $anon_distinct_id: "late_anon", $set: { plan: "late" } },
        },
      ]);
      await waitForStored(tidemark, identity.id, people.length + 3);
      const after = await query(tidemark, identity.read_key, spec);
      assert.deepEqual(
        after.steps.map((s: { count: number }) => s.count),
        [1, 1],
      );
      const late = await query(tidemark, identity.read_key, {
        kind: "trends",
        math: "unique_users",
        from: spec.from,
        to: spec.to,
        filters: [{ property: "plan", op: "eq", value: "late", type: "person" }],
      });
      assert.equal(late.series[0].total, 1);

      // Linked through an id that has no events yet; then it sends one: still one person.
      const uniqueUsers = async () =>
        (
          await query(tidemark, identity.read_key, {
            kind: "trends",
            math: "unique_users",
            from: spec.from,
            to: spec.to,
          })
        ).series[0].total;
      await send([
        {
          event: "$create_alias",
          distinct_id: "late_user",
          timestamp: "2026-11-02T12:10:00Z",
          properties: { alias: "late_ghost" },
        },
        {
          event: "$identify",
          distinct_id: "late_phone",
          timestamp: "2026-11-02T12:20:00Z",
          properties: { $anon_distinct_id: "late_ghost" },
        },
      ]);
      await waitForStored(tidemark, identity.id, people.length + 5);
      assert.equal(await uniqueUsers(), 1);
      await send([{ event: "Page View", distinct_id: "late_ghost", timestamp: "2026-11-02T13:00:00Z" }]);
      await waitForStored(tidemark, identity.id, people.length + 6);
      assert.equal(await uniqueUsers(), 1, "the id's first event counts as its person's");
    });
  });
}

async function query(tidemark: TestTidemark, key: string, spec: Record<string, unknown>) {
  const response = await tidemark.request("POST", "/api/v1/query", { key, body: spec });
  assert.equal(response.status, 200, JSON.stringify(response.body));
  return response.body;
}

async function ingest(tidemark: TestTidemark, key: string, data: readonly object[]): Promise<void> {
  for (let i = 0; i < data.length; i += 100) {
    const response = await tidemark.request("POST", "/api/v1/event/batch", {
      key,
      body: { events: data.slice(i, i + 100) },
    });
    assert.equal(response.status, 202, JSON.stringify(response.body));
  }
}

interface LedgerBody {
  received: number;
  accepted: number;
  duplicate: number;
  stored: number;
  /** cdc: what the analytics store (ClickHouse) holds; queries read it. */
  analytics_stored?: number;
}

async function waitForLedger(
  tidemark: TestTidemark,
  projectId: string,
  done: (s: LedgerBody) => boolean,
): Promise<LedgerBody> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const stats = await tidemark.request("GET", `/api/v1/project/${projectId}/stats`, {
      key: tidemark.token,
    });
    if (done(stats.body) || Date.now() > deadline) return stats.body;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * Waits until the store holds `count` events (the async pipeline stores after the 202), and, where
 * queries read a store fed after that (cdc: ClickHouse), until that one holds them too.
 */
export async function waitForStored(tidemark: TestTidemark, projectId: string, count: number): Promise<void> {
  const stats = await waitForLedger(
    tidemark,
    projectId,
    (s) => s.stored >= count && (s.analytics_stored === undefined || s.analytics_stored >= count),
  );
  assert.equal(stats.stored, count, "events stored");
  if (stats.analytics_stored !== undefined)
    assert.equal(stats.analytics_stored, count, "events in the analytics store");
}

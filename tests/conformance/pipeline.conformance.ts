import assert from "node:assert/strict";
import { test } from "node:test";
import { startTestTidemark, type TestTidemark } from "../helpers/tidemark.js";
import {
  DATASET_START,
  type DataEvent,
  type Filter,
  makeDataset,
  refEvents,
  refFunnel,
  refRetention,
  refTopEvents,
  refTopValues,
  refTrends,
} from "./dataset.js";

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

    const from = DATASET_START;
    const to = DATASET_START + 28 * 86_400_000;
    const range = { from: new Date(from).toISOString(), to: new Date(to).toISOString() };
    const check = async (spec: Record<string, unknown>, expected: unknown) => {
      const answer = await query(tidemark, project.read_key, spec);
      assert.equal(typeof answer.took_ms, "number");
      delete answer.took_ms;
      assert.deepEqual(answer, expected);
    };

    await t.test("trends: totals and unique users per hour, day and week", async () => {
      for (const interval of ["day", "week"] as const) {
        for (const math of ["total", "unique_users"] as const) {
          await check(
            { kind: "trends", math, interval, ...range },
            refTrends(data, { math, interval, from, to, limit: 10 }),
          );
          await check(
            { kind: "trends", event: "Purchase", math, interval, ...range },
            refTrends(data, { event: "Purchase", math, interval, from, to, limit: 10 }),
          );
        }
      }
      const day = { from: DATASET_START + 86_400_000, to: DATASET_START + 3 * 86_400_000 };
      await check(
        {
          kind: "trends",
          interval: "hour",
          from: new Date(day.from).toISOString(),
          to: new Date(day.to).toISOString(),
        },
        refTrends(data, { math: "total", interval: "hour", ...day, limit: 10 }),
      );
    });

    await t.test("trends: every filter op and breakdowns with top-N", async () => {
      const filterSets: Filter[][] = [
        [{ property: "plan", op: "eq", value: "pro" }],
        [{ property: "plan", op: "neq", value: "pro" }],
        [{ property: "path", op: "contains", value: "/b" }],
        [{ property: "price", op: "gt", value: 50 }],
        [{ property: "price", op: "lt", value: 50 }],
        [{ property: "beta", op: "is_set" }],
        [{ property: "beta", op: "eq", value: true }],
        [{ property: "odd/name ~ $.x", op: "eq", value: "weird" }],
        [
          { property: "plan", op: "eq", value: "team" },
          { property: "path", op: "neq", value: "/" },
        ],
      ];
      for (const filters of filterSets) {
        await check(
          { kind: "trends", interval: "week", filters, ...range },
          refTrends(data, { math: "total", interval: "week", from, to, filters, limit: 10 }),
        );
      }
      for (const [breakdown, limit] of [
        ["plan", 10],
        ["path", 3],
        ["beta", 10],
        ["price", 5],
      ] as const) {
        await check(
          { kind: "trends", interval: "week", breakdown, limit, ...range },
          refTrends(data, { math: "total", interval: "week", from, to, breakdown, limit }),
        );
        await check(
          { kind: "trends", math: "unique_users", interval: "day", breakdown, limit, ...range },
          refTrends(data, { math: "unique_users", interval: "day", from, to, breakdown, limit }),
        );
      }
    });

    await t.test("funnel: ordered steps within the window", async () => {
      const cases = [
        { steps: ["Page View", "Click", "Sign Up"], window_seconds: 3600 },
        { steps: ["Page View", "Click", "Sign Up", "Add To Cart", "Purchase"], window_seconds: 86_400 },
        { steps: ["Page View", "Page View", "Purchase"], window_seconds: 7 * 86_400 },
        { steps: ["Sign Up", "Purchase"], window_seconds: 600 },
      ];
      for (const c of cases) {
        await check({ kind: "funnel", ...c, ...range }, refFunnel(data, { ...c, from, to }));
      }
      const filters: Filter[] = [{ property: "plan", op: "eq", value: "free" }];
      await check(
        { kind: "funnel", steps: ["Page View", "Click"], window_seconds: 86_400, filters, ...range },
        refFunnel(data, { steps: ["Page View", "Click"], window_seconds: 86_400, from, to, filters }),
      );
    });

    await t.test("retention: day and week cohorts", async () => {
      await check(
        {
          kind: "retention",
          start_event: "Page View",
          return_event: "Click",
          interval: "day",
          periods: 7,
          ...range,
        },
        refRetention(data, {
          start_event: "Page View",
          return_event: "Click",
          interval: "day",
          periods: 7,
          from,
          to,
        }),
      );
      await check(
        {
          kind: "retention",
          start_event: "Sign Up",
          return_event: "Purchase",
          interval: "week",
          periods: 4,
          ...range,
        },
        refRetention(data, {
          start_event: "Sign Up",
          return_event: "Purchase",
          interval: "week",
          periods: 4,
          from,
          to,
        }),
      );
    });

    await t.test("top events and top property values", async () => {
      await check({ kind: "top_events", ...range, limit: 3 }, refTopEvents(data, { from, to, limit: 3 }));
      await check(
        { kind: "top_values", property: "path", ...range },
        refTopValues(data, { property: "path", from, to, limit: 10 }),
      );
      await check(
        { kind: "top_values", property: "price", event: "Purchase", ...range, limit: 5 },
        refTopValues(data, { property: "price", event: "Purchase", from, to, limit: 5 }),
      );
    });

    await t.test("events: newest first, filters, cursor pagination", async () => {
      const expected = refEvents(data, { distinct_id: "user_3" });
      const seen: string[] = [];
      let cursor: string | undefined;
      for (let page = 0; page < 50; page++) {
        const answer = await query(tidemark, project.read_key, {
          kind: "events",
          distinct_id: "user_3",
          limit: 7,
          ...(cursor ? { cursor } : {}),
        });
        seen.push(...answer.events.map((e: { uuid: string }) => e.uuid));
        cursor = answer.next_cursor ?? undefined;
        if (!cursor) break;
      }
      assert.deepEqual(
        seen,
        expected.map((e) => e.uuid),
      );
      const filtered = await query(tidemark, project.read_key, {
        kind: "events",
        event: "Purchase",
        filters: [{ property: "price", op: "gt", value: 100 }],
        limit: 1000,
      });
      const expectedFiltered = refEvents(data, {
        event: "Purchase",
        filters: [{ property: "price", op: "gt", value: 100 }],
      });
      assert.deepEqual(
        filtered.events.map((e: { uuid: string }) => e.uuid),
        expectedFiltered.map((e) => e.uuid),
      );
      const first = filtered.events[0];
      const source = expectedFiltered[0]!;
      assert.deepEqual(first.properties, source.properties);
      assert.equal(first.timestamp, new Date(source.timestamp).toISOString());
      assert.equal(first.distinct_id, source.distinct_id);
    });
  });
}

async function query(tidemark: TestTidemark, key: string, spec: Record<string, unknown>) {
  const response = await tidemark.request("POST", "/api/v1/query", { key, body: spec });
  assert.equal(response.status, 200, JSON.stringify(response.body));
  return response.body;
}

async function ingest(tidemark: TestTidemark, key: string, data: readonly DataEvent[]): Promise<void> {
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

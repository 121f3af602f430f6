import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, test } from "node:test";
import pg from "pg";
import { waitForStored } from "../conformance/pipeline.conformance.js";
import { storedUuids } from "../helpers/child-server.js";
import { PIPELINES_UNDER_TEST, pipelineEnv } from "../helpers/pipelines.js";
import { startTestTidemark } from "../helpers/tidemark.js";

/**
 * The extreme event times validation lets through, with and without clock-skew correction in
 * both directions, go through each pipeline's real store: every 202 must be followed by the event
 * being stored and answered by queries, never by a refusal from the store (Postgres's range and
 * partitions, DuckDB's, the async worker's dead-letter queue).
 */
const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const cleanup of cleanups) await cleanup();
});

const EARLIEST = Date.UTC(2000, 0, 1);
const LATEST_INPUT = Date.UTC(9999, 11, 31, 23, 59, 59, 999);
const MINUTE = 60_000;
// The largest tolerance the configuration allows, so the latest time kept is ten years ahead:
// far past the monthly partitions Postgres creates ahead of time.
const TOLERANCE = 10 * 365 * 86_400_000;

interface Case {
  name: string;
  body: Record<string, unknown>;
  /** The stored time: exact, or within [min, max] when it depends on the receipt time. */
  expect: (receivedFrom: number, receivedTo: number) => [number, number];
}

function cases(now: number): Case[] {
  const exactly = (ms: number) => () => [ms, ms] as [number, number];
  const receipt = (from: number, to: number) => [from, to] as [number, number];
  return [
    {
      name: "earliest, ISO",
      body: { timestamp: "2000-01-01T00:00:00.000Z" },
      expect: exactly(EARLIEST),
    },
    {
      name: "earliest, ISO with an offset of +14:00",
      body: { timestamp: "2000-01-01T14:00:00+14:00" },
      expect: exactly(EARLIEST),
    },
    { name: "earliest, epoch ms", body: { timestamp: EARLIEST }, expect: exactly(EARLIEST) },
    {
      name: "latest kept as sent",
      body: { timestamp: now + TOLERANCE - MINUTE },
      expect: exactly(now + TOLERANCE - MINUTE),
    },
    { name: "latest input, clamped", body: { timestamp: LATEST_INPUT }, expect: receipt },
    {
      name: "device clock far ahead: corrected to near the earliest",
      body: { timestamp: LATEST_INPUT - (now - EARLIEST) + MINUTE, sent_at: LATEST_INPUT },
      expect: (from, to) => [EARLIEST + MINUTE + (from - now), EARLIEST + MINUTE + (to - now)],
    },
    {
      name: "device clock far behind: corrected to near the latest",
      body: { timestamp: EARLIEST + TOLERANCE - MINUTE, sent_at: EARLIEST },
      expect: (from, to) => [from + TOLERANCE - MINUTE, to + TOLERANCE - MINUTE],
    },
    {
      name: "device clock far behind: corrected past the latest, clamped",
      body: { timestamp: LATEST_INPUT, sent_at: EARLIEST },
      expect: receipt,
    },
    {
      name: "device clock ahead by a minute",
      body: { timestamp: EARLIEST + MINUTE, sent_at: now + MINUTE },
      expect: (from, to) => [EARLIEST + (from - now), EARLIEST + (to - now)],
    },
  ];
}

for (const pipeline of PIPELINES_UNDER_TEST) {
  test(`${pipeline}: every extreme time validation accepts is stored and queryable`, {
    timeout: 120_000,
  }, async (t) => {
    const env = await pipelineEnv(pipeline, `times-${pipeline}`, cleanups);
    if (typeof env === "string") {
      t.skip(env);
      return;
    }
    const tidemark = await startTestTidemark({ ...env, TIDEMARK_FUTURE_TOLERANCE_MS: String(TOLERANCE) });
    t.after(() => tidemark.close());
    const project = await tidemark.createProject("ENTERPRISE", `extreme times ${pipeline}`);

    const now = Date.now();
    const list = cases(now);
    const expected = new Map<string, { name: string; range: [number, number] }>();
    for (const c of list) {
      const uuid = randomUUID();
      const before = Date.now();
      const response = await tidemark.request("POST", "/api/v1/event", {
        key: project.api_key,
        body: { event: "Extreme", distinct_id: "u", uuid, ...c.body },
      });
      const afterward = Date.now();
      assert.equal(response.status, 202, `${c.name}: ${JSON.stringify(response.body)}`);
      expected.set(uuid, { name: c.name, range: c.expect(before, afterward) });
    }
    // The same through batches, with the skew given once for the batch.
    const batchUuids = [randomUUID(), randomUUID()];
    const before = Date.now();
    const batch = await tidemark.request("POST", "/api/v1/event/batch", {
      key: project.api_key,
      body: {
        sent_at: LATEST_INPUT,
        events: [
          {
            event: "Extreme",
            distinct_id: "u",
            uuid: batchUuids[0],
            timestamp: LATEST_INPUT - (now - EARLIEST) + MINUTE,
          },
          { event: "Extreme", distinct_id: "u", uuid: batchUuids[1] },
        ],
      },
    });
    const afterward = Date.now();
    assert.equal(batch.status, 202, JSON.stringify(batch.body));
    expected.set(batchUuids[0]!, {
      name: "batch sent_at far ahead",
      range: [EARLIEST + MINUTE + (before - now), EARLIEST + MINUTE + (afterward - now)],
    });
    expected.set(batchUuids[1]!, { name: "batch, no timestamp", range: [before, afterward] });

    // Times the correction moves before 2000 are refused before any 202, in every pipeline.
    const refused = await tidemark.request("POST", "/api/v1/event", {
      key: project.api_key,
      body: {
        event: "Extreme",
        distinct_id: "u",
        timestamp: "2001-01-01T00:00:00Z",
        sent_at: "9999-01-01T00:00:00Z",
      },
    });
    assert.equal(refused.status, 400);
    assert.equal(refused.body.error.details[0].field, "timestamp");

    await waitForStored(tidemark, project.id, expected.size);
    const stats = await tidemark.request("GET", `/api/v1/project/${project.id}/stats`, {
      key: tidemark.token,
    });
    assert.equal(stats.body.accepted, expected.size);
    assert.deepEqual(stats.body.rejected, { validation_failed: 1 }, "nothing dead-lettered");

    // Every uuid is answered by the events query (cursor pages included), at the expected time.
    assert.deepEqual(new Set(await storedUuids(tidemark.url, project.read_key)), new Set(expected.keys()));
    const page = await tidemark.request("POST", "/api/v1/query", {
      key: project.read_key,
      body: { kind: "events", limit: 1000 },
    });
    for (const row of page.body.events as { uuid: string; timestamp: string }[]) {
      const { name, range } = expected.get(row.uuid)!;
      const stored = Date.parse(row.timestamp);
      assert.ok(
        stored >= range[0] && stored <= range[1],
        `${name}: stored ${row.timestamp}, expected ${new Date(range[0]).toISOString()}..${new Date(range[1]).toISOString()}`,
      );
    }
    // Aggregations over the whole range count them all.
    const top = await tidemark.request("POST", "/api/v1/query", {
      key: project.read_key,
      body: {
        kind: "top_events",
        from: "2000-01-01T00:00:00Z",
        to: new Date(now + TOLERANCE + 86_400_000).toISOString(),
      },
    });
    assert.deepEqual(top.body.events, [{ event: "Extreme", count: expected.size }]);

    if (pipeline !== "embedded") {
      // Postgres: the monthly partitions and the default one took every row.
      const client = new pg.Client({ connectionString: (env as Record<string, string>).DATABASE_URL });
      await client.connect();
      try {
        const { rows } = await client.query<{ part: string; n: string }>(
          "SELECT tableoid::regclass::text AS part, count(*) AS n FROM events WHERE project_id = $1 GROUP BY 1",
          [project.id],
        );
        const byPartition = Object.fromEntries(rows.map((r) => [r.part, Number(r.n)]));
        const total = Object.values(byPartition).reduce((a, b) => a + b, 0);
        assert.equal(total, expected.size, JSON.stringify(byPartition));
        assert.ok((byPartition.events_default ?? 0) >= 5, `2000 and 10 years ahead: ${JSON.stringify(rows)}`);
        const month = new Date(now).toISOString().slice(0, 7).replace("-", "_");
        assert.ok((byPartition[`events_${month}`] ?? 0) >= 1, `this month: ${JSON.stringify(rows)}`);
      } finally {
        await client.end();
      }
    }
  });
}

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, test } from "node:test";
import pg from "pg";
import { PostgresDatabase } from "../../src/backends/postgres/postgres.database.js";
import { postgresDialect } from "../../src/backends/postgres/postgres.dialect.js";
import { FOLD_LOCK_ID } from "../../src/backends/postgres/postgres.event-counts.js";
import { PostgresEventStore } from "../../src/backends/postgres/postgres.event-store.js";
import { MIGRATIONS } from "../../src/backends/postgres/postgres.migrations.js";
import type { StoredEvent } from "../../src/core/event.js";
import { parseQuerySpec } from "../../src/query/spec.js";
import { SqlQueryRunner } from "../../src/query/sql-runner.js";
import { createTestDatabase, requirePostgres } from "../helpers/services.js";

// The hourly event counts of the Postgres store (postgres.migrations.ts, version 2): counted on
// migration, kept by a trigger, folded by the store; every count checked against the events.

const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;
const START = Date.UTC(2026, 9, 1);
const NAMES = ["Page View", "Click", "Purchase"];

function events(projectId: string, count: number, seed: number, spreadMs = 3 * DAY_MS): StoredEvent[] {
  return Array.from({ length: count }, (_, i) => ({
    projectId,
    uuid: randomUUID(),
    event: NAMES[(i + seed) % NAMES.length]!,
    distinctId: `user_${(i * 7 + seed) % 13}`,
    timestamp: START + ((i * 7_919_993 + seed * 104_729) % spreadMs),
    properties: JSON.stringify({ plan: i % 2 === 0 ? "pro" : "free" }),
    receivedAt: START + spreadMs,
  }));
}

async function database(t: import("node:test").TestContext, label: string) {
  const postgres = await requirePostgres(t);
  if (!postgres.ok) return undefined;
  const db = await createTestDatabase(postgres.url, label);
  cleanups.push(db.drop);
  return db.url;
}

async function openStore(url: string, folds = { everyCommits: 1_000_000, maxKeys: 1_000_000 }) {
  const db = new PostgresDatabase({ url, maxConnections: 4 });
  const store = new PostgresEventStore(db, { folds });
  await store.start();
  return { db, store };
}

/** Per (project, event, hour): the count from the events, and the sum and rows of the counts. */
async function compare(db: PostgresDatabase) {
  const fromEvents = await db.query<{ k: string; n: string }>(
    `SELECT project_id || '/' || event || '/' || (extract(epoch from date_trunc('hour', timestamp, 'UTC')) * 1000)::bigint AS k,
       count(*) AS n FROM events GROUP BY 1 ORDER BY 1`,
  );
  const fromCounts = await db.query<{ k: string; n: string; rows: string }>(
    `SELECT project_id || '/' || event || '/' || (extract(epoch from hour) * 1000)::bigint AS k,
       sum(n) AS n, count(*) AS rows FROM event_counts GROUP BY 1 ORDER BY 1`,
  );
  return {
    expected: fromEvents.rows.map((row) => [row.k, Number(row.n)]),
    counted: fromCounts.rows.map((row) => [row.k, Number(row.n)]),
    rows: fromCounts.rows.reduce((sum, row) => sum + Number(row.rows), 0),
    keys: fromCounts.rows.length,
  };
}

const SPECS = [
  {
    kind: "trends",
    event: "Page View",
    math: "total",
    interval: "day",
    from: "2026-10-01",
    to: "2026-10-05",
  },
  {
    kind: "trends",
    math: "total",
    interval: "hour",
    from: "2026-10-01T00:00:00Z",
    to: "2026-10-01T12:00:00Z",
  },
  {
    kind: "trends",
    event: "Purchase",
    math: "total",
    interval: "week",
    from: "2026-09-28",
    to: "2026-10-12",
  },
  { kind: "top_events", from: "2026-10-01", to: "2026-10-04", limit: 5 },
];

/** Each spec's answer from the store (reading the counts) and from the events alone. */
async function answers(db: PostgresDatabase, store: PostgresEventStore, projectId: string) {
  const fromEvents = new SqlQueryRunner(postgresDialect, async ({ sql, params }) => {
    const result = await db.query(sql, params);
    return result.rows;
  });
  const out = [];
  for (const raw of SPECS) {
    const spec = parseQuerySpec(raw);
    out.push({
      spec: raw,
      store: await store.query(projectId, spec),
      events: await fromEvents.query(projectId, spec),
    });
  }
  return out;
}

test("a database of schema 1 has its events counted when it migrates, and answers as from its events", async (t) => {
  const url = await database(t, "counts_migrate");
  if (!url) return;
  // Schema 1 as the previous version left it, with events stored the way it stored them.
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const projectId = randomUUID();
  const stored = events(projectId, 600, 1);
  try {
    await client.query(
      "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
    );
    await client.query(MIGRATIONS[0]!.sql);
    await client.query("INSERT INTO schema_migrations (version, name) VALUES (1, $1)", [MIGRATIONS[0]!.name]);
    await client.query(
      `INSERT INTO events (project_id, uuid, event, distinct_id, timestamp, properties, received_at)
       SELECT p, u, e, d, to_timestamp(ts / 1000.0), props::json, to_timestamp(r / 1000.0)
       FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::bigint[])
         AS t(p, u, e, d, ts, props, r)`,
      [
        stored.map((e) => e.projectId),
        stored.map((e) => e.uuid),
        stored.map((e) => e.event),
        stored.map((e) => e.distinctId),
        stored.map((e) => e.timestamp),
        stored.map((e) => e.properties),
        stored.map((e) => e.receivedAt),
      ],
    );
    await client.query("INSERT INTO event_keys SELECT project_id, uuid FROM events");
  } finally {
    await client.end();
  }

  const { db, store } = await openStore(url);
  t.after(() => store.close());
  const versions = await db.query<{ version: number }>("SELECT version FROM schema_migrations ORDER BY 1");
  assert.deepEqual(
    versions.rows.map((row) => row.version),
    MIGRATIONS.map((m) => m.version),
  );
  const counts = await compare(db);
  assert.equal(counts.expected.length > 50, true, "the events span many hours");
  assert.deepEqual(counts.counted, counts.expected);
  assert.equal(counts.rows, counts.keys, "one row per (project, event, hour) after the migration");

  // New events after the migration are counted by the trigger, once each however often sent.
  const more = events(projectId, 200, 2);
  await store.insert(more);
  const again = await store.insert(more.slice(0, 50));
  assert.equal(again.duplicates.length, 50);
  assert.deepEqual((await compare(db)).counted, (await compare(db)).expected);
  for (const answer of await answers(db, store, projectId))
    assert.deepEqual(answer.store, answer.events, JSON.stringify(answer.spec));

  // And these answers come from the counts: counts changed by hand change them.
  await db.query("UPDATE event_counts SET n = n + 1000");
  for (const answer of await answers(db, store, projectId))
    assert.notDeepEqual(answer.store, answer.events, JSON.stringify(answer.spec));
});

test("commits append hourly counts, and a fold leaves one row per event and hour with the same sums", async (t) => {
  const url = await database(t, "counts_fold");
  if (!url) return;
  const { db, store } = await openStore(url);
  t.after(() => store.close());
  const projects = [randomUUID(), randomUUID()];
  for (let commit = 0; commit < 12; commit++)
    await store.insert(projects.flatMap((projectId) => events(projectId, 60, commit, DAY_MS)));
  const before = await compare(db);
  assert.deepEqual(before.counted, before.expected);
  assert.equal(before.rows > before.keys * 3, true, `rows ${before.rows}, keys ${before.keys}`);
  const answersBefore = await answers(db, store, projects[0]!);

  // While another process folds (holds the lock), this one keeps its hours for its next fold.
  await db.withClient(async (other) => {
    await other.query("SELECT pg_advisory_lock($1)", [FOLD_LOCK_ID]);
    try {
      assert.equal(await store.foldCounts(), false);
    } finally {
      await other.query("SELECT pg_advisory_unlock($1)", [FOLD_LOCK_ID]);
    }
  });
  assert.equal((await compare(db)).rows, before.rows);
  assert.equal(await store.foldCounts(), true);
  const after = await compare(db);
  assert.deepEqual(after.counted, after.expected);
  assert.equal(after.rows, after.keys);
  assert.deepEqual(await answers(db, store, projects[0]!), answersBefore);
  for (const answer of answersBefore)
    assert.deepEqual(answer.store, answer.events, JSON.stringify(answer.spec));

  // Deleting a project deletes its counts, and only its own.
  await store.deleteProject(projects[0]!);
  const left = await db.query<{ p: string }>("SELECT DISTINCT project_id::text AS p FROM event_counts");
  assert.deepEqual(
    left.rows.map((row) => row.p),
    [projects[1]],
  );
  assert.deepEqual((await compare(db)).counted, (await compare(db)).expected);
});

test("two processes committing and folding at once keep every hourly count exact", async (t) => {
  const url = await database(t, "counts_concurrent");
  if (!url) return;
  // Folds every 3 commits in each, so they run during the other's commits and contend for the lock.
  const a = await openStore(url, { everyCommits: 3, maxKeys: 1_000_000 });
  const b = await openStore(url, { everyCommits: 3, maxKeys: 1_000_000 });
  t.after(async () => {
    await a.store.close();
    await b.store.close();
  });
  const shared = randomUUID();
  const writes = async (store: PostgresEventStore, seed: number) => {
    for (let commit = 0; commit < 30; commit++) {
      const batch = events(shared, 40, seed * 100 + commit, 6 * HOUR_MS);
      await store.insert(batch);
      // Half resent: duplicates are never counted.
      if (commit % 2 === 0) await store.insert(batch.slice(0, 20));
    }
  };
  await Promise.all([writes(a.store, 1), writes(b.store, 2)]);
  for (const store of [a.store, b.store]) {
    await store.foldCounts();
    await store.foldCounts();
  }
  const counts = await compare(a.db);
  assert.deepEqual(counts.counted, counts.expected);
  assert.equal(counts.rows, counts.keys);
  const total = await a.db.query<{ n: string }>("SELECT count(*) AS n FROM events");
  assert.equal(Number(total.rows[0]!.n), 2 * 30 * 40);
});

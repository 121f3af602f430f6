/**
 * What identity costs, on each analytics store (embedded DuckDB, Postgres, ClickHouse), in one
 * process with no HTTP in front: the bench dataset's shape (100K users, 90 days, 10 event names)
 * where a fraction of the users (`--identified`, 20 %) browse anonymously as `anon_N`, then
 * identify as `user_N` with an `$identify` event that links the two and sets person properties.
 *
 * Printed per store: how long resolution takes cold (the link and property reads, components,
 * keys) and warm (the markers alone); then the queries that count users, each with
 * `identity: "distinct_id"` (no people joined) and `"person"` (the default), and those that read
 * person properties. Method and results: bench/README.md, benchmarks/README.md.
 *
 *   node --import tsx bench/identity.ts [--events 1000000] [--identified 0.2] [--query-runs 10]
 *     [--stores duckdb,postgres,clickhouse] [--database-url URL] [--clickhouse-url URL]
 */
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import pg from "pg";
import { ClickHouseAnalyticsStore } from "../src/backends/clickhouse/clickhouse.analytics-store.js";
import { ClickHouseDatabase } from "../src/backends/clickhouse/clickhouse.database.js";
import { toClickHouseRow } from "../src/backends/clickhouse/clickhouse.rows.js";
import { DuckDbDatabase } from "../src/backends/embedded/duckdb.database.js";
import { DuckDbEventStore } from "../src/backends/embedded/duckdb.event-store.js";
import { PostgresDatabase } from "../src/backends/postgres/postgres.database.js";
import { PostgresEventStore } from "../src/backends/postgres/postgres.event-store.js";
import type { StoredEvent } from "../src/core/event.js";
import type { AnalyticsStore, EventStore } from "../src/pipeline/event-store.js";
import { parseQuerySpec } from "../src/query/spec.js";
import { percentile } from "./load.js";

const { values: args } = parseArgs({
  options: {
    events: { type: "string", default: "1000000" },
    identified: { type: "string", default: "0.2" },
    "set-once": { type: "string", default: "0" },
    "query-runs": { type: "string", default: "10" },
    stores: { type: "string", default: "duckdb,postgres,clickhouse" },
    "database-url": {
      type: "string",
      default: process.env.DATABASE_URL || "postgres://postgres@127.0.0.1:55432/tidemark_test",
    },
    "clickhouse-url": { type: "string", default: process.env.CLICKHOUSE_URL || "http://127.0.0.1:58123" },
  },
});
const EVENTS = Number(args.events);
const IDENTIFIED = Number(args.identified);
/** The share of events carrying `$set_once`, as posthog-js sends on the first event of each page. */
const SET_ONCE = Number(args["set-once"]);
const RUNS = Number(args["query-runs"]);
const STORES = new Set(args.stores.split(","));
const USERS = 100_000;
const START = Date.UTC(2026, 7, 1);
const SPAN = 90 * 86_400_000;
const NAMES = ["Page View", "Page View", "Page View", "Click", "Click", "Sign Up", "Add To Cart", "Purchase"];
const PLANS = ["free", "pro", "team"];

function mulberry32(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * The events in time order. An identified user switches from `anon_N` to `user_N` at a time of
 * its own: events before are the anonymous id's, one `$identify` at the switch links them and
 * sets `plan` and `ltv`, events after are the identified id's.
 */
function dataset(projectId: string): { events: StoredEvent[]; links: number } {
  const random = mulberry32(11);
  const switchAt = new Map<number, number>();
  for (let n = 0; n < USERS; n++)
    if (random() < IDENTIFIED) switchAt.set(n, START + Math.floor(random() * SPAN));
  const events: StoredEvent[] = [];
  const event = (name: string, distinctId: string, t: number, properties: object): StoredEvent => ({
    projectId,
    uuid: randomUUID(),
    event: name,
    distinctId,
    timestamp: t,
    properties: JSON.stringify(properties),
    receivedAt: t,
  });
  const identified = new Set<number>();
  for (let i = 0; events.length < EVENTS; i++) {
    const t = START + Math.floor(((i + random()) / EVENTS) * SPAN);
    const n = Math.floor(random() ** 1.5 * USERS);
    const at = switchAt.get(n);
    let id = `user_${n}`;
    if (at !== undefined) {
      if (t < at) id = `anon_${n}`;
      else if (!identified.has(n)) {
        identified.add(n);
        events.push(
          event("$identify", `user_${n}`, at, {
            $anon_distinct_id: `anon_${n}`,
            $set: { plan: PLANS[n % 3], ltv: n % 1000 },
          }),
        );
      }
    }
    const properties: Record<string, unknown> = {
      path: random() < 0.5 ? "/" : "/pricing",
      price: Math.round(random() * 20_000) / 100,
    };
    if (random() < SET_ONCE) properties.$set_once = { initial_path: properties.path };
    events.push(event(NAMES[Math.floor(random() * NAMES.length)]!, id, t, properties));
  }
  return { events, links: identified.size };
}

const QUERIES: [string, Record<string, unknown>][] = [
  [
    "trends unique users/day 30d",
    { kind: "trends", math: "unique_users", interval: "day", from: "2026-09-01", to: "2026-10-01" },
  ],
  [
    "funnel 3 steps 1d window 30d",
    {
      kind: "funnel",
      steps: ["Page View", "Add To Cart", "Purchase"],
      window_seconds: 86400,
      from: "2026-09-01",
      to: "2026-10-01",
    },
  ],
  [
    "retention week x8 90d",
    {
      kind: "retention",
      start_event: "Sign Up",
      return_event: "Purchase",
      interval: "week",
      periods: 8,
      from: "2026-08-01",
      to: "2026-11-01",
    },
  ],
];
const PERSON_QUERIES: [string, Record<string, unknown>][] = [
  [
    "trends total/day 30d, person filter plan = pro",
    {
      kind: "trends",
      interval: "day",
      from: "2026-09-01",
      to: "2026-10-01",
      filters: [{ property: "plan", op: "eq", value: "pro", type: "person" }],
    },
  ],
  [
    "trends unique users/day 30d, person breakdown plan",
    {
      kind: "trends",
      math: "unique_users",
      interval: "day",
      from: "2026-09-01",
      to: "2026-10-01",
      breakdown: "plan",
      breakdown_type: "person",
    },
  ],
];

const f = (x: number) => x.toFixed(1);

async function timed(work: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await work();
  return performance.now() - started;
}

async function p50(runs: number, work: () => Promise<unknown>): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < runs + 2; i++) {
    const ms = await timed(work);
    if (i >= 2) times.push(ms);
  }
  return percentile(
    times.sort((a, b) => a - b),
    50,
  );
}

interface BenchStore {
  name: string;
  /** A store over the loaded data with nothing cached (for the cold resolution). */
  fresh(): Promise<AnalyticsStore & { close(): Promise<void> }>;
  /** Stores more events (as the pipeline would; in the same process for the embedded store). */
  write(events: StoredEvent[]): Promise<void>;
  close(): Promise<void>;
}

/** Ten events that each `$set` a person property, received now. */
function newSets(projectId: string): StoredEvent[] {
  const now = Date.now();
  return Array.from({ length: 10 }, (_, i) => ({
    projectId,
    uuid: randomUUID(),
    event: "$set",
    distinctId: `user_${i}`,
    timestamp: START + SPAN - 1000 + i,
    properties: JSON.stringify({ $set: { plan: "enterprise" } }),
    receivedAt: now,
  }));
}

async function measure(store: BenchStore, projectId: string): Promise<void> {
  console.log(`\n#### ${store.name}\n`);
  const unique = parseQuerySpec(QUERIES[0]![1]);
  const cold = await store.fresh();
  const first = await timed(() => cold.query(projectId, unique));
  const second = await timed(() => cold.query(projectId, unique));
  const byId = await timed(() => cold.query(projectId, { ...unique, identity: "distinct_id" } as never));
  const filter = parseQuerySpec(PERSON_QUERIES[0]![1]);
  const firstProps = await timed(() => cold.query(projectId, filter));
  const secondProps = await timed(() => cold.query(projectId, filter));
  // Through the store queried where it writes too (the embedded store's markers are its own).
  const writer = cold as Partial<EventStore>;
  if (writer.insert) await writer.insert(newSets(projectId));
  else await store.write(newSets(projectId));
  const afterNew = await timed(() => cold.query(projectId, filter));
  await cold.close();
  console.log(
    `unique users/day 30d: first query ${f(first)} ms (links read and resolved), second ${f(second)} ms, by distinct id ${f(byId)} ms`,
  );
  console.log(
    `person filter: first query ${f(firstProps)} ms (person properties read), second ${f(secondProps)} ms, after 10 new $set events ${f(afterNew)} ms`,
  );
  const warm = await store.fresh();
  console.log(
    `\n| query (${EVENTS.toLocaleString("en")} events) | by distinct id P50 ms | by person P50 ms |`,
  );
  console.log("| --- | ---: | ---: |");
  for (const [name, body] of QUERIES) {
    const byPerson = parseQuerySpec(body);
    const byDistinct = parseQuerySpec({ ...body, identity: "distinct_id" });
    const a = await p50(RUNS, () => warm.query(projectId, byDistinct));
    const b = await p50(RUNS, () => warm.query(projectId, byPerson));
    console.log(`| ${name} | ${f(a)} | ${f(b)} |`);
  }
  for (const [name, body] of PERSON_QUERIES) {
    const spec = parseQuerySpec(body);
    console.log(`| ${name} | — | ${f(await p50(RUNS, () => warm.query(projectId, spec)))} |`);
  }
  await warm.close();
  await store.close();
}

async function main(): Promise<void> {
  const projectId = randomUUID();
  const started = performance.now();
  const { events, links } = dataset(projectId);
  console.log(
    `Tidemark identity bench: ${events.length.toLocaleString("en")} events, ${links.toLocaleString("en")} anonymous ids linked to identified ones (${f((performance.now() - started) / 1000)} s to generate)`,
  );
  const batches = (size: number) => {
    const out: StoredEvent[][] = [];
    for (let i = 0; i < events.length; i += size) out.push(events.slice(i, i + size));
    return out;
  };

  if (STORES.has("duckdb")) {
    const dir = mkdtempSync(join(tmpdir(), "tidemark-bench-identity-"));
    const load = new DuckDbEventStore(new DuckDbDatabase(dir));
    await load.start();
    const loadMs = await timed(async () => {
      for (const batch of batches(10_000)) await load.insert(batch);
    });
    await load.close();
    console.log(`DuckDB loaded in ${f(loadMs / 1000)} s`);
    await measure(
      {
        name: "DuckDB (embedded)",
        fresh: async () => {
          const store = new DuckDbEventStore(new DuckDbDatabase(dir));
          await store.start();
          return store;
        },
        write: async () => {
          throw new Error("the embedded store is written through the store queried");
        },
        close: async () => rmSync(dir, { recursive: true, force: true }),
      },
      projectId,
    );
  }

  if (STORES.has("postgres")) {
    const base = new URL(args["database-url"]);
    const database = `tidemark_identity_bench_${process.pid}`;
    const admin = new pg.Client({ connectionString: base.toString() });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${database}`);
    const url = new URL(base);
    url.pathname = `/${database}`;
    const db = new PostgresDatabase({ url: url.toString() });
    const load = new PostgresEventStore(db);
    await load.start();
    const loadMs = await timed(async () => {
      for (const batch of batches(5_000)) await load.insert(batch);
    });
    await db.query("VACUUM ANALYZE events");
    await load.close();
    console.log(`\nPostgres loaded in ${f(loadMs / 1000)} s`);
    await measure(
      {
        name: "Postgres (sync, async)",
        fresh: async () => {
          const store = new PostgresEventStore(new PostgresDatabase({ url: url.toString() }));
          await store.start();
          return store;
        },
        write: async () => {
          throw new Error("Postgres is written through the store queried");
        },
        close: async () => {
          await admin.query(`DROP DATABASE ${database}`);
          await admin.end();
        },
      },
      projectId,
    );
  }

  if (STORES.has("clickhouse")) {
    const database = `tidemark_identity_bench_${process.pid}`;
    const options = { url: args["clickhouse-url"], database, requestTimeoutMs: 300_000 };
    const db = new ClickHouseDatabase(options);
    await db.open();
    const loadMs = await timed(async () => {
      for (const batch of batches(100_000)) await db.insert(db.eventsTable, batch.map(toClickHouseRow));
    });
    await db.command(`OPTIMIZE TABLE ${db.eventsTable} FINAL`);
    console.log(`\nClickHouse loaded in ${f(loadMs / 1000)} s`);
    await measure(
      {
        name: "ClickHouse 18.16 (cdc)",
        fresh: async () => {
          const store = new ClickHouseAnalyticsStore(new ClickHouseDatabase(options));
          await store.start();
          return store;
        },
        write: (rows) => db.insert(db.eventsTable, rows.map(toClickHouseRow)),
        close: async () => {
          await db.command(`DROP DATABASE IF EXISTS ${database}`);
          await db.close();
        },
      },
      projectId,
    );
  }
}

await main();

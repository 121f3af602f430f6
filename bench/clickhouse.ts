/**
 * The cdc pipeline's analytics store on its own: loads the bench dataset into ClickHouse through
 * the sink (the EventSink the sink role uses, with its insert-time duplicate lookup), in arrival
 * order, and times every query kind there and, on the same events, in the embedded DuckDB store.
 * At the checkpoint and at the end it also measures the read-time dedup options (FINAL, LIMIT 1
 * BY uuid) against plain reads, and what the sink's duplicate lookup costs.
 * Method and results: bench/README.md and benchmarks/README.md.
 *
 *   node --import tsx bench/clickhouse.ts [--events 10000000] [--checkpoint 1000000] [--batch 20000]
 *     [--query-runs 20] [--no-duckdb] [--clickhouse-url http://127.0.0.1:58123]
 *     [--data-dir DIR --keep] [--reuse]   (--reuse: time the queries on the data a --keep run left)
 *     [--storage-only]   (load, print the bytes on disk per event, drop the database; no dedup or queries)
 *     [--server-generate]  (past the checkpoint, ClickHouse generates the same shape itself: no DuckDB)
 *     [--property-columns path,plan]  (as TIDEMARK_CLICKHOUSE_PROPERTY_COLUMNS; with --reuse, parts
 *       written before the columns existed are rewritten first, by OPTIMIZE FINAL, and timed)
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { ClickHouseAnalyticsStore } from "../src/backends/clickhouse/clickhouse.analytics-store.js";
import { ClickHouseDatabase } from "../src/backends/clickhouse/clickhouse.database.js";
import { ClickHouseEventSink } from "../src/backends/clickhouse/clickhouse.event-sink.js";
import { toClickHouseRow } from "../src/backends/clickhouse/clickhouse.rows.js";
import { propertyColumnNames } from "../src/backends/clickhouse/create-clickhouse-parts.js";
import { DuckDbDatabase } from "../src/backends/embedded/duckdb.database.js";
import { DuckDbEventStore } from "../src/backends/embedded/duckdb.event-store.js";
import type { StoredEvent } from "../src/core/event.js";
import type { AnalyticsStore } from "../src/pipeline/event-store.js";
import { ClickHouseQueryBuilder, propertyColumn } from "../src/query/clickhouse-builder.js";
import { clickhouseLiteral } from "../src/query/clickhouse-literal.js";
import { parseQuerySpec, type QuerySpec } from "../src/query/spec.js";
import { machineReference, percentile } from "./load.js";
import { BROWSERS, DATASET_SPAN_MS, DATASET_START_MS, NAMES, PATHS, PLANS, QUERIES } from "./queries.js";

const { values: args } = parseArgs({
  options: {
    events: { type: "string", default: "10000000" },
    checkpoint: { type: "string", default: "1000000" },
    batch: { type: "string", default: "20000" },
    "query-runs": { type: "string", default: "20" },
    "no-duckdb": { type: "boolean", default: false },
    "clickhouse-url": { type: "string", default: process.env.CLICKHOUSE_URL || "http://127.0.0.1:58123" },
    "data-dir": { type: "string" },
    keep: { type: "boolean", default: false },
    reuse: { type: "boolean", default: false },
    "server-generate": { type: "boolean", default: false },
    "storage-only": { type: "boolean", default: false },
    "property-columns": { type: "string", default: "" },
  },
});
const EVENTS = Number(args.events);
const CHECKPOINT = Number(args.checkpoint);
const BATCH = Number(args.batch);
const RUNS = Number(args["query-runs"]);

const START = DATASET_START_MS;
const SPAN = DATASET_SPAN_MS;

function mulberry32(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const random = mulberry32(7);
const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)] as T;

/**
 * Event `i` of the dataset as it arrives: the shape and skew of bench/run.ts (100K users, 90
 * days, 10 names, four properties), with event times a little behind arrival: 90 % within a
 * minute, 9 % within an hour, 1 % up to three days late (devices that were offline).
 */
function eventAt(projectId: string, i: number): StoredEvent {
  const arrival = START + Math.floor(((i + random()) / EVENTS) * SPAN);
  const r = random();
  const late = r < 0.9 ? random() * 60_000 : r < 0.99 ? random() * 3_600_000 : random() * 3 * 86_400_000;
  return {
    projectId,
    uuid: randomUUID(),
    event: pick(NAMES),
    distinctId: `user_${Math.floor(random() ** 1.5 * 100_000)}`,
    timestamp: Math.max(START, arrival - Math.floor(late)),
    properties: JSON.stringify({
      path: pick(PATHS),
      plan: pick(PLANS),
      browser: pick(BROWSERS),
      price: Math.round(random() * 20_000) / 100,
    }),
    receivedAt: arrival,
  };
}

const f = (x: number) => x.toFixed(1);
const sorted = (xs: number[]) => [...xs].sort((a, b) => a - b);

async function time<T>(work: () => Promise<T>): Promise<[number, T]> {
  const started = performance.now();
  const result = await work();
  return [performance.now() - started, result];
}

async function p99(runs: number, work: () => Promise<unknown>): Promise<{ p50: number; p99: number }> {
  const times: number[] = [];
  for (let i = 0; i < runs + 2; i++) {
    const [ms] = await time(work);
    if (i >= 2) times.push(ms);
  }
  const s = sorted(times);
  return { p50: percentile(s, 50), p99: percentile(s, 99) };
}

/**
 * Events `from`..`from + count` generated by ClickHouse itself, with eventAt's distributions: for
 * loading 10M events in a minute on a shared machine, where generating them in Node takes half an
 * hour. Rows go in in arrival order (the `numbers` order), as the sink would write them.
 */
function serverGenerate(table: string, projectId: string, from: number, count: number): string {
  const u = (seed: number) => `(rand(${seed}) / 4294967296)`;
  const list = (items: readonly string[]) => `[${items.map((x) => clickhouseLiteral(x)).join(", ")}]`;
  return `INSERT INTO ${table}
    SELECT project_id, uuid, event, distinct_id, ts, received_at,
      concat('{"path":"', g_path, '","plan":"', g_plan, '","browser":"', g_browser, '","price":', toString(g_price), '}'),
      ['path', 'plan', 'browser', 'price'], [g_path, g_plan, g_browser, toString(g_price)], ['price'], [g_price]
    FROM (
      SELECT ${clickhouseLiteral(projectId)} AS project_id, toString(generateUUIDv4()) AS uuid,
        ${list(NAMES)}[1 + rand(1) % ${NAMES.length}] AS event,
        concat('user_', toString(toUInt32(pow(${u(2)}, 1.5) * 100000))) AS distinct_id,
        ${START} + toInt64(((number + ${from} + ${u(3)}) / ${EVENTS}) * ${SPAN}) AS received_at,
        ${u(4)} AS g_r,
        greatest(${START}, received_at - toInt64(multiIf(g_r < 0.9, ${u(5)} * 60000, g_r < 0.99, ${u(5)} * 3600000, ${u(5)} * 259200000))) AS ts,
        ${list(PATHS)}[1 + rand(6) % ${PATHS.length}] AS g_path,
        ${list(PLANS)}[1 + rand(7) % ${PLANS.length}] AS g_plan,
        ${list(BROWSERS)}[1 + rand(8) % ${BROWSERS.length}] AS g_browser,
        round(${u(9)} * 200, 2) AS g_price
      FROM numbers(${count})
    )`;
}

/** The read-time dedup variants of a statement, for the measurement only. */
function variants(sql: string, table: string, projectId: string, spec: QuerySpec): Record<string, string> {
  const range =
    "fromMs" in spec && spec.fromMs !== undefined && spec.toMs !== undefined
      ? ` AND ts >= ${spec.fromMs} AND ts < ${spec.toMs}`
      : "";
  const deduped = `(SELECT project_id, uuid, event, distinct_id, user_hash, ts, prop_keys, prop_values, num_keys, num_values
    FROM ${table} WHERE project_id = ${clickhouseLiteral(projectId)}${range} LIMIT 1 BY uuid)`;
  return {
    plain: sql,
    FINAL: sql.replaceAll(`FROM ${table} WHERE`, `FROM ${table} FINAL WHERE`),
    "LIMIT 1 BY uuid": sql.replaceAll(`FROM ${table} WHERE`, `FROM ${deduped} WHERE`),
  };
}

async function measureDedup(
  label: string,
  db: ClickHouseDatabase,
  projectId: string,
  sink: ClickHouseEventSink,
  latest: StoredEvent[],
): Promise<void> {
  let recent = latest;
  const builder = new ClickHouseQueryBuilder(db.eventsTable, db.rollups, db.propertyColumns);
  const kinds = QUERIES.filter(([name]) =>
    [
      "trends total/day 30d",
      "trends unique users/day 30d",
      "funnel 3 steps 1d window 30d",
      "top values path 30d",
    ].includes(name),
  );
  const [parts] = await db.query<{ n: number }>(
    `SELECT count() AS n FROM system.parts WHERE active AND database = '${db.database}' AND table = 'events'`,
  );
  console.log(`\n#### Dedup options at ${label} events (${parts?.n} active parts)\n`);
  console.log("| query | plain P50 / P99 ms | FINAL P50 / P99 ms | LIMIT 1 BY uuid P50 / P99 ms |");
  console.log("| --- | ---: | ---: | ---: |");
  for (const [name, body] of kinds) {
    const spec = parseQuerySpec(body);
    const statement =
      spec.kind === "trends"
        ? builder.trends(projectId, spec)
        : spec.kind === "funnel"
          ? builder.funnel(projectId, spec)
          : spec.kind === "top_values"
            ? builder.topValues(projectId, spec)
            : undefined;
    if (!statement) continue;
    const cells: string[] = [];
    for (const sql of Object.values(variants(statement.sql, db.eventsTable, projectId, spec))) {
      const { p50, p99: q99 } = await p99(Math.min(RUNS, 10), () => db.query(sql));
      cells.push(`${f(p50)} / ${f(q99)}`);
    }
    console.log(`| ${name} | ${cells.join(" | ")} |`);
  }
  // The sink's lookup: a replayed batch of recent events is all lookup and no insert.
  if (recent.length === 0) {
    const rows = await db.query<{
      uuid: string;
      event: string;
      distinct_id: string;
      ts: number;
      properties: string;
      received_at: number;
    }>(
      `SELECT uuid, event, distinct_id, ts, properties, received_at FROM ${db.eventsTable}
       WHERE project_id = ${clickhouseLiteral(projectId)} ORDER BY received_at DESC LIMIT ${BATCH}`,
    );
    recent = rows.map((r) => ({
      projectId,
      uuid: r.uuid,
      event: r.event,
      distinctId: r.distinct_id,
      timestamp: Number(r.ts),
      properties: r.properties,
      receivedAt: Number(r.received_at),
    }));
  }
  const lookups: number[] = [];
  for (let i = 0; i < 5; i++) {
    const slice = recent.slice(i * 2000, (i + 1) * 2000);
    if (slice.length === 0) break;
    lookups.push((await time(() => sink.write(slice)))[0]);
  }
  const [allMs] = await time(() => sink.write(recent));
  console.log(
    `\nsink duplicate lookup (a replay of recent events, nothing inserted): 2,000 events ${f(
      percentile(sorted(lookups), 50),
    )} ms median of ${lookups.length}; ${recent.length.toLocaleString("en")} events ${f(allMs)} ms`,
  );
}

/**
 * Rewrites the parts that lack a property column (kept data from before the columns existed), so
 * queries read the column rather than ClickHouse computing it from the arrays; prints the time.
 */
async function writePropertyColumns(db: ClickHouseDatabase, names: readonly string[]): Promise<void> {
  const columns = names.map((name) => clickhouseLiteral(propertyColumn(name).name)).join(", ");
  const [missing] = await db.query<{ parts: number }>(
    `SELECT count() AS parts FROM system.parts WHERE active AND database = '${db.database}' AND table = 'events'
       AND name NOT IN (SELECT name FROM system.parts_columns WHERE active AND database = '${db.database}'
         AND table = 'events' AND column IN (${columns}) GROUP BY name HAVING count() = ${names.length})`,
  );
  if (Number(missing?.parts) === 0) return;
  const [ms] = await time(() => db.command(`OPTIMIZE TABLE ${db.eventsTable} FINAL`));
  console.log(`property columns written into ${missing?.parts} parts by OPTIMIZE FINAL: ${f(ms / 1000)} s`);
}

async function main(): Promise<void> {
  const url = args["clickhouse-url"];
  const database = "tidemark_bench";
  const propertyColumns = propertyColumnNames(args["property-columns"]);
  const db = new ClickHouseDatabase({ url, database, requestTimeoutMs: 300_000, propertyColumns });
  const reuse = args.reuse;
  if (!reuse) {
    const setup = new ClickHouseDatabase({ url, database: "default" });
    await setup.open();
    await setup.command(`DROP DATABASE IF EXISTS ${database}`);
    await setup.close();
  }
  const sink = new ClickHouseEventSink(db);
  const clickhouse = new ClickHouseAnalyticsStore(db);
  await sink.start();
  await clickhouse.start();
  // Queries read the rollups once they are complete (filled in the background on a kept store).
  await clickhouse.rollupsFilled();
  assert.ok(clickhouse.rollupsReady, "the rollups were not filled (see the log)");

  const useDuck = !args["no-duckdb"] && !args["server-generate"];
  const dataDir = args["data-dir"] ?? mkdtempSync(join(tmpdir(), "tidemark-bench-ch-"));
  mkdirSync(dataDir, { recursive: true });
  const duck = useDuck ? new DuckDbEventStore(new DuckDbDatabase(dataDir)) : undefined;
  await duck?.start();

  const projectFile = join(dataDir, "bench-project.txt");
  const projectId = reuse ? readFileSync(projectFile, "utf8").trim() : randomUUID();
  writeFileSync(projectFile, projectId);
  console.log(
    `Tidemark ClickHouse bench: ${EVENTS.toLocaleString("en")} events in batches of ${BATCH.toLocaleString("en")} through the sink${useDuck ? ", and the same events into DuckDB" : ""}`,
  );
  let chMs = 0;
  let duckMs = 0;
  let bulkMs = 0;
  let recent: StoredEvent[] = [];
  for (let offset = 0; offset < (reuse ? 0 : EVENTS); ) {
    // Through the sink (duplicate lookup + insert, batches of --batch) up to the checkpoint; past
    // it, plain bulk inserts of 100,000 rows, so the 10M dataset loads in minutes on a shared
    // machine. The store is the same either way: the sink's inserts are these rows.
    const viaSink = offset < CHECKPOINT;
    const size = Math.min(viaSink ? BATCH : args["server-generate"] ? 1_000_000 : 100_000, EVENTS - offset);
    const generated = !viaSink && args["server-generate"];
    const batch = generated ? [] : Array.from({ length: size }, (_, k) => eventAt(projectId, offset + k));
    if (viaSink) chMs += (await time(() => sink.write(batch)))[0];
    else if (args["server-generate"]) {
      bulkMs += (await time(() => db.command(serverGenerate(db.eventsTable, projectId, offset, size))))[0];
      batch.length = 0;
    } else bulkMs += (await time(() => db.insert(db.eventsTable, batch.map(toClickHouseRow))))[0];
    if (duck) duckMs += (await time(() => duck.insert(batch)))[0];
    if (batch.length > 0) recent = batch.slice(-BATCH);
    offset += size;
    const loaded = offset;
    process.stdout.write(`  loaded ${loaded.toLocaleString("en")}\r`);
    if (loaded === CHECKPOINT && chMs > 0) {
      console.log(
        `\n${loaded.toLocaleString("en")} events: ClickHouse sink ${Math.round(loaded / (chMs / 1000))} events/s`,
      );
      if (CHECKPOINT < EVENTS) await measureDedup(loaded.toLocaleString("en"), db, projectId, sink, recent);
    }
  }
  if (!reuse) {
    console.log(
      `\n${EVENTS.toLocaleString("en")} events loaded: ClickHouse bulk insert ${Math.round((EVENTS - CHECKPOINT) / (bulkMs / 1000))} events/s past the checkpoint` +
        (duck
          ? `; DuckDB insert ${Math.round(EVENTS / (duckMs / 1000))} events/s (${f(duckMs / 1000)} s)`
          : ""),
    );
    assert.equal(await sink.countEvents(projectId), EVENTS);
    await db.command(`OPTIMIZE TABLE ${db.eventsTable} FINAL`);
    const [size] = await db.query<{ parts: number; compressed: number; uncompressed: number }>(
      `SELECT count() AS parts, sum(data_compressed_bytes) AS compressed, sum(data_uncompressed_bytes) AS uncompressed
       FROM system.parts WHERE active AND database = '${db.database}' AND table = 'events'`,
    );
    console.log(
      `on disk after OPTIMIZE FINAL (${size?.parts} active parts): ${f(Number(size?.compressed) / EVENTS)} bytes per event compressed, ` +
        `${f(Number(size?.uncompressed) / EVENTS)} uncompressed`,
    );
    if (args["storage-only"]) {
      await db.command(`DROP DATABASE IF EXISTS ${database}`);
      await sink.close();
      await clickhouse.close();
      if (!args.keep) rmSync(dataDir, { recursive: true, force: true });
      return;
    }
    await measureDedup(EVENTS.toLocaleString("en"), db, projectId, sink, recent);
    assert.equal(await sink.countEvents(projectId), EVENTS, "replays were stored again");
  }

  if (reuse && propertyColumns.length > 0) await writePropertyColumns(db, propertyColumns);
  console.log(
    `\n#### Queries on ${EVENTS.toLocaleString("en")} events (${RUNS} runs each after 2 warm-up runs)\n`,
  );
  // ClickHouse's speed follows the host's, which drifts by 1.5x within an hour here.
  console.log(`machine reference (fixed DuckDB work, lower is faster): ${f(await machineReference())} ms\n`);
  console.log(
    "| query | ClickHouse 18.16 P50 ms | ClickHouse P99 ms | DuckDB P50 ms | DuckDB P99 ms | same answer |",
  );
  console.log("| --- | ---: | ---: | ---: | ---: | --- |");
  const stores: [string, AnalyticsStore | undefined][] = [
    ["clickhouse", clickhouse],
    ["duckdb", duck],
  ];
  for (const [name, body] of QUERIES) {
    const spec = parseQuerySpec(body);
    const cells: string[] = [];
    const answers: unknown[] = [];
    for (const [, store] of stores) {
      if (!store) {
        cells.push("—", "—");
        continue;
      }
      answers.push(await store.query(projectId, spec));
      const { p50, p99: q99 } = await p99(RUNS, () => store.query(projectId, spec));
      cells.push(f(p50), f(q99));
    }
    let same = "—";
    if (answers.length === 2) {
      try {
        assert.deepEqual(answers[0], answers[1]);
        same = "yes";
      } catch {
        same = "NO";
      }
    }
    console.log(`| ${name} | ${cells.join(" | ")} | ${same} |`);
  }
  await sink.close();
  await clickhouse.close();
  await duck?.close();
  if (!args.keep) rmSync(dataDir, { recursive: true, force: true });
}

await main();

/**
 * What a DuckDB checkpoint costs as the events table grows, by its row group size: a table of the
 * event tables' columns (four property slots made up front) gets `--rows` events, then small
 * appends (a 760-event commit's rows) each followed by a CHECKPOINT, then a write to another, small
 * table and a CHECKPOINT, then UPDATEs of 1M rows' property column as a fill's slice does.
 * DuckDB alone, no Tidemark code: it says what bounds the stalls of commits while a store this
 * large fills a property column (benchmarks/README.md).
 *
 *   node --import tsx bench/checkpoint-cost.ts --rows 20000000 --row-group-rows 16384 [--appends 6]
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { type DuckDBConnection, DuckDBInstance } from "@duckdb/node-api";

const { values: args } = parseArgs({
  options: {
    rows: { type: "string", default: "20000000" },
    "row-group-rows": { type: "string", default: "16384" },
    appends: { type: "string", default: "6" },
  },
});
const ROWS = Number(args.rows);
const ROW_GROUP_ROWS = Number(args["row-group-rows"]);
const APPENDS = Number(args.appends);
/** Milliseconds between events: spread like the bench's 90 days at 10M events. */
const STEP_MS = 77;
const EVENT_COLUMNS = "project_id, uuid, event, eid, distinct_id, uid, timestamp, properties, received_at";

async function timed(connection: DuckDBConnection, sql: string): Promise<number> {
  const started = performance.now();
  await connection.run(sql);
  return performance.now() - started;
}

const dir = mkdtempSync(join(tmpdir(), "tidemark-checkpoint-cost-"));
const instance = await DuckDBInstance.create(":memory:", { threads: "2", memory_limit: "512MB" });
const connection = await instance.connect();
try {
  await connection.run(`ATTACH '${join(dir, "events.duckdb")}' AS store (ROW_GROUP_SIZE ${ROW_GROUP_ROWS})`);
  await connection.run("USE store");
  const slots = Array.from({ length: 4 }, (_, slot) => `p${slot}_text VARCHAR, p${slot}_num DOUBLE`).join(
    ", ",
  );
  await connection.run(`CREATE TABLE events (project_id UUID, uuid UUID, event VARCHAR, eid INTEGER,
    distinct_id VARCHAR, uid BIGINT, timestamp TIMESTAMP, properties JSON, received_at TIMESTAMP, ${slots})`);
  await connection.run("CREATE TABLE small (n BIGINT)");
  const load = await timed(
    connection,
    `INSERT INTO events (${EVENT_COLUMNS})
     SELECT '11111111-1111-1111-1111-111111111111', gen_random_uuid(), 'e' || (i % 5), i % 5,
       'user_' || (i % 100000), i % 100000, TIMESTAMP '2026-01-01' + to_milliseconds(i * ${STEP_MS}),
       '{"plan":"p' || (i % 3) || '","price":19.99}', TIMESTAMP '2026-01-01' + to_milliseconds(i * ${STEP_MS})
     FROM range(${ROWS}) r(i)`,
  );
  await connection.run("CHECKPOINT");
  const [[groups = 0n] = []] = (
    await connection.runAndReadAll("SELECT count(DISTINCT row_group_id) FROM pragma_storage_info('events')")
  ).getRowsJS() as [bigint][];
  console.log(
    `${ROWS} events in row groups of ${ROW_GROUP_ROWS} rows: ${groups} row groups, loaded in ${(load / 1000).toFixed(1)} s`,
  );
  const appends: string[] = [];
  for (let i = 0; i < APPENDS; i++) {
    await connection.run(
      `INSERT INTO events (${EVENT_COLUMNS}) SELECT project_id, gen_random_uuid(), event, eid, distinct_id, uid,
         timestamp, properties, received_at FROM events LIMIT 760`,
    );
    appends.push((await timed(connection, "CHECKPOINT")).toFixed(0));
  }
  console.log(`CHECKPOINT after 760 rows appended to the events table: ${appends.join(", ")} ms`);
  const small: string[] = [];
  for (let i = 0; i < 3; i++) {
    await connection.run("INSERT INTO small VALUES (1)");
    small.push((await timed(connection, "CHECKPOINT")).toFixed(0));
  }
  console.log(`CHECKPOINT after a row written to another, small table: ${small.join(", ")} ms`);
  const updates: string[] = [];
  for (const at of [0.2, 0.5]) {
    const from = Math.floor(ROWS * at) * STEP_MS;
    const to = from + 1_000_000 * STEP_MS;
    // Its commit passes the WAL's checkpoint threshold, and so checkpoints too.
    const update = await timed(
      connection,
      `UPDATE events SET p0_text = json_extract_string(properties, '/plan')
       WHERE timestamp >= TIMESTAMP '2026-01-01' + to_milliseconds(${from})
         AND timestamp < TIMESTAMP '2026-01-01' + to_milliseconds(${to})`,
    );
    const checkpoint = await timed(connection, "CHECKPOINT");
    updates.push(`${update.toFixed(0)} (+${checkpoint.toFixed(0)})`);
  }
  console.log(
    `UPDATE of 1M rows' property column, with the checkpoint its commit ran (and a CHECKPOINT after): ${updates.join(", ")} ms`,
  );
} finally {
  connection.closeSync();
  instance.closeSync();
  rmSync(dir, { recursive: true, force: true });
}

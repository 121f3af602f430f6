/**
 * Whether commits into another table pass the stalls of a property fill: a table of the event
 * tables' columns gets `--rows` events, a small second table of the same columns; then, while
 * `--slices` UPDATEs of 1M rows fill a property column of the big table (as a fill's slices do),
 * a writer commits 760 rows and a count every 5 ms into `--target`: `big` (the table being filled)
 * or `other`. It prints the commits' wait and the slowest with when they began. DuckDB alone, no
 * Tidemark code: it says whether keeping new events in a table of their own would spare commits
 * the fills' stalls (benchmarks/README.md).
 *
 *   node --import tsx bench/fill-stall.ts --rows 20000000 --target other [--slices 4]
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { DuckDBInstance } from "@duckdb/node-api";

const { values: args } = parseArgs({
  options: {
    rows: { type: "string", default: "20000000" },
    target: { type: "string", default: "big" },
    slices: { type: "string", default: "4" },
  },
});
const ROWS = Number(args.rows);
const SLICES = Number(args.slices);
const TARGET = args.target === "other" ? "other" : "big";
const SLICE_ROWS = 1_000_000;
/** Milliseconds between events: spread like the bench's 90 days at 10M events. */
const STEP_MS = 77;
const EVENT_COLUMNS = "project_id, uuid, event, eid, distinct_id, uid, timestamp, properties, received_at";

/** `count` generated events from the `offset`th on, as the INSERT's SELECT. */
const generated = (count: number, offset: number) =>
  `SELECT '11111111-1111-1111-1111-111111111111', gen_random_uuid(), 'e' || (i % 5), i % 5,
     'user_' || (i % 100000), i % 100000, TIMESTAMP '2026-01-01' + to_milliseconds((i + ${offset}) * ${STEP_MS}),
     '{"plan":"p' || (i % 3) || '","price":19.99}', TIMESTAMP '2026-01-01' + to_milliseconds((i + ${offset}) * ${STEP_MS})
   FROM range(${count}) r(i)`;

const dir = mkdtempSync(join(tmpdir(), "tidemark-fill-stall-"));
const instance = await DuckDBInstance.create(":memory:", { threads: "2", memory_limit: "512MB" });
const setup = await instance.connect();
const writer = await instance.connect();
const filler = await instance.connect();
try {
  await setup.run(`ATTACH '${join(dir, "events.duckdb")}' AS store (ROW_GROUP_SIZE 16384)`);
  const slots = Array.from({ length: 4 }, (_, slot) => `p${slot}_text VARCHAR, p${slot}_num DOUBLE`).join(
    ", ",
  );
  const columns = `project_id UUID, uuid UUID, event VARCHAR, eid INTEGER, distinct_id VARCHAR, uid BIGINT,
    timestamp TIMESTAMP, properties JSON, received_at TIMESTAMP, ${slots}`;
  for (const connection of [setup, writer, filler]) await connection.run("USE store");
  await setup.run(`CREATE TABLE big (${columns})`);
  await setup.run(`CREATE TABLE other (${columns})`);
  await setup.run("CREATE TABLE counts (event VARCHAR, n BIGINT)");
  await setup.run(`INSERT INTO big (${EVENT_COLUMNS}) ${generated(ROWS, 0)}`);
  await setup.run(`INSERT INTO other (${EVENT_COLUMNS}) ${generated(200_000, ROWS)}`);
  await setup.run("CHECKPOINT");
  console.log(`${ROWS} events in the filled table; commits go into ${TARGET === "big" ? "it" : "another"}`);

  const started = performance.now();
  const commits: { at: number; waited: number }[] = [];
  let filling = true;
  let offset = ROWS + 200_000;
  const writing = (async () => {
    while (filling) {
      const at = performance.now();
      await writer.run("BEGIN");
      await writer.run(`INSERT INTO ${TARGET} (${EVENT_COLUMNS}) ${generated(760, offset)}`);
      await writer.run("INSERT INTO counts VALUES ('e1', 760)");
      await writer.run("COMMIT");
      offset += 760;
      commits.push({ at: at - started, waited: performance.now() - at });
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  })();
  for (let slice = 0; slice < SLICES; slice++) {
    const at = performance.now();
    // Its commit passes the WAL's checkpoint threshold, and so checkpoints too.
    await filler.run(
      `UPDATE big SET p0_text = json_extract_string(properties, '/plan')
       WHERE rowid >= ${slice * SLICE_ROWS} AND rowid < ${(slice + 1) * SLICE_ROWS}`,
    );
    console.log(
      `slice ${slice}: ${(at - started).toFixed(0)} → ${(performance.now() - started).toFixed(0)} ms`,
    );
  }
  filling = false;
  await writing;
  const waits = commits.map((commit) => commit.waited).sort((a, b) => a - b);
  const percentile = (p: number) =>
    waits[Math.min(waits.length - 1, Math.floor(p * waits.length))]!.toFixed(1);
  console.log(
    `${commits.length} commits while ${SLICES} slices filled: P50 ${percentile(0.5)} ms, slowest ${percentile(1)} ms, ${waits.filter((w) => w > 200).length} over 200 ms`,
  );
  const slowest = [...commits].sort((a, b) => b.waited - a.waited).slice(0, 6);
  console.log(
    `slowest (began at → waited): ${slowest.map((c) => `${c.at.toFixed(0)} → ${c.waited.toFixed(0)}`).join(", ")} ms`,
  );
} finally {
  for (const connection of [setup, writer, filler]) connection.closeSync();
  instance.closeSync();
  rmSync(dir, { recursive: true, force: true });
}

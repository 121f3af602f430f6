/**
 * The embedded store as it grows: commits of `--commit` events (random uuids, 100K users, the bench
 * dataset's properties) into a fresh DuckDbEventStore until it holds `--events`, one commit at a
 * time as the API's group commit sends them. For each slice of `--slice` events it prints
 * events/s, the commit P50 and P99, the process RSS and what DuckDB holds of it; at the end, the time to open the store
 * again (the key filter is built from the table then). A retried slice at the end shows the cost
 * of commits the filter cannot clear alone. In process, no HTTP: what the store costs.
 *
 *   node --import tsx bench/store-growth.ts [--events 3000000] [--commit 1000] [--slice 500000]
 *     [--memory-limit 512MB] [--src src]
 *
 * `--src` loads the store from another checkout's src/ (for example one made with `git worktree
 * add`), so two versions run the same load. Results: benchmarks/README.md, "The store as it grows".
 */
import { randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import type { StoredEvent } from "../src/core/event.js";
import { percentile } from "./load.js";
import { BROWSERS, DATASET_SPAN_MS, DATASET_START_MS, NAMES, PATHS, PLANS } from "./queries.js";

const { values: args } = parseArgs({
  options: {
    events: { type: "string", default: "3000000" },
    commit: { type: "string", default: "1000" },
    slice: { type: "string", default: "500000" },
    "memory-limit": { type: "string", default: "512MB" },
    src: { type: "string", default: "src" },
  },
});
const TOTAL = Number(args.events);
const COMMIT = Number(args.commit);
const SLICE = Number(args.slice);
const SRC = resolve(args.src);

interface Store {
  start(): Promise<void>;
  close(): Promise<void>;
  insert(events: readonly StoredEvent[]): Promise<{ inserted: number }>;
}
type StoreClass = new (db: unknown, options?: Record<string, unknown>) => Store;
/** `memory()` is absent from builds older than the store-memory gauges. */
interface Database {
  memory?(): Promise<{ usedBytes: ReadonlyMap<string, number> }>;
}
type DatabaseClass = new (dir: string, options: Record<string, unknown>) => Database;

const { DuckDbDatabase } = (await import(join(SRC, "backends/embedded/duckdb.database.ts"))) as {
  DuckDbDatabase: DatabaseClass;
};
const { DuckDbEventStore } = (await import(join(SRC, "backends/embedded/duckdb.event-store.ts"))) as {
  DuckDbEventStore: StoreClass;
};

const pick = <T>(values: readonly T[]): T => values[Math.floor(Math.random() * values.length)]!;
const projectId = randomUUID();

function makeEvent(): StoredEvent {
  const timestamp = DATASET_START_MS + Math.floor(Math.random() * DATASET_SPAN_MS);
  return {
    projectId,
    uuid: randomUUID(),
    event: pick(NAMES),
    distinctId: `user_${Math.floor(Math.random() ** 1.5 * 100_000)}`,
    timestamp,
    properties: JSON.stringify({
      path: pick(PATHS),
      plan: pick(PLANS),
      browser: pick(BROWSERS),
      price: Math.round(Math.random() * 20_000) / 100,
    }),
    receivedAt: timestamp,
  };
}

const rssMb = () => {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"));
  return match ? Math.round(Number(match[1]) / 1024) : 0;
};

const dir = mkdtempSync(join(tmpdir(), "tidemark-growth-"));
let db: Database | undefined;
const open = async () => {
  db = new DuckDbDatabase(dir, { memoryLimit: args["memory-limit"], threads: 2 });
  const store = new DuckDbEventStore(db);
  await store.start();
  return store;
};
/** What DuckDB holds (duckdb_memory()) in MB: in all, and its cached table data (BASE_TABLE). */
const duckdbMb = async (): Promise<string> => {
  const memory = await db?.memory?.();
  if (!memory) return "| — | — ";
  const mb = (bytes: number) => Math.round(bytes / 1e6);
  const all = [...memory.usedBytes.values()].reduce((a, b) => a + b, 0);
  return `| ${mb(all)} | ${mb(memory.usedBytes.get("BASE_TABLE") ?? 0)} `;
};
console.log(
  `store growth: ${TOTAL} events in commits of ${COMMIT}, memory limit ${args["memory-limit"]}, src ${SRC}`,
);
console.log(
  "| stored | events/s | commit P50 ms | commit P99 ms | RSS MB | DuckDB MB | of which table data | load avg |",
);
console.log("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
let store = await open();
const lastSlice: StoredEvent[][] = [];
try {
  for (let stored = 0; stored < TOTAL; ) {
    const times: number[] = [];
    const started = performance.now();
    for (let n = 0; n < SLICE && stored < TOTAL; n += COMMIT, stored += COMMIT) {
      const batch = Array.from({ length: COMMIT }, makeEvent);
      if (stored + SLICE >= TOTAL) lastSlice.push(batch);
      const t = performance.now();
      await store.insert(batch);
      times.push(performance.now() - t);
    }
    const seconds = (performance.now() - started) / 1000;
    times.sort((a, b) => a - b);
    console.log(
      `| ${stored.toLocaleString("en-US")} | ${Math.round((times.length * COMMIT) / seconds).toLocaleString("en-US")} | ${percentile(times, 50).toFixed(1)} | ${percentile(times, 99).toFixed(1)} | ${rssMb()} ${await duckdbMb()}| ${loadavg()[0]!.toFixed(1)} |`,
    );
  }
  await store.close();
  const reopening = performance.now();
  store = await open();
  console.log(`reopened in ${((performance.now() - reopening) / 1000).toFixed(1)} s, RSS ${rssMb()} MB`);
  // Every commit of the last slice again, each with one new event: all but one a duplicate.
  const times: number[] = [];
  for (const batch of lastSlice.slice(0, 50)) {
    const t = performance.now();
    const outcome = await store.insert([...batch, makeEvent()]);
    times.push(performance.now() - t);
    if (outcome.inserted !== 1) throw new Error(`retried commit stored ${outcome.inserted}, expected 1`);
  }
  times.sort((a, b) => a - b);
  console.log(
    `retried commits (${COMMIT} duplicates and 1 new event each): P50 ${percentile(times, 50).toFixed(1)} ms, P99 ${percentile(times, 99).toFixed(1)} ms`,
  );
} finally {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
}

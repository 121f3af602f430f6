/**
 * The embedded commit path of two or more builds, in one process: each build's DuckDbEventStore
 * (a fresh data dir) takes the same commits in turn, the order alternating, and the CPU each commit
 * cost the process (all threads, `process.cpuUsage`) and its wall time are kept. Over HTTP the
 * machine's pace moves by more than a change to the commit path is worth (benchmarks/README.md,
 * "Ingest CPU per request"); in turn, in one process, both builds see the same moments.
 *
 * A commit holds `--events` events of 150 projects, 20 in a row of each, as the API's group
 * commit gathers 20-event batches; users are `user_0` .. `user_19` of each project, as in
 * `bench/load.ts`'s sample batch.
 *
 *   npm run build
 *   git archive --prefix=dist-before-src/ <commit> src tsconfig.json tsconfig.build.json | tar -x
 *   npx tsc -p dist-before-src/tsconfig.build.json --outDir dist-before   # dist-*: git-ignored
 *   node --import tsx bench/commit-ab.ts --build before=dist-before --build after=dist \
 *     [--events 760] [--commits 300]
 */
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import type { StoredEvent } from "../src/core/event.js";
import { percentile, SAMPLE_PROPERTIES } from "./load.js";

const { values: args } = parseArgs({
  options: {
    build: { type: "string", multiple: true, default: ["dist"] },
    events: { type: "string", default: "760" },
    commits: { type: "string", default: "300" },
  },
});
const ROOT = new URL("..", import.meta.url).pathname;
const EVENTS = Number(args.events);
const COMMITS = Number(args.commits);
/** Commits before these are not counted: the first ones create every user and prepare statements. */
const WARM_UP = 10;

interface Store {
  start(): Promise<void>;
  close(): Promise<void>;
  insert(events: readonly StoredEvent[]): Promise<{ inserted: number }>;
}
type StoreClass = new (db: unknown, options?: Record<string, unknown>) => Store;
type DatabaseClass = new (dir: string, options: Record<string, unknown>) => unknown;

interface Build {
  label: string;
  store: Store;
  dataDir: string;
  cpuMs: number[];
  wallMs: number[];
}

async function open(spec: string): Promise<Build> {
  const [label = spec, dir = spec] = spec.includes("=") ? spec.split("=") : [spec, spec];
  const base = resolve(ROOT, dir, "backends/embedded");
  const { DuckDbDatabase } = (await import(join(base, "duckdb.database.js"))) as {
    DuckDbDatabase: DatabaseClass;
  };
  const { DuckDbEventStore } = (await import(join(base, "duckdb.event-store.js"))) as {
    DuckDbEventStore: StoreClass;
  };
  const dataDir = mkdtempSync(join(tmpdir(), `tidemark-commit-ab-${label}-`));
  const store = new DuckDbEventStore(new DuckDbDatabase(dataDir, { memoryLimit: "512MB", threads: 2 }));
  await store.start();
  return { label, store, dataDir, cpuMs: [], wallMs: [] };
}

const projects = Array.from({ length: 150 }, () => randomUUID());
const properties = JSON.stringify(SAMPLE_PROPERTIES);
const names = ["Page View", "Click", "Add To Cart"];

function commit(): StoredEvent[] {
  const now = Date.now();
  return Array.from({ length: EVENTS }, (_, i) => ({
    projectId: projects[Math.floor(i / 20) % projects.length]!,
    uuid: randomUUID(),
    event: names[i % names.length]!,
    distinctId: `user_${i % 20}`,
    timestamp: now,
    properties,
    receivedAt: now,
  }));
}

const builds: Build[] = [];
for (const spec of args.build) builds.push(await open(spec));
try {
  for (let round = 0; round < COMMITS; round++) {
    const events = commit();
    for (const build of round % 2 === 0 ? builds : [...builds].reverse()) {
      const cpu = process.cpuUsage();
      const started = performance.now();
      const outcome = await build.store.insert(events.map((e) => ({ ...e })));
      const wall = performance.now() - started;
      const used = process.cpuUsage(cpu);
      if (outcome.inserted !== EVENTS)
        throw new Error(`${build.label}: ${outcome.inserted} of ${EVENTS} inserted`);
      if (round < WARM_UP) continue;
      build.cpuMs.push((used.user + used.system) / 1000);
      build.wallMs.push(wall);
    }
  }
  const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;
  const f = (x: number) => x.toFixed(2);
  console.log(`\n| build | CPU a commit, mean ms | CPU P50 ms | µs an event | wall P50 ms | wall P99 ms |`);
  console.log("| --- | ---: | ---: | ---: | ---: | ---: |");
  for (const b of builds) {
    const cpu = [...b.cpuMs].sort((x, y) => x - y);
    const wall = [...b.wallMs].sort((x, y) => x - y);
    console.log(
      `| ${b.label} | ${f(mean(cpu))} | ${f(percentile(cpu, 50))} | ${((1000 * mean(cpu)) / EVENTS).toFixed(1)} | ${f(percentile(wall, 50))} | ${f(percentile(wall, 99))} |`,
    );
  }
  console.log(`\n${COMMITS - WARM_UP} commits of ${EVENTS} events each, per build, taken in turn`);
} finally {
  for (const b of builds) {
    await b.store.close();
    rmSync(b.dataDir, { recursive: true, force: true });
  }
}

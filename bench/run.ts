/**
 * Tidemark's benchmark: ingest and query figures beside a no-op HTTP server measured in the same
 * run with the same load generator, so the ratio to this machine's limit is visible.
 * Method and recorded results: bench/README.md and benchmarks/README.md.
 *
 *   npm run bench -- [--duration 20] [--connections 64] [--events 10000000] [--skip-ingest] [--skip-queries]
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { DuckDBInstance } from "@duckdb/node-api";
import { type LoadResult, percentile, runLoad, startNoopServer } from "./load.js";
import { QUERIES } from "./queries.js";

const { values: args } = parseArgs({
  options: {
    duration: { type: "string", default: "20" },
    connections: { type: "string", default: "64" },
    events: { type: "string", default: "10000000" },
    "query-runs": { type: "string", default: "40" },
    "skip-ingest": { type: "boolean", default: false },
    "skip-queries": { type: "boolean", default: false },
    "keep-data": { type: "boolean", default: false },
  },
});
const DURATION_S = Number(args.duration);
const CONNECTIONS = Number(args.connections);
const DATASET_EVENTS = Number(args.events);
const QUERY_RUNS = Number(args["query-runs"]);
const TOKEN = "bench-secret-token";
const ROOT = new URL("..", import.meta.url).pathname;

async function startTidemark(
  dataDir: string,
): Promise<{ url: string; process: ChildProcess; stop(): Promise<void> }> {
  const port = 18000 + Math.floor(Math.random() * 1000);
  const child = spawn(process.execPath, [join(ROOT, "dist/cli.js"), "serve"], {
    env: {
      ...process.env,
      PORT: String(port),
      HOST: "127.0.0.1",
      SECRET_TOKEN: TOKEN,
      TIDEMARK_DATA_DIR: dataDir,
      TIDEMARK_LOG_LEVEL: "warn",
    },
    stdio: ["ignore", "inherit", "inherit"],
  });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 600; i++) {
    try {
      if ((await fetch(`${url}/health`)).ok) break;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    url,
    process: child,
    stop: () =>
      new Promise((resolve) => {
        child.once("exit", () => resolve());
        child.kill("SIGTERM");
      }),
  };
}

async function createProject(
  url: string,
  name: string,
): Promise<{ id: string; api_key: string; read_key: string }> {
  const response = await fetch(`${url}/api/v1/project`, {
    method: "POST",
    headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify({ name, plan: "ENTERPRISE" }),
  });
  if (response.status !== 201) throw new Error(`create project: ${response.status}`);
  return (await response.json()) as { id: string; api_key: string; read_key: string };
}

const event = (i: number) => ({
  event: ["Page View", "Click", "Add To Cart"][i % 3],
  distinct_id: `user_${i}`,
  properties: {
    path: "/pricing",
    plan: "pro",
    price: 19.99,
    browser: "Firefox",
    referrer: "https://example.com/blog/post",
  },
});

function printLoad(results: LoadResult[]): void {
  console.log("\n| scenario | req/s | events/s | P50 ms | P95 ms | P99 ms | non-2xx | errors |");
  console.log("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const r of results) {
    console.log(
      `| ${r.name} | ${Math.round(r.rps)} | ${Math.round(r.eventsPerSecond)} | ${r.p50} | ${r.p95} | ${r.p99} | ${r.non2xx} | ${r.errors} |`,
    );
  }
}

/** Generates the query dataset straight into the store file while the server is stopped. */
async function generateDataset(dataDir: string, projectId: string, count: number): Promise<void> {
  const started = performance.now();
  const instance = await DuckDBInstance.create(join(dataDir, "tidemark.duckdb"));
  const connection = await instance.connect();
  const chunk = 1_000_000;
  for (let offset = 0; offset < count; offset += chunk) {
    const n = Math.min(chunk, count - offset);
    // 100K users over 90 days; event names skewed like real traffic; a few properties.
    await connection.run(
      `INSERT INTO events
       SELECT CAST($1 AS UUID), uuid(),
              (['Page View', 'Page View', 'Page View', 'Click', 'Click', 'Sign Up', 'Add To Cart', 'Purchase', 'Search', 'Logout'])[1 + CAST(floor(random() * 10) AS INTEGER)],
              'user_' || CAST(floor(pow(random(), 1.5) * 100000) AS INTEGER),
              TIMESTAMP '2026-08-01' + to_milliseconds(CAST(floor((($3 + range + random()) / $4) * 90 * 86400000) AS BIGINT)),
              CAST(json_object(
                'path', (['/', '/pricing', '/docs', '/blog', '/checkout', '/signup'])[1 + CAST(floor(random() * 6) AS INTEGER)],
                'plan', (['free', 'pro', 'team'])[1 + CAST(floor(random() * 3) AS INTEGER)],
                'browser', (['Chrome', 'Firefox', 'Safari', 'Edge'])[1 + CAST(floor(random() * 4) AS INTEGER)],
                'price', round(random() * 200, 2)) AS JSON),
              now()
       FROM range($2)
       -- Events arrive roughly in time order: store them so, as ingest would.
       ORDER BY 5`,
      [projectId, n, offset, count],
    );
    process.stdout.write(`  dataset: ${offset + n} events\r`);
  }
  await connection.run("CHECKPOINT");
  connection.closeSync();
  instance.closeSync();
  console.log(
    `\n  dataset of ${count} events generated in ${((performance.now() - started) / 1000).toFixed(1)} s`,
  );
}

async function benchQueries(url: string, readKey: string): Promise<void> {
  console.log(
    `\n| query (${DATASET_EVENTS.toLocaleString("en")} events) | P50 ms | P95 ms | P99 ms | server took_ms P50 |`,
  );
  console.log("| --- | ---: | ---: | ---: | ---: |");
  for (const [name, spec] of QUERIES) {
    const times: number[] = [];
    const took: number[] = [];
    for (let i = 0; i < QUERY_RUNS + 2; i++) {
      const started = performance.now();
      const response = await fetch(`${url}/api/v1/query`, {
        method: "POST",
        headers: { authorization: `Bearer ${readKey}`, "content-type": "application/json" },
        body: JSON.stringify(spec),
      });
      const body = (await response.json()) as { took_ms: number };
      if (response.status !== 200) throw new Error(`${name}: ${response.status} ${JSON.stringify(body)}`);
      if (i >= 2) {
        times.push(performance.now() - started);
        took.push(body.took_ms);
      }
    }
    times.sort((a, b) => a - b);
    took.sort((a, b) => a - b);
    const f = (x: number) => x.toFixed(1);
    console.log(
      `| ${name} | ${f(percentile(times, 50))} | ${f(percentile(times, 95))} | ${f(percentile(times, 99))} | ${f(percentile(took, 50))} |`,
    );
  }
}

async function main(): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), "tidemark-bench-"));
  console.log(`Tidemark bench: ${DURATION_S} s per load run, ${CONNECTIONS} connections, data in ${dataDir}`);
  try {
    let server = await startTidemark(dataDir);
    const queryProject = await createProject(server.url, "bench queries");
    if (!args["skip-ingest"]) {
      const keys: string[] = [];
      for (let i = 0; i < 150; i++) keys.push((await createProject(server.url, `bench ingest ${i}`)).api_key);
      const noop = await startNoopServer();
      const single = JSON.stringify(event(1));
      const batch = JSON.stringify({ events: Array.from({ length: 20 }, (_, i) => event(i)) });
      const results: LoadResult[] = [];
      const run = (name: string, url: string, body: string, eventsPerRequest: number) =>
        runLoad({ name, url, body, eventsPerRequest, keys, connections: CONNECTIONS, durationS: DURATION_S });
      results.push(await run("no-op server, single event body", noop.url, single, 1));
      results.push(await run("Tidemark POST /api/v1/event", `${server.url}/api/v1/event`, single, 1));
      results.push(await run("no-op server, batch-of-20 body", noop.url, batch, 20));
      results.push(
        await run("Tidemark POST /api/v1/event/batch (20)", `${server.url}/api/v1/event/batch`, batch, 20),
      );
      noop.close();
      printLoad(results);
      const ratio = results[1]!.rps / results[0]!.rps;
      console.log(`\nsingle events: ${ratio.toFixed(2)}x the no-op server's req/s`);
    }
    if (!args["skip-queries"]) {
      await server.stop();
      await generateDataset(dataDir, queryProject.id, DATASET_EVENTS);
      server = await startTidemark(dataDir);
      await benchQueries(server.url, queryProject.read_key);
    }
    await server.stop();
  } finally {
    if (!args["keep-data"]) rmSync(dataDir, { recursive: true, force: true });
  }
}

await main();

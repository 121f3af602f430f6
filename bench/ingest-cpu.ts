/**
 * What one ingest request costs the API process in CPU, and A/B comparisons of builds run back to
 * back. On a machine shared with other work, req/s follows the machine's load; CPU time per
 * request barely does, so this is the figure to compare changes by, with req/s beside it.
 *
 * For each run: a fresh Tidemark (`<dist>/cli.js serve`, a private data dir and port; for async an
 * api process and a worker process), 50 ENTERPRISE projects, then autocannon at a fixed offered
 * rate (open loop; `--rate 0` for a closed loop). The API process's CPU is read from
 * /proc/<pid>/task/<tid>/stat before and after the load, per thread: the JS thread apart from the
 * others (DuckDB's, libuv's pool, V8's GC helpers), as µs per answered request.
 *
 *   npm run build && cp -r dist dist-a   # the build to compare against
 *   node --import tsx bench/ingest-cpu.ts --dist dist-a --dist dist --rounds 3 [--rate 3000]
 *     [--duration 10] [--connections 8] [--body single|batch] [--size 20] [--pipeline embedded|async]
 *     [--node-arg=--cpu-prof --node-arg=--cpu-prof-dir=/tmp/prof] [--noop]
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { type LoadResult, runLoad, startNoopServer } from "./load.js";

const { values: args } = parseArgs({
  options: {
    dist: { type: "string", multiple: true, default: ["dist"] },
    rounds: { type: "string", default: "1" },
    rate: { type: "string", default: "2000" },
    duration: { type: "string", default: "10" },
    connections: { type: "string", default: "8" },
    body: { type: "string", default: "single" },
    size: { type: "string", default: "20" },
    pipeline: { type: "string", default: "embedded" },
    "node-arg": { type: "string", multiple: true, default: [] },
    env: { type: "string", multiple: true, default: [] },
    noop: { type: "boolean", default: false },
  },
});
const ROOT = new URL("..", import.meta.url).pathname;
const TOKEN = "bench-secret-token-0123456789";
const PIPELINE = args.pipeline === "async" ? "async" : "embedded";
const RATE = Number(args.rate);
const DURATION_S = Number(args.duration);
const CONNECTIONS = Number(args.connections);
const SIZE = args.body === "batch" ? Number(args.size) : 1;
const TICK_US = 1e6 / 100; // USER_HZ: /proc times are in 1/100 s on Linux

const sample = (i: number) => ({
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
const BODY =
  args.body === "batch"
    ? JSON.stringify({ events: Array.from({ length: SIZE }, (_, i) => sample(i)) })
    : JSON.stringify(sample(1));
const PATH = args.body === "batch" ? "/api/v1/event/batch" : "/api/v1/event";

/** CPU ticks per thread name (the JS thread is the one whose tid is the pid: "main"). */
function threadTicks(pid: number): Map<string, number> {
  const ticks = new Map<string, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const used = Number(fields[11]) + Number(fields[12]);
      const name =
        tid === String(pid)
          ? "main"
          : readFileSync(`/proc/${pid}/task/${tid}/comm`, "utf8")
              .trim()
              .replace(/[\d-]+$/, "");
      ticks.set(name, (ticks.get(name) ?? 0) + used);
    } catch {
      // the thread ended
    }
  }
  return ticks;
}

function spawnServer(
  dist: string,
  role: string,
  env: Record<string, string>,
  port: number,
): { child: ChildProcess; ready: Promise<void> } {
  const child = spawn(
    process.execPath,
    [...(args["node-arg"] ?? []), join(resolve(ROOT, dist), "cli.js"), "serve", "--role", role],
    {
      env: { ...process.env, ...env, PORT: String(port), HOST: "127.0.0.1", TIDEMARK_LOG_LEVEL: "warn" },
      stdio: ["ignore", "inherit", "inherit"],
    },
  );
  const ready = (async () => {
    if (role === "worker") return void (await new Promise((r) => setTimeout(r, 1500)));
    for (let i = 0; i < 600; i++) {
      try {
        if ((await fetch(`http://127.0.0.1:${port}/health`)).ok) return;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    throw new Error("the server did not start");
  })();
  return { child, ready };
}

const stop = (child: ChildProcess) =>
  new Promise<void>((done) => {
    if (child.exitCode !== null) return done();
    child.once("exit", () => done());
    child.kill("SIGTERM");
  });

interface RunResult {
  dist: string;
  load: LoadResult;
  cpu: Map<string, number>;
  loadAverage: [number, number];
}

async function runOnce(dist: string, pipelineEnv: Record<string, string>): Promise<RunResult> {
  const dataDir = mkdtempSync(join(tmpdir(), "tidemark-cpu-"));
  const port = 20000 + Math.floor(Math.random() * 5000);
  const env: Record<string, string> = {
    SECRET_TOKEN: TOKEN,
    TIDEMARK_DATA_DIR: dataDir,
    TIDEMARK_PIPELINE: PIPELINE,
    ...pipelineEnv,
    ...Object.fromEntries((args.env ?? []).map((kv) => kv.split("=", 2) as [string, string])),
  };
  if (PIPELINE === "async") env.TIDEMARK_REDIS_PREFIX = `benchcpu-${randomBytes(3).toString("hex")}:`;
  const api = spawnServer(dist, PIPELINE === "async" ? "api" : "all", env, port);
  const worker = PIPELINE === "async" ? spawnServer(dist, "worker", env, 0) : undefined;
  try {
    await Promise.all([api.ready, worker?.ready]);
    const url = `http://127.0.0.1:${port}`;
    const keys: string[] = [];
    for (let i = 0; i < 50; i++) {
      const response = await fetch(`${url}/api/v1/project`, {
        method: "POST",
        headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
        body: JSON.stringify({ name: `cpu ${i}`, plan: "ENTERPRISE" }),
      });
      keys.push(((await response.json()) as { api_key: string }).api_key);
    }
    // A short warm-up, so the JIT and the key cache are where a long run has them.
    await runLoad({
      name: "warm-up",
      url: `${url}${PATH}`,
      body: BODY,
      eventsPerRequest: SIZE,
      keys,
      connections: CONNECTIONS,
      durationS: 2,
      rate: RATE,
    });
    const pid = api.child.pid!;
    const before = threadTicks(pid);
    const load1 = loadavg()[0]!;
    const load = await runLoad({
      name: dist,
      url: `${url}${PATH}`,
      body: BODY,
      eventsPerRequest: SIZE,
      keys,
      connections: CONNECTIONS,
      durationS: DURATION_S,
      rate: RATE,
    });
    const after = threadTicks(pid);
    const cpu = new Map<string, number>();
    for (const [name, ticks] of after) {
      const used = ticks - (before.get(name) ?? 0);
      if (used > 0) cpu.set(name, (used * TICK_US) / Math.max(1, load.requests));
    }
    return { dist, load, cpu, loadAverage: [load1, loadavg()[0]!] };
  } finally {
    await Promise.all([stop(api.child), worker ? stop(worker.child) : undefined]);
    rmSync(dataDir, { recursive: true, force: true });
  }
}

function print(result: RunResult): void {
  const { load, cpu } = result;
  const total = [...cpu.values()].reduce((a, b) => a + b, 0);
  const others = [...cpu.entries()]
    .filter(([name]) => name !== "main")
    .sort((a, b) => b[1] - a[1])
    .map(([name, us]) => `${name} ${us.toFixed(0)}`)
    .join(", ");
  console.log(
    `| ${result.dist} | ${Math.round(load.rps)} | ${Math.round(load.eventsPerSecond)} | ${load.p50} | ${load.p99} | ${load.non2xx + load.errors} | ${total.toFixed(0)} | ${(cpu.get("main") ?? 0).toFixed(0)} | ${others} | ${result.loadAverage.map((l) => l.toFixed(1)).join(" → ")} |`,
  );
}

async function main(): Promise<void> {
  const pipelineEnv: Record<string, string> = {};
  if (PIPELINE === "async") {
    if (!process.env.DATABASE_URL || !process.env.REDIS_URL)
      throw new Error('set DATABASE_URL and REDIS_URL: eval "$(bash scripts/services.sh env)"');
    pipelineEnv.DATABASE_URL = process.env.DATABASE_URL;
    pipelineEnv.REDIS_URL = process.env.REDIS_URL;
  }
  console.log(
    `${PIPELINE}, ${args.body}${SIZE > 1 ? ` of ${SIZE}` : ""}, ${RATE > 0 ? `${RATE} requests/s offered` : "closed loop"}, ${CONNECTIONS} connections, ${DURATION_S} s per run`,
  );
  if (args.noop) {
    const noop = await startNoopServer();
    const load = await runLoad({
      name: "no-op",
      url: noop.url,
      body: BODY,
      eventsPerRequest: SIZE,
      keys: ["x"],
      connections: CONNECTIONS,
      durationS: DURATION_S,
      rate: RATE,
    });
    noop.close();
    console.log(`no-op server: ${Math.round(load.rps)} req/s, P50 ${load.p50} ms, P99 ${load.p99} ms`);
  }
  console.log(
    "\n| build | req/s | events/s | P50 ms | P99 ms | failed | CPU µs/req | JS thread µs/req | other threads µs/req | load avg |",
  );
  console.log("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |");
  const rounds = Number(args.rounds);
  for (let round = 0; round < rounds; round++) {
    for (const dist of args.dist ?? ["dist"]) print(await runOnce(dist, pipelineEnv));
  }
}

await main();

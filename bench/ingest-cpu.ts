/**
 * Ingest A/B: builds of Tidemark measured back to back in rounds, each round opening with the
 * no-op server, with what every request costs the API process in CPU. On a machine shared with
 * other work req/s follows the machine's load from one minute to the next; comparing builds
 * within a round, over several rounds, and CPU time per request beside req/s, is what shows a
 * change. Method and results: benchmarks/README.md, "Ingest CPU per request".
 *
 * Each run starts a fresh server (`<build>/cli.js serve`, a private data dir and port), creates
 * 150 ENTERPRISE projects (the keys go round, as in `npm run bench`), warms up for 3 s, then runs
 * autocannon closed loop (or at `--rate` requests/s) for `--duration` s. CPU comes from
 * /proc/<pid>/task/<tid>/stat: the JS thread apart from the others (DuckDB's, libuv's, V8's).
 * Embedded runs also report commits and events per commit from /metrics. `--pipeline async` runs
 * an api and a worker process on a private Redis (`redis-server` on PATH, appendfsync always) and
 * a fresh Postgres database at DATABASE_URL, and reports the CPU of the api, the worker and Redis,
 * and Redis's script calls a request with their µs each (`INFO commandstats`).
 *
 *   npm run build
 *   git archive --prefix=dist-before-src/ <commit> src tsconfig.json tsconfig.build.json | tar -x
 *   npx tsc -p dist-before-src/tsconfig.build.json --outDir dist-before   # dist-*: git-ignored
 *   node --import tsx bench/ingest-cpu.ts --build before=dist-before --build after=dist \
 *     [--build "after-x=dist:TIDEMARK_FLUSH_INTERVAL_MS=5"] [--rounds 6] [--duration 10]
 *     [--connections 64] [--body single|batch] [--rate 0] [--pipeline embedded|async]
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { Redis } from "ioredis";
import pg from "pg";
import { type LoadResult, runLoad, sampleEvent, startNoopServer } from "./load.js";

const { values: args } = parseArgs({
  options: {
    build: { type: "string", multiple: true, default: ["dist"] },
    rounds: { type: "string", default: "3" },
    rate: { type: "string", default: "0" },
    duration: { type: "string", default: "10" },
    connections: { type: "string", default: "64" },
    body: { type: "string", default: "single" },
    size: { type: "string", default: "20" },
    pipeline: { type: "string", default: "embedded" },
  },
});
const ROOT = new URL("..", import.meta.url).pathname;
const TOKEN = "bench-secret-token-0123456789";
const PIPELINE = args.pipeline === "async" ? "async" : "embedded";
const RATE = Number(args.rate);
const DURATION_S = Number(args.duration);
const CONNECTIONS = Number(args.connections);
const SIZE = args.body === "batch" ? Number(args.size) : 1;
const TICK_US = 1e6 / 100; // /proc times are in USER_HZ, 1/100 s on Linux

const BODY =
  args.body === "batch"
    ? JSON.stringify({ events: Array.from({ length: SIZE }, (_, i) => sampleEvent(i)) })
    : JSON.stringify(sampleEvent(1));
const PATH = args.body === "batch" ? "/api/v1/event/batch" : "/api/v1/event";

interface Build {
  label: string;
  dir: string;
  env: Record<string, string>;
}

/** `label=dir[:NAME=value,NAME=value]` */
function parseBuild(spec: string): Build {
  const [head = "", envs = ""] = spec.split(":");
  const [label = head, dir = head] = head.includes("=") ? head.split("=") : [head, head];
  const env = Object.fromEntries(envs ? envs.split(",").map((kv) => kv.split("=") as [string, string]) : []);
  return { label, dir: resolve(ROOT, dir), env };
}

/** CPU ticks of a process: all threads, and the JS thread (the one whose id is the pid). */
function ticks(pid: number): { all: number; js: number } {
  let all = 0;
  let js = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const used = Number(fields[11]) + Number(fields[12]);
      all += used;
      if (tid === String(pid)) js = used;
    } catch {
      // the thread ended
    }
  }
  return { all, js };
}

function processTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

function startProcess(
  command: string,
  argv: string[],
  env: Record<string, string>,
): { child: ChildProcess; stop(): Promise<void> } {
  const child = spawn(command, argv, {
    env: { ...process.env, ...env },
    stdio: ["ignore", "ignore", "inherit"],
  });
  return {
    child,
    stop: () =>
      new Promise<void>((done) => {
        if (child.exitCode !== null) return done();
        child.once("exit", () => done());
        child.kill("SIGTERM");
      }),
  };
}

async function waitForHealth(url: string): Promise<void> {
  for (let i = 0; i < 600; i++) {
    try {
      if ((await fetch(`${url}/health`)).ok) return;
    } catch {
      // not yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} did not start`);
}

async function metric(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1] ?? Number.NaN);
}

const load = (url: string, keys: string[], durationS: number): Promise<LoadResult> =>
  runLoad({
    name: url,
    url,
    body: BODY,
    eventsPerRequest: SIZE,
    keys,
    connections: CONNECTIONS,
    durationS,
    rate: RATE,
  });

async function runBuild(build: Build): Promise<string> {
  const dataDir = mkdtempSync(join(tmpdir(), "tidemark-ab-"));
  const port = 20000 + Math.floor(Math.random() * 5000);
  const env: Record<string, string> = {
    SECRET_TOKEN: TOKEN,
    TIDEMARK_DATA_DIR: dataDir,
    TIDEMARK_PIPELINE: PIPELINE,
    TIDEMARK_LOG_LEVEL: "warn",
    HOST: "127.0.0.1",
    ...build.env,
  };
  const stops: (() => Promise<void>)[] = [];
  const extra: { name: string; pid: number }[] = [];
  let database: string | undefined;
  const admin = PIPELINE === "async" ? new pg.Client({ connectionString: adminUrl() }) : undefined;
  try {
    if (PIPELINE === "async") {
      const redisPort = 30000 + Math.floor(Math.random() * 2000);
      const redis = startProcess(
        "redis-server",
        [
          ...["--bind", "127.0.0.1", "--port", String(redisPort), "--save", ""],
          ...["--appendonly", "yes", "--appendfsync", "always", "--dir", dataDir],
        ],
        {},
      );
      stops.push(redis.stop);
      extra.push({ name: "redis", pid: redis.child.pid! });
      database = `tidemark_ab_${randomBytes(3).toString("hex")}`;
      await admin!.connect();
      await admin!.query(`CREATE DATABASE "${database}"`);
      const url = new URL(process.env.DATABASE_URL!);
      url.pathname = `/${database}`;
      env.DATABASE_URL = url.toString();
      env.REDIS_URL = `redis://127.0.0.1:${redisPort}`;
      await new Promise((r) => setTimeout(r, 300));
    }
    const cli = join(build.dir, "cli.js");
    const role = PIPELINE === "async" ? "api" : "all";
    const api = startProcess(process.execPath, [cli, "serve", "--role", role], {
      ...env,
      PORT: String(port),
    });
    stops.unshift(api.stop);
    if (PIPELINE === "async") {
      const worker = startProcess(process.execPath, [cli, "serve", "--role", "worker"], {
        ...env,
        PORT: "0",
      });
      stops.unshift(worker.stop);
      extra.unshift({ name: "worker", pid: worker.child.pid! });
    }
    const url = `http://127.0.0.1:${port}`;
    await waitForHealth(url);
    const keys: string[] = [];
    for (let i = 0; i < 150; i++) {
      const response = await fetch(`${url}/api/v1/project`, {
        method: "POST",
        headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
        body: JSON.stringify({ name: `ab ${i}`, plan: "ENTERPRISE" }),
      });
      keys.push(((await response.json()) as { api_key: string }).api_key);
    }
    await load(`${url}${PATH}`, keys, 3);
    const pid = api.child.pid!;
    const before = ticks(pid);
    const extraBefore = extra.map((e) => processTicks(e.pid));
    const [commits0, events0] = [
      await metric(url, "tidemark_flush_events_count"),
      await metric(url, "tidemark_flush_events_sum"),
    ];
    const redisStats = env.REDIS_URL ? new Redis(env.REDIS_URL) : undefined;
    if (redisStats) stops.unshift(async () => redisStats.disconnect());
    await redisStats?.config("RESETSTAT");
    const loadBefore = loadavg()[0]!;
    const result = await load(`${url}${PATH}`, keys, DURATION_S);
    const after = ticks(pid);
    const extraAfter = extra.map((e) => processTicks(e.pid));
    const perRequest = (t: number) => ((t * TICK_US) / Math.max(1, result.requests)).toFixed(0);
    let detail = `JS thread ${perRequest(after.js - before.js)}, other threads ${perRequest(after.all - before.all - (after.js - before.js))}`;
    extra.forEach((e, i) => {
      detail += `, ${e.name} ${perRequest(extraAfter[i]! - extraBefore[i]!)}`;
    });
    if (redisStats) {
      // Every process's scripts (the api's enqueues and limits, the worker's), over the api's requests.
      const scripts = commandStats(await redisStats.info("commandstats"), "evalsha");
      detail += ` | redis scripts ${(scripts.calls / Math.max(1, result.requests)).toFixed(2)} a request, ${scripts.usecPerCall.toFixed(0)} µs each`;
    }
    if (PIPELINE === "embedded") {
      const commits = (await metric(url, "tidemark_flush_events_count")) - commits0;
      const events = (await metric(url, "tidemark_flush_events_sum")) - events0;
      detail += ` | ${commits} commits, ${(events / commits).toFixed(1)} events each`;
    }
    return `| ${build.label} | ${Math.round(result.rps)} | ${Math.round(result.eventsPerSecond)} | ${result.p50.toFixed(1)} | ${result.p99.toFixed(1)} | ${result.non2xx + result.errors} | ${perRequest(after.all - before.all)} | ${detail} | ${loadBefore.toFixed(1)} → ${loadavg()[0]!.toFixed(1)} |`;
  } finally {
    for (const stop of stops) await stop();
    if (database) {
      await admin!.query(`DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`).catch(() => undefined);
      await admin!.end();
    }
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/** A command's calls and µs a call in Redis's `INFO commandstats`. */
function commandStats(info: string, command: string): { calls: number; usecPerCall: number } {
  const line = info.split("\n").find((l) => l.startsWith(`cmdstat_${command}:`)) ?? "";
  const field = (name: string) => Number(new RegExp(`${name}=([0-9.]+)`).exec(line)?.[1] ?? 0);
  return { calls: field("calls"), usecPerCall: field("usec_per_call") };
}

function adminUrl(): string {
  if (!process.env.DATABASE_URL || !process.env.REDIS_URL)
    throw new Error('set DATABASE_URL (and REDIS_URL): eval "$(bash scripts/services.sh env)"');
  const url = new URL(process.env.DATABASE_URL);
  url.pathname = "/postgres";
  return url.toString();
}

async function main(): Promise<void> {
  if (PIPELINE === "async") adminUrl();
  const builds = (args.build ?? ["dist"]).map(parseBuild);
  console.log(
    `${PIPELINE}, ${args.body}${SIZE > 1 ? ` of ${SIZE}` : ""}, ${RATE > 0 ? `${RATE} requests/s offered` : "closed loop"}, ${CONNECTIONS} connections, ${DURATION_S} s per run`,
  );
  const processLabel = PIPELINE === "async" ? "api process" : "server";
  for (let round = 1; round <= Number(args.rounds); round++) {
    console.log(
      `\nround ${round}\n| build | req/s | events/s | P50 ms | P99 ms | failed | ${processLabel} CPU µs/req | of which | load avg |`,
    );
    console.log("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |");
    const noop = await startNoopServer();
    const keys = ["x"];
    const loadBefore = loadavg()[0]!;
    const result = await load(noop.url, keys, DURATION_S);
    noop.close();
    console.log(
      `| no-op | ${Math.round(result.rps)} | ${Math.round(result.eventsPerSecond)} | ${result.p50.toFixed(1)} | ${result.p99.toFixed(1)} | ${result.non2xx + result.errors} | | | ${loadBefore.toFixed(1)} → ${loadavg()[0]!.toFixed(1)} |`,
    );
    for (const build of builds) console.log(await runBuild(build));
  }
}

await main();

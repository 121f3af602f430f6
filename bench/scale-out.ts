/**
 * Scale-out of the async pipeline on this machine: N api processes behind one HAProxy and M worker
 * processes, on the shared Postgres and Redis (a database and a Redis prefix of its own). It
 * measures, for each (N, M), the events/s each api acknowledges and each worker stores, and the CPU
 * each process spent doing it (from /proc), so that what one core of each role does can be carried
 * to a cluster: on 2 cores shared with the load generator, the machine runs out before the
 * architecture does, and events per CPU-second is the figure that stays comparable.
 *
 * Two kinds of run, each bounded by --duration (at most 20 s):
 *   - steady: N apis behind HAProxy and M workers at once, autocannon closed loop with batches of
 *     --size events; ingest = 202s from the apis, stored = rows Postgres gained during the run;
 *   - drain: the apis stopped, a backlog already in the stream, M workers alone: how fast M
 *     workers and Postgres store, and what Postgres's backends spend per event.
 * Postgres CPU counts only the backends of this run's database (pg_stat_activity), so other work
 * on the shared server does not inflate it; Redis CPU is the whole server's (INFO cpu), shared.
 * The load average is printed beside every run.
 *
 *   npm run build && eval "$(bash scripts/services.sh env)"
 *   node --import tsx bench/scale-out.ts [--steady 1x1,2x2,3x3] [--drain 1,2,3] [--duration 15]
 *     [--connections 48] [--size 20]
 *
 * Needs haproxy (Debian: apt-get install haproxy). Method and results: benchmarks/README.md,
 * section "Scale-out (async)".
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Redis } from "ioredis";
import pg from "pg";
import { runLoad, SAMPLE_PROPERTIES } from "./load.js";

const { values: args } = parseArgs({
  options: {
    steady: { type: "string", default: "1x1,2x2,3x3" },
    drain: { type: "string", default: "1,2,3" },
    duration: { type: "string", default: "15" },
    connections: { type: "string", default: "48" },
    size: { type: "string", default: "20" },
    keys: { type: "string", default: "50" },
  },
});
const DURATION_S = Math.min(20, Number(args.duration));
const CONNECTIONS = Number(args.connections);
const SIZE = Number(args.size);
const STEADY = args.steady
  .split(",")
  .filter(Boolean)
  .map((pair) => pair.split("x").map(Number) as [number, number]);
const DRAIN = args.drain.split(",").filter(Boolean).map(Number);
const ROOT = new URL("..", import.meta.url).pathname;
const TOKEN = "bench-secret-token-0123456789";
const DATABASE_URL = process.env.DATABASE_URL ?? "";
const REDIS_URL = process.env.REDIS_URL ?? "";
if (!DATABASE_URL || !REDIS_URL)
  throw new Error('set DATABASE_URL and REDIS_URL: eval "$(bash scripts/services.sh env)"');
if (spawnSync("haproxy", ["-v"]).status !== 0) throw new Error("haproxy not found: apt-get install haproxy");
const RUN_ID = randomBytes(3).toString("hex");
const PREFIX = `bench-scale-${RUN_ID}:`;
const STREAM = `${PREFIX}{events}`;
const CLK_TCK = Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout.trim()) || 100;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** CPU seconds (user + system) a process has used so far, or undefined once it is gone. */
function cpuSeconds(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  } catch {
    return undefined;
  }
}

const loadAverage = () => readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => resolve(typeof address === "object" && address ? address.port : 0));
    });
  });
}

interface Role {
  name: string;
  child: ChildProcess;
  port: number;
}
const running = new Set<ChildProcess>();

/**
 * True once the worker process `pid` is reading the stream: its Redis connection (named
 * `tidemark-worker-<host>-<pid>-...`, src/backends/redis/redis.stream-consumer.ts) has sent a
 * stream command.
 */
async function reading(redis: Redis, pid: number): Promise<boolean> {
  const clients = String(await redis.client("LIST")).split("\n");
  return clients.some(
    (line) => line.includes(`name=tidemark-worker-`) && line.includes(`-${pid}-`) && /cmd=x/.test(line),
  );
}

async function startRole(
  role: "api" | "worker",
  env: Record<string, string>,
  index: number,
  redis: Redis,
): Promise<Role> {
  const port = await freePort();
  const child = spawn(process.execPath, [join(ROOT, "dist/cli.js"), "serve", "--role", role], {
    env: { ...process.env, ...env, PORT: String(port), HOST: "127.0.0.1", TIDEMARK_LOG_LEVEL: "warn" },
    stdio: ["ignore", "inherit", "inherit"],
  });
  running.add(child);
  child.once("exit", () => running.delete(child));
  const name = `${role} ${index + 1}`;
  for (let i = 0; i < 300; i++) {
    // A worker has started once it reads the stream; an api once it answers /health.
    if (role === "worker" && child.pid && (await reading(redis, child.pid))) return { name, child, port };
    if (role === "api") {
      try {
        if ((await fetch(`http://127.0.0.1:${port}/health`)).ok) return { name, child, port };
      } catch {
        // not listening yet
      }
    }
    await sleep(100);
  }
  throw new Error(`${name} did not start`);
}

function stop(processes: ChildProcess[]): Promise<void> {
  return Promise.all(
    processes.map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once("exit", () => resolve());
          child.kill("SIGTERM");
        }),
    ),
  ).then(() => undefined);
}

/** HAProxy in front of the apis: round robin, keep-alive, /ready checks as Kubernetes probes, one thread. */
async function startHaproxy(apis: Role[], dir: string): Promise<{ url: string; child: ChildProcess }> {
  const port = await freePort();
  const config = join(dir, `haproxy-${apis.length}.cfg`);
  writeFileSync(
    config,
    [
      "global",
      "  maxconn 4096",
      "  nbthread 1",
      "defaults",
      "  mode http",
      "  timeout connect 2s",
      "  timeout client 30s",
      "  timeout server 30s",
      // As the api's readinessProbe in deploy/k8s (every 5 s, 3 s timeout, out after 2 failures):
      // with a 1 s check, a saturated api missed it and was taken out mid-run.
      "  timeout check 3s",
      "  default-server inter 5s fall 2 rise 1",
      "  option http-keep-alive",
      "frontend tidemark",
      `  bind 127.0.0.1:${port}`,
      "  default_backend apis",
      "backend apis",
      "  balance roundrobin",
      "  option httpchk GET /ready",
      "  http-check expect status 200",
      ...apis.map((api, i) => `  server api${i + 1} 127.0.0.1:${api.port} check`),
      "",
    ].join("\n"),
  );
  const child = spawn("haproxy", ["-f", config, "-db"], { stdio: ["ignore", "ignore", "inherit"] });
  running.add(child);
  child.once("exit", () => running.delete(child));
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 100; i++) {
    try {
      if ((await fetch(`${url}/ready`)).ok) return { url, child };
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  throw new Error("haproxy did not start");
}

const sample = () => ({
  event: "Page View",
  distinct_id: `user_${Math.floor(Math.random() * 1e6)}`,
  properties: SAMPLE_PROPERTIES,
});

/** CPU seconds of each named process, of this run's Postgres backends, and of Redis, over a run. */
async function cpuMeter(
  processes: Role[],
  extra: [string, number][],
  db: pg.Client,
  redis: Redis,
  dbName: string,
) {
  const backends = async () =>
    (
      await db.query<{ pid: number }>(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        [dbName],
      )
    ).rows.map((r) => r.pid);
  const redisCpu = async () => {
    const info = await redis.info("cpu");
    const read = (key: string) => Number(new RegExp(`${key}:([0-9.]+)`).exec(info)?.[1] ?? 0);
    return read("used_cpu_user") + read("used_cpu_sys");
  };
  const named: [string, number][] = [
    ...processes.map((p): [string, number] => [p.name, p.child.pid ?? 0]),
    ...extra,
  ];
  const startPids = await backends();
  const start = new Map<number, number>();
  for (const pid of [...startPids, ...named.map(([, pid]) => pid)]) start.set(pid, cpuSeconds(pid) ?? 0);
  const startRedis = await redisCpu();
  const startSelf = process.cpuUsage();
  const startedAt = performance.now();
  return {
    async stop() {
      const seconds = (performance.now() - startedAt) / 1000;
      const used = (pid: number) => (cpuSeconds(pid) ?? start.get(pid) ?? 0) - (start.get(pid) ?? 0);
      const self = process.cpuUsage(startSelf);
      const pids = new Set([...startPids, ...(await backends())]);
      return {
        seconds,
        perProcess: new Map(named.map(([name, pid]) => [name, used(pid)])),
        postgres: [...pids].reduce((sum, pid) => sum + used(pid), 0),
        redis: (await redisCpu()) - startRedis,
        loadGenerator: (self.user + self.system) / 1e6,
      };
    },
  };
}

/** The cluster's WAL position (bytes) and the rows other databases inserted so far (to judge it). */
async function walMark(db: pg.Client, dbName: string): Promise<{ wal: bigint; othersInserted: number }> {
  const { rows } = await db.query<{ wal: string; others: string }>(
    `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::text AS wal,
            (SELECT coalesce(sum(tup_inserted), 0) FROM pg_stat_database WHERE datname <> $1)::text AS others`,
    [dbName],
  );
  return { wal: BigInt(rows[0]!.wal.split(".")[0]!), othersInserted: Number(rows[0]!.others) };
}

/** Bytes on disk per stored event: the events table (every partition) and event_keys, with indexes. */
async function bytesPerEvent(db: pg.Client): Promise<{ events: number; keys: number; rows: number }> {
  const { rows } = await db.query<{ events: string; keys: string; n: string }>(
    `SELECT (SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits
              WHERE inhparent = 'events'::regclass)::text AS events,
            pg_total_relation_size('event_keys')::text AS keys,
            (SELECT count(*) FROM events)::text AS n`,
  );
  const n = Number(rows[0]!.n);
  return { events: Number(rows[0]!.events) / n, keys: Number(rows[0]!.keys) / n, rows: n };
}

async function storedCount(db: pg.Client): Promise<number> {
  return Number((await db.query("SELECT count(*) AS n FROM events")).rows[0].n);
}

async function backlog(redis: Redis): Promise<number> {
  return Number((await redis.get(`${STREAM}:backlog`)) ?? 0);
}

async function waitForDrain(redis: Redis, limitMs: number): Promise<boolean> {
  const deadline = Date.now() + limitMs;
  while (Date.now() < deadline) {
    if ((await backlog(redis)) === 0) return true;
    await sleep(200);
  }
  return false;
}

const fmt = (n: number, digits = 0) =>
  n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "tidemark-scale-"));
  const base = new URL(DATABASE_URL);
  const dbName = `${base.pathname.slice(1)}_scale_${RUN_ID}`;
  const admin = new URL(DATABASE_URL);
  admin.pathname = "/postgres";
  const adminClient = new pg.Client({ connectionString: admin.toString() });
  await adminClient.connect();
  await adminClient.query(`CREATE DATABASE "${dbName}"`);
  const dbUrl = new URL(DATABASE_URL);
  dbUrl.pathname = `/${dbName}`;
  const env = {
    TIDEMARK_PIPELINE: "async",
    DATABASE_URL: dbUrl.toString(),
    REDIS_URL,
    TIDEMARK_REDIS_PREFIX: PREFIX,
    SECRET_TOKEN: TOKEN,
  };
  const redis = new Redis(REDIS_URL);
  const db = new pg.Client({ connectionString: dbUrl.toString() });
  const rows: string[] = [];
  const drainRows: string[] = [];
  const walRows: string[] = [];
  const memoryRows: string[] = [];
  console.log(
    `Tidemark async scale-out: ${DURATION_S} s per run, ${CONNECTIONS} connections, batches of ${SIZE}; ` +
      `database ${dbName}, Redis prefix ${PREFIX}; load average at start ${loadAverage()}`,
  );
  try {
    // Projects (ENTERPRISE, keys used in turn) through a first api, which the runs reuse.
    const apis: Role[] = [await startRole("api", env, 0, redis)];
    await db.connect();
    const keys: string[] = [];
    for (let i = 0; i < Number(args.keys); i++) {
      const response = await fetch(`http://127.0.0.1:${apis[0]!.port}/api/v1/project`, {
        method: "POST",
        headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
        body: JSON.stringify({ name: `scale ${i}`, plan: "ENTERPRISE" }),
      });
      keys.push(((await response.json()) as { api_key: string }).api_key);
    }
    const body = JSON.stringify({ events: Array.from({ length: SIZE }, sample) });
    const workers: Role[] = [];
    const scaleTo = async (list: Role[], role: "api" | "worker", n: number) => {
      // Started together, so that in a drain run they begin storing at about the same moment.
      const starting: Promise<Role>[] = [];
      for (let i = list.length; i < n; i++) starting.push(startRole(role, env, i, redis));
      list.push(...(await Promise.all(starting)));
      while (list.length > n) await stop([list.pop()!.child]);
    };

    for (const [n, m] of STEADY) {
      await scaleTo(apis, "api", n);
      await scaleTo(workers, "worker", m);
      if (!(await waitForDrain(redis, 30_000))) console.log("backlog left from the previous run");
      const haproxy = await startHaproxy(apis, dir);
      const before = await storedCount(db);
      const walBefore = await walMark(db, dbName);
      const loadBefore = loadAverage();
      const meter = await cpuMeter(
        [...apis, ...workers],
        [["haproxy", haproxy.child.pid ?? 0]],
        db,
        redis,
        dbName,
      );
      const result = await runLoad({
        name: `${n} api x ${m} worker`,
        url: `${haproxy.url}/api/v1/event/batch`,
        body,
        eventsPerRequest: SIZE,
        keys,
        connections: CONNECTIONS,
        durationS: DURATION_S,
      });
      const cpu = await meter.stop();
      const stored = (await storedCount(db)) - before;
      const walAfter = await walMark(db, dbName);
      walRows.push(
        `${n} api x ${m} worker: ${fmt(Number(walAfter.wal - walBefore.wal) / Math.max(stored, 1))} WAL bytes per stored event ` +
          `(cluster-wide; other databases inserted ${fmt(walAfter.othersInserted - walBefore.othersInserted)} rows meanwhile, this run ${fmt(stored)})`,
      );
      const loadAfter = loadAverage();
      await stop([haproxy.child]);
      const apiCpu = apis.reduce((s, a) => s + (cpu.perProcess.get(a.name) ?? 0), 0);
      const workerCpu = workers.reduce((s, w) => s + (cpu.perProcess.get(w.name) ?? 0), 0);
      const ingest = result.eventsPerSecond;
      const storedPerS = stored / cpu.seconds;
      const line =
        `| ${n} | ${m} | ${fmt(ingest)} | ${fmt(ingest / n)} | ${fmt(storedPerS)} | ${fmt(m > 0 ? storedPerS / m : 0)} | ` +
        `${fmt(result.p50)} / ${fmt(result.p99)} | ${fmt(apiCpu / cpu.seconds / n, 2)} | ${fmt(workerCpu / cpu.seconds / Math.max(m, 1), 2)} | ` +
        `${fmt((ingest * cpu.seconds) / Math.max(apiCpu, 0.001))} | ${fmt((stored / Math.max(workerCpu, 0.001)) * 1)} | ` +
        `${fmt(stored / Math.max(cpu.postgres, 0.001))} | ${fmt(cpu.postgres / cpu.seconds, 2)} | ${fmt(cpu.redis / cpu.seconds, 2)} | ` +
        `${fmt((cpu.perProcess.get("haproxy") ?? 0) / cpu.seconds, 2)} | ${fmt(cpu.loadGenerator / cpu.seconds, 2)} | ` +
        `${result.non2xx}/${result.errors} | ${loadBefore} → ${loadAfter} |`;
      rows.push(line);
      console.log(line);
    }

    // Drain: the apis fill a backlog with no worker running, then M workers alone store it.
    for (const m of DRAIN) {
      await scaleTo(workers, "worker", 0);
      await scaleTo(apis, "api", 1);
      await waitForDrain(redis, 5_000);
      const fill = await runLoad({
        name: "fill",
        url: `http://127.0.0.1:${apis[0]!.port}/api/v1/event/batch`,
        body,
        eventsPerRequest: SIZE,
        keys,
        connections: CONNECTIONS,
        durationS: DURATION_S,
      });
      await scaleTo(apis, "api", 0);
      const waiting = await backlog(redis);
      const entries = await redis.xlen(STREAM);
      const streamBytes = Number(await redis.memory("USAGE", STREAM, "SAMPLES", "0"));
      memoryRows.push(
        `stream of ${fmt(entries)} entries (${fmt(waiting)} events): ${fmt(streamBytes / 1048576, 1)} MiB, ` +
          `${fmt(streamBytes / Math.max(entries, 1))} bytes per entry, ${fmt(streamBytes / Math.max(waiting, 1))} per event`,
      );
      const loadBefore = loadAverage();
      // Workers start (connect, join the group) before the clock: the measure is storing, not start-up.
      await scaleTo(workers, "worker", m);
      const meter = await cpuMeter(workers, [], db, redis, dbName);
      const start = performance.now();
      const startBacklog = await backlog(redis);
      while (performance.now() - start < DURATION_S * 1000 && (await backlog(redis)) > 0) await sleep(100);
      const cpu = await meter.stop();
      const left = await backlog(redis);
      const stored = startBacklog - left;
      const loadAfter = loadAverage();
      const workerCpu = workers.reduce((s, w) => s + (cpu.perProcess.get(w.name) ?? 0), 0);
      const line =
        `| ${m} | ${fmt(waiting)} | ${fmt(stored / cpu.seconds)} | ${fmt(stored / cpu.seconds / m)} | ` +
        `${fmt(workerCpu / cpu.seconds / m, 2)} | ${fmt(stored / Math.max(workerCpu, 0.001))} | ` +
        `${fmt(stored / Math.max(cpu.postgres, 0.001))} | ${fmt(cpu.postgres / cpu.seconds, 2)} | ` +
        `${fmt(cpu.seconds, 1)}${left > 0 ? ` (${fmt(left)} left)` : ""} | ${loadBefore} → ${loadAfter} |`;
      drainRows.push(line);
      console.log(`fill: ${fmt(fill.eventsPerSecond)} events/s; ${line}`);
    }
    await scaleTo(workers, "worker", 0);

    console.log(
      "\nSteady: N apis behind HAProxy and M workers at once (events/s; CPU in cores, i.e. CPU-seconds per second)\n",
    );
    console.log(
      "| N api | M worker | ingest events/s | per api | stored events/s | per worker | P50 / P99 ms | CPU per api | CPU per worker | " +
        "events per api CPU-s | events per worker CPU-s | events per Postgres CPU-s | Postgres CPU | Redis CPU | HAProxy CPU | load generator CPU | non-2xx/errors | load average (1, 5, 15 min) before → after |",
    );
    console.log(`|${" ---: |".repeat(18)}`);
    for (const row of rows) console.log(row);
    console.log("\nDrain: M workers alone on a backlog (no api running)\n");
    console.log(
      "| M worker | backlog events | stored events/s | per worker | CPU per worker | events per worker CPU-s | " +
        "events per Postgres CPU-s | Postgres CPU | seconds | load average before → after |",
    );
    console.log(`|${" ---: |".repeat(10)}`);
    for (const row of drainRows) console.log(row);
    console.log("\nPostgres WAL per stored event (steady runs)");
    for (const row of walRows) console.log(`- ${row}`);
    const disk = await bytesPerEvent(db);
    console.log(
      `\nPostgres on disk after the runs (${fmt(disk.rows)} events): events ${fmt(disk.events)} bytes per event, ` +
        `event_keys ${fmt(disk.keys)}, in all ${fmt(disk.events + disk.keys)} (tables and their indexes)`,
    );
    console.log("\nRedis memory of the ingest stream (MEMORY USAGE ... SAMPLES 0) after each fill");
    for (const row of memoryRows) console.log(`- ${row}`);
  } finally {
    await stop([...running]);
    await db.end().catch(() => undefined);
    const left = await redis.keys(`${PREFIX}*`);
    if (left.length > 0) await redis.del(...left);
    redis.disconnect();
    await adminClient.query(`DROP DATABASE IF EXISTS "${dbName}" WITH (FORCE)`);
    await adminClient.end();
    rmSync(dir, { recursive: true, force: true });
  }
}

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    for (const child of running) child.kill("SIGTERM");
    process.exit(1);
  });
}
await main();

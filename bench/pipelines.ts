/**
 * Stage 1 (sync), Stage 2 (async) and Stage 3 (cdc) ingest benchmark: a closed loop (autocannon) or
 * an evenly paced rate (`--rate`, bench/load.ts) against Tidemark processes of the built CLI on
 * this machine's Postgres and Redis (scripts/services.sh), beside a no-op HTTP server measured in
 * the same run with the same load generator. For async it samples the worker lag (stream length,
 * pending entries, events not yet stored) during the run and measures how long the worker takes
 * to drain after it; for both it checks that every acknowledged event is stored.
 * For cdc (every role in its own process: api, worker, cdc, sink) it also measures the end-to-end
 * visibility lag with probe events (one every 100 ms on their own project: from the 202 until the
 * uuid is in ClickHouse), the drain time, and the peak RSS of every Tidemark process and service.
 * Method and results: benchmarks/README.md, sections "Stage 1 and 2 (sync, async)" and "Stage 3".
 *
 *   npm run build && eval "$(bash scripts/services.sh env)"
 *   node --import tsx bench/pipelines.ts --pipeline async [--duration 30] [--connections 50]
 *     [--workers 1] [--rate <requests/s, evenly spaced; default: closed loop>] [--size 20] [--only single|batch]
 *     [--warmup 5: seconds of the same load before each measured run, not recorded]
 *     [--cpu-prof <dir>: each Tidemark process writes a V8 CPU profile there when it stops]
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Redis } from "ioredis";
import pg from "pg";
import { type LoadResult, runLoad, SAMPLE_PROPERTIES, startNoopServer } from "./load.js";
import { startRssSampler } from "./rss-sampler.js";

const { values: args } = parseArgs({
  options: {
    pipeline: { type: "string", default: "async" },
    duration: { type: "string", default: "30" },
    warmup: { type: "string", default: "5" },
    connections: { type: "string", default: "50" },
    workers: { type: "string", default: "1" },
    sinks: { type: "string", default: "1" },
    keys: { type: "string", default: "50" },
    only: { type: "string", default: "" },
    rate: { type: "string", default: "0" },
    size: { type: "string", default: "20" },
    "keep-db": { type: "boolean", default: false },
    "cpu-prof": { type: "string", default: "" },
  },
});
const PIPELINE = args.pipeline === "sync" ? "sync" : args.pipeline === "cdc" ? "cdc" : "async";
const QUEUED = PIPELINE !== "sync";
const DURATION_S = Number(args.duration);
/** Seconds of the same load before each measured run, not recorded: a just-started server is not what the targets are about. */
const WARMUP_S = Number(args.warmup);
const CONNECTIONS = Number(args.connections);
const WORKERS = Number(args.workers);
/** Requests per second across all connections (0: as fast as the server answers, closed loop). */
const RATE = Number(args.rate);
const BATCH_SIZE = Number(args.size);
const ROOT = new URL("..", import.meta.url).pathname;
const TOKEN = "bench-secret-token-0123456789";
const DATABASE_URL = process.env.DATABASE_URL ?? "";
const REDIS_URL = process.env.REDIS_URL ?? "";
if (!DATABASE_URL || !REDIS_URL)
  throw new Error('set DATABASE_URL and REDIS_URL: eval "$(bash scripts/services.sh env)"');
const RUN_ID = randomBytes(3).toString("hex");
const PREFIX = `bench-${RUN_ID}:`;
const KAFKA_BROKERS = process.env.KAFKA_BROKERS ?? "";
const CLICKHOUSE_URL = process.env.CLICKHOUSE_URL ?? "";
if (PIPELINE === "cdc" && (!KAFKA_BROKERS || !CLICKHOUSE_URL))
  throw new Error('set KAFKA_BROKERS and CLICKHOUSE_URL: eval "$(bash scripts/services.sh env)"');
const CDC = {
  TIDEMARK_CDC_SLOT: `bench_${RUN_ID}`,
  TIDEMARK_CDC_PUBLICATION: `bench_${RUN_ID}`,
  TIDEMARK_KAFKA_TOPIC: `bench-${RUN_ID}`,
  TIDEMARK_KAFKA_GROUP: `bench-${RUN_ID}`,
  TIDEMARK_CLICKHOUSE_DATABASE: `bench_${RUN_ID}`,
  KAFKA_BROKERS,
  CLICKHOUSE_URL,
};

const children: ChildProcess[] = [];

async function startRole(role: string, env: Record<string, string>, port: number): Promise<void> {
  const profile = args["cpu-prof"]
    ? [
        "--cpu-prof",
        `--cpu-prof-dir=${args["cpu-prof"]}`,
        `--cpu-prof-name=${role}-${children.length}.cpuprofile`,
      ]
    : [];
  const child = spawn(process.execPath, [...profile, join(ROOT, "dist/cli.js"), "serve", "--role", role], {
    env: { ...process.env, ...env, PORT: String(port), HOST: "127.0.0.1", TIDEMARK_LOG_LEVEL: "warn" },
    stdio: ["ignore", "inherit", "inherit"],
  });
  children.push(child);
  if (role !== "api") {
    await new Promise((resolve) => setTimeout(resolve, PIPELINE === "cdc" ? 4000 : 1500));
    return;
  }
  for (let i = 0; i < 300; i++) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}/health`)).ok) return;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  throw new Error(`${role} did not start`);
}

async function stopAll(): Promise<void> {
  await Promise.all(
    children.map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null) return resolve();
          child.once("exit", () => resolve());
          child.kill("SIGTERM");
        }),
    ),
  );
}

const sample = () => ({
  event: "Page View",
  distinct_id: `user_${Math.floor(Math.random() * 1e6)}`,
  properties: SAMPLE_PROPERTIES,
});

interface LagPoint {
  t: number;
  stream: number;
  pending: number;
  backlog: number;
}

/** Samples the ingest stream every 500 ms: entries, entries read but not acked, events not stored. */
function sampleLag(redis: Redis): { points: LagPoint[]; stop(): void } {
  const points: LagPoint[] = [];
  const started = Date.now();
  const stream = `${PREFIX}{events}`;
  const timer = setInterval(async () => {
    try {
      const [length, pending, backlog] = await Promise.all([
        redis.xlen(stream),
        redis.xpending(stream, "workers") as Promise<[number, ...unknown[]]>,
        redis.get(`${stream}:backlog`),
      ]);
      points.push({
        t: (Date.now() - started) / 1000,
        stream: length,
        pending: Number(pending[0]),
        backlog: Number(backlog ?? 0),
      });
    } catch {
      // the stream may not exist yet
    }
  }, 500);
  return { points, stop: () => clearInterval(timer) };
}

/** One ClickHouse statement over HTTP; the answer's text. */
async function clickhouse(sql: string): Promise<string> {
  const response = await fetch(new URL("/", CLICKHOUSE_URL), { method: "POST", body: sql });
  const text = await response.text();
  if (!response.ok) throw new Error(`clickhouse: ${text.slice(0, 200)}`);
  return text;
}

const clickhouseCount = async () =>
  Number((await clickhouse(`SELECT uniqExact(uuid) FROM bench_${RUN_ID}.events`)).trim() || 0);

/**
 * End-to-end visibility lag: one probe event every 100 ms on its own project, timed from its 202
 * until its uuid is in ClickHouse (polled every 50 ms).
 */
function startProbes(
  url: string,
  key: string,
  projectId: string,
): { stop(): void; lags(limitMs: number): Promise<number[]> } {
  const pending = new Map<string, number>();
  const lags: number[] = [];
  let sending = true;
  const sender = (async () => {
    while (sending) {
      const uuid = crypto.randomUUID();
      try {
        const response = await fetch(`${url}/api/v1/event`, {
          method: "POST",
          headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
          body: JSON.stringify({ event: "Probe", distinct_id: "probe", uuid }),
        });
        if (response.status === 202) pending.set(uuid, Date.now());
      } catch {
        // counted by the main load's errors
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  })();
  let polling = true;
  const poller = (async () => {
    while (polling) {
      const uuids = [...pending.keys()];
      if (uuids.length > 0) {
        try {
          const found = await clickhouse(
            // The probes' project leads the table's key, so this reads a few granules, not the table.
            `SELECT DISTINCT uuid FROM bench_${RUN_ID}.events WHERE project_id = '${projectId}' AND event = 'Probe' AND uuid IN (${uuids.map((u) => `'${u}'`).join(",")})`,
          );
          const now = Date.now();
          for (const uuid of found.split("\n").filter(Boolean)) {
            const sent = pending.get(uuid);
            if (sent !== undefined) {
              lags.push(now - sent);
              pending.delete(uuid);
            }
          }
        } catch {
          // the table may not exist yet
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  })();
  return {
    stop() {
      sending = false;
    },
    async lags(limitMs) {
      sending = false;
      await sender;
      const deadline = Date.now() + limitMs;
      while (pending.size > 0 && Date.now() < deadline)
        await new Promise((resolve) => setTimeout(resolve, 100));
      polling = false;
      await poller;
      if (pending.size > 0) console.log(`${pending.size} probe events not visible after ${limitMs} ms`);
      return lags;
    },
  };
}

async function main(): Promise<void> {
  const base = new URL(DATABASE_URL);
  const dbName = `${base.pathname.slice(1)}_bench_${randomBytes(3).toString("hex")}`;
  const admin = new URL(DATABASE_URL);
  admin.pathname = "/postgres";
  const adminClient = new pg.Client({ connectionString: admin.toString() });
  await adminClient.connect();
  await adminClient.query(`CREATE DATABASE "${dbName}"`);
  const dbUrl = new URL(DATABASE_URL);
  dbUrl.pathname = `/${dbName}`;
  const env = {
    TIDEMARK_PIPELINE: PIPELINE,
    DATABASE_URL: dbUrl.toString(),
    REDIS_URL,
    TIDEMARK_REDIS_PREFIX: PREFIX,
    SECRET_TOKEN: TOKEN,
    ...(PIPELINE === "cdc" ? CDC : {}),
  };
  const redis = new Redis(REDIS_URL);
  const db = new pg.Client({ connectionString: dbUrl.toString() });
  console.log(
    `Tidemark ${PIPELINE} bench: ${DURATION_S} s per run, ${CONNECTIONS} connections` +
      (RATE > 0 ? `, ${RATE} requests/s offered` : ", closed loop") +
      (PIPELINE === "async"
        ? `, 1 api process + ${WORKERS} worker process(es)`
        : PIPELINE === "cdc"
          ? `, 1 api + ${WORKERS} worker + 1 cdc + ${args.sinks} sink process(es)`
          : ", 1 api process"),
  );
  try {
    const apiPort = 19000 + Math.floor(Math.random() * 1000);
    await startRole("api", env, apiPort);
    if (QUEUED) for (let i = 0; i < WORKERS; i++) await startRole("worker", env, 0);
    if (PIPELINE === "cdc") {
      await startRole("cdc", env, 0);
      for (let i = 0; i < Number(args.sinks); i++) await startRole("sink", env, 0);
    }
    const port = (u: string) => Number(new URL(u.includes("://") ? u : `tcp://${u}`).port);
    const rss = startRssSampler([
      ...children.map((c, i) => ({
        name: `tidemark ${i === 0 ? "api" : `role ${i}`} (pid ${c.pid})`,
        pid: c.pid,
      })),
      { name: "postgres", port: port(DATABASE_URL) },
      { name: "redis", port: port(REDIS_URL) },
      ...(PIPELINE === "cdc"
        ? [
            { name: "kafka", port: port(KAFKA_BROKERS.split(",")[0] ?? "") },
            { name: "clickhouse", port: port(CLICKHOUSE_URL) },
          ]
        : []),
    ]);
    await db.connect();
    const url = `http://127.0.0.1:${apiPort}`;
    const keys: string[] = [];
    for (let i = 0; i < Number(args.keys); i++) {
      const response = await fetch(`${url}/api/v1/project`, {
        method: "POST",
        headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
        body: JSON.stringify({ name: `bench ${i}`, plan: "ENTERPRISE" }),
      });
      keys.push(((await response.json()) as { api_key: string }).api_key);
    }
    let probeKey = "";
    let probeProject = "";
    if (PIPELINE === "cdc") {
      const response = await fetch(`${url}/api/v1/project`, {
        method: "POST",
        headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
        body: JSON.stringify({ name: "bench probes", plan: "ENTERPRISE" }),
      });
      const probe = (await response.json()) as { id: string; api_key: string };
      probeKey = probe.api_key;
      probeProject = probe.id;
    }
    let probed = 0;
    const noop = await startNoopServer();
    const scenarios: [string, string, string, number][] = [
      ["single", "/api/v1/event", JSON.stringify(sample()), 1],
      [
        "batch",
        "/api/v1/event/batch",
        JSON.stringify({ events: Array.from({ length: BATCH_SIZE }, sample) }),
        BATCH_SIZE,
      ],
    ];
    const results: LoadResult[] = [];
    let acknowledged = 0;
    const options = (name: string, target: string, body: string, eventsPerRequest: number) => ({
      name,
      url: target,
      body,
      eventsPerRequest,
      keys,
      connections: CONNECTIONS,
      rate: RATE,
    });
    /** The same load for WARMUP_S, not recorded; the events Tidemark acknowledged are counted. */
    const warmUp = async (target: string, body: string, eventsPerRequest: number) => {
      if (WARMUP_S <= 0) return;
      const warm = await runLoad({
        ...options("warm-up", target, body, eventsPerRequest),
        durationS: WARMUP_S,
      });
      if (target !== noop.url) acknowledged += warm.ok * eventsPerRequest;
    };
    const load = (name: string, target: string, body: string, eventsPerRequest: number) =>
      runLoad({ ...options(name, target, body, eventsPerRequest), durationS: DURATION_S });
    for (const [kind, path, body, events] of scenarios) {
      if (args.only && args.only !== kind) continue;
      await warmUp(noop.url, body, events);
      results.push(await load(`no-op server, ${kind} body`, noop.url, body, events));
      await warmUp(`${url}${path}`, body, events);
      const lag = sampleLag(redis);
      const probes = PIPELINE === "cdc" ? startProbes(url, probeKey, probeProject) : undefined;
      const result = await load(
        `Tidemark ${PIPELINE} POST ${path}${events > 1 ? ` (${events})` : ""}`,
        `${url}${path}`,
        body,
        events,
      );
      results.push(result);
      acknowledged += result.ok * events;
      const loadEnded = Date.now();
      if (probes) {
        const lags = (await probes.lags(120_000)).sort((a, b) => a - b);
        probed += lags.length;
        const at = (p: number) => lags[Math.min(lags.length - 1, Math.floor((p / 100) * lags.length))] ?? 0;
        console.log(
          `\n${result.name}: end-to-end visibility (202 -> in ClickHouse), ${lags.length} probe events: P50 ${at(50)} ms, P90 ${at(90)} ms, P99 ${at(99)} ms, max ${lags[lags.length - 1] ?? 0} ms`,
        );
        for (;;) {
          if ((await clickhouseCount()) >= acknowledged + probed || Date.now() - loadEnded > 300_000) break;
          await new Promise((resolve) => setTimeout(resolve, 200));
        }
        console.log(
          `ClickHouse held every acknowledged event ${((Date.now() - loadEnded) / 1000).toFixed(1)} s after the load stopped`,
        );
      }
      if (QUEUED) {
        // Drain: until every acknowledged event is stored.
        for (;;) {
          const stored = Number((await db.query("SELECT count(*) AS n FROM events")).rows[0].n);
          if (stored >= acknowledged || Date.now() - loadEnded > 300_000) break;
          await new Promise((resolve) => setTimeout(resolve, 200));
        }
        lag.stop();
        const drainS = (Date.now() - loadEnded) / 1000;
        const peak = lag.points.reduce((m, p) => (p.backlog > m.backlog ? p : m), {
          t: 0,
          stream: 0,
          pending: 0,
          backlog: 0,
        });
        console.log(
          `\n${result.name}: worker lag sampled every 0.5 s (t s: stream entries / pending entries / events not stored)`,
        );
        const every = Math.max(1, Math.ceil(lag.points.length / 16));
        console.log(
          lag.points
            .filter((_, i) => i % every === 0)
            .map((p) => `${p.t.toFixed(1)}: ${p.stream}/${p.pending}/${p.backlog}`)
            .join("  "),
        );
        console.log(
          `peak backlog ${peak.backlog} events at ${peak.t.toFixed(1)} s; drained ${drainS.toFixed(1)} s after the load stopped`,
        );
      } else {
        lag.stop();
      }
    }
    noop.close();
    const peaks = await rss.stop();
    console.log("\npeak RSS (MB, process and its children, sampled every second):");
    for (const [name, mb] of peaks) console.log(`  ${name}: ${mb.toFixed(0)}`);
    const stored = Number((await db.query("SELECT count(*) AS n FROM events")).rows[0].n) - probed;
    console.log(
      "\n| run | req/s | events/s | P50 ms | P99 ms | P99.9 ms | max ms | 2xx | non-2xx | errors |",
    );
    console.log("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (const r of results) {
      console.log(
        `| ${r.name} | ${Math.round(r.rps)} | ${Math.round(r.eventsPerSecond)} | ${r.p50} | ${r.p99} | ${r.p999} | ${r.max} | ${r.ok} | ${r.non2xx} | ${r.errors} |`,
      );
    }
    // autocannon stops counting at the end of a run (the warm-up's too) with up to one request per
    // connection in flight: those may be stored without their 202 being counted, never the other
    // way round.
    const inFlight =
      (WARMUP_S > 0 ? 2 : 1) *
      CONNECTIONS *
      scenarios.filter(([kind]) => !args.only || args.only === kind).reduce((n, [, , , e]) => n + e, 0);
    const verdict =
      stored < acknowledged
        ? `LOST ${acknowledged - stored}`
        : stored - acknowledged <= inFlight
          ? `none lost (${stored - acknowledged} stored from requests in flight when the runs ended, at most ${inFlight})`
          : `UNEXPLAINED: ${stored - acknowledged} more stored than acknowledged`;
    console.log(`\nacknowledged events ${acknowledged}, stored ${stored}: ${verdict}`);
    if (PIPELINE === "cdc") {
      const inClickHouse = (await clickhouseCount()) - probed;
      console.log(
        `in ClickHouse (distinct uuids): ${inClickHouse}, ${inClickHouse === stored ? "the same as Postgres" : `Postgres holds ${stored}`}`,
      );
    }
  } finally {
    await stopAll();
    await db.end().catch(() => undefined);
    const keysLeft = await redis.keys(`${PREFIX}*`);
    if (keysLeft.length > 0) await redis.del(...keysLeft);
    redis.disconnect();
    if (PIPELINE === "cdc") {
      const slotDb = new pg.Client({ connectionString: dbUrl.toString() });
      await slotDb.connect().catch(() => undefined);
      await slotDb
        .query("SELECT pg_drop_replication_slot($1)", [CDC.TIDEMARK_CDC_SLOT])
        .catch(() => undefined);
      await slotDb.end().catch(() => undefined);
      if (!args["keep-db"])
        await clickhouse(`DROP DATABASE IF EXISTS bench_${RUN_ID}`).catch(() => undefined);
    }
    if (!args["keep-db"]) await adminClient.query(`DROP DATABASE IF EXISTS "${dbName}" WITH (FORCE)`);
    await adminClient.end();
  }
}

await main();

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { cdcPipelineEnv } from "../helpers/cdc.js";
import {
  dropRedisPrefix,
  ensureFreshBuild,
  requireClickHouse,
  requireKafka,
  requirePostgres,
  requireRedis,
  uniqueRedisPrefix,
} from "../helpers/services.js";

// `make start STAGE=async|cdc`, `make status`, `make stop` as a user runs them (README, "Stages"),
// against the shared services, on ports and folders of this test alone: a developer's server on
// 8000 and their .run/ are left alone. Each stage takes events through its API and answers them
// back from its query store, then `make stop` stops every role and leaves the services up.

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

interface Run {
  code: number | null;
  output: string;
}

/** `make ARGS` in the repository; killed (the run fails) past `limitMs`. */
function make(args: string[], env: NodeJS.ProcessEnv, limitMs = 240_000): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn("make", ["--no-print-directory", ...args], {
      cwd: ROOT,
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.stderr.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    const timer = setTimeout(() => {
      output += `\n(killed after ${limitMs / 1000} s)`;
      child.kill("SIGKILL");
    }, limitMs);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

/** A PORT whose next three ports are free too (worker, cdc and sink take PORT+1..3). */
async function freePortRange(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    // Below Linux's ephemeral range (32768 and up), where other tests' free ports come from.
    const base = 20_000 + Math.floor(Math.random() * 12_000);
    const free = await Promise.all([0, 1, 2, 3].map((i) => portFree(base + i)));
    if (free.every(Boolean)) return base;
  }
  throw new Error("no four free ports in a row");
}

/** The environment of a `make` run: this test's ports and folders, none of the caller's pipeline. */
async function stageEnv(extra: Record<string, string>): Promise<{ env: NodeJS.ProcessEnv; base: number }> {
  const base = await freePortRange();
  const runDir = mkdtempSync(join(tmpdir(), "tidemark-stage-run-"));
  const dataDir = mkdtempSync(join(tmpdir(), "tidemark-stage-data-"));
  cleanups.push(async () => {
    rmSync(runDir, { recursive: true, force: true });
    rmSync(dataDir, { recursive: true, force: true });
  });
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const name of [
    "DATABASE_URL",
    "REDIS_URL",
    "CLICKHOUSE_URL",
    "KAFKA_BROKERS",
    "SECRET_TOKEN",
    "TIDEMARK_PIPELINE",
    "TIDEMARK_ROLE",
    "HOST",
    "STAGE",
  ])
    delete env[name];
  Object.assign(env, {
    PORT: String(base),
    TIDEMARK_RUN_DIR: runDir,
    TIDEMARK_DATA_DIR: dataDir,
    TIDEMARK_LOG_LEVEL: "info",
    ...extra,
  });
  return { env, base };
}

async function call(url: string, key: string, body?: unknown): Promise<{ status: number; body: unknown }> {
  const response = await fetch(url, {
    method: body === undefined ? "GET" : "POST",
    headers: {
      authorization: `Bearer ${key}`,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

/** Polls `check` every 250 ms until it is true; fails past `limitMs`, naming `what`. */
async function eventually(what: string, check: () => Promise<boolean>, limitMs = 90_000): Promise<void> {
  const deadline = Date.now() + limitMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

/**
 * Starts the stage, checks `make status`, every role's ops routes, a round trip of events, and
 * `make stop`. `metricsOf` names a metric each role's /metrics must carry.
 */
async function exerciseStage(
  stage: "async" | "cdc",
  env: NodeJS.ProcessEnv,
  base: number,
  metricsOf: Record<string, RegExp>,
): Promise<void> {
  const roles = Object.keys(metricsOf);
  let stopped = false;
  cleanups.push(async () => {
    if (!stopped) await make(["stop"], env);
  });

  const started = await make(["start", `STAGE=${stage}`], env);
  assert.equal(started.code, 0, started.output);
  for (const role of roles)
    assert.match(started.output, new RegExp(`^ {2}${role} +127\\.0\\.0\\.1:\\d+ +ok +ready`, "m"));
  // No SECRET_TOKEN: the api generated one, kept it in the data dir, and make start printed it.
  const token = readFileSync(join(env.TIDEMARK_DATA_DIR!, "secret_token"), "utf8").trim();
  assert.ok(started.output.includes(`SECRET_TOKEN=${token}`), started.output);

  for (const role of roles) {
    const pid = readFileSync(join(env.TIDEMARK_RUN_DIR!, `${role}.pid`), "utf8").trim();
    assert.match(started.output, new RegExp(`^ {2}${role}: pid ${pid}, `, "m"), `${role}.pid`);
  }

  const status = await make(["status"], env);
  assert.equal(status.code, 0, status.output);
  assert.match(status.output, new RegExp(`^stage ${stage}`, "m"));
  for (const service of stage === "cdc"
    ? ["postgres", "redis", "clickhouse", "kafka"]
    : ["postgres", "redis"]) {
    assert.match(status.output, new RegExp(`^ {2}${service} +\\S+:\\d+ +up +`, "m"), status.output);
  }
  roles.forEach((role, i) => {
    assert.match(
      status.output,
      new RegExp(`^ {2}${role} +127\\.0\\.0\\.1:${base + i} +ok +ready +\\d+`, "m"),
    );
  });

  // Every role answers the ops routes on its own port, the background ones included.
  for (const [i, role] of roles.entries()) {
    const url = `http://127.0.0.1:${base + i}`;
    assert.equal((await fetch(`${url}/health`)).status, 200, role);
    assert.equal((await fetch(`${url}/ready`)).status, 200, role);
    const metrics = await fetch(`${url}/metrics`);
    assert.equal(metrics.status, 200, role);
    const pattern = metricsOf[role];
    if (pattern) assert.match(await metrics.text(), pattern, `${role}'s /metrics`);
  }

  const api = `http://127.0.0.1:${base}`;
  const created = await call(`${api}/api/v1/project`, token, { name: `stage_${stage}`, plan: "ENTERPRISE" });
  assert.equal(created.status, 201);
  const project = created.body as { id: string; api_key: string; read_key: string };
  const events = Array.from({ length: 40 }, (_, i) => ({
    event: i % 2 === 0 ? "Signup" : "Purchase",
    distinct_id: `user_${i % 10}`,
    timestamp: "2026-11-02T09:00:00Z",
  }));
  const accepted = await call(`${api}/api/v1/event/batch`, project.api_key, { events });
  assert.equal(accepted.status, 202);
  const query = { kind: "top_events", from: "2026-11-01", to: "2026-12-01", limit: 5 };
  let answer: unknown;
  await eventually(`the ${stage} stage's queries to answer the 40 events`, async () => {
    const response = await call(`${api}/api/v1/query`, project.read_key, query);
    answer = response.body;
    const counts = (response.body as { events?: { event: string; count: number }[] }).events ?? [];
    return counts.reduce((sum, e) => sum + e.count, 0) === 40;
  });
  assert.deepEqual((answer as { events: unknown }).events, [
    { event: "Purchase", count: 20 },
    { event: "Signup", count: 20 },
  ]);
  const stats = await call(`${api}/api/v1/project/${project.id}/stats`, token);
  assert.equal((stats.body as { stored: number }).stored, 40);

  const stop = await make(["stop"], env);
  stopped = true;
  assert.equal(stop.code, 0, stop.output);
  for (const role of roles) assert.match(stop.output, new RegExp(`^ {2}${role}: pid \\d+ stopped`, "m"));
  assert.match(
    stop.output,
    stage === "cdc"
      ? /services given by URL, not managed here: postgres \(DATABASE_URL\), redis \(REDIS_URL\), clickhouse \(CLICKHOUSE_URL\), kafka \(KAFKA_BROKERS\)/
      : /services left running \(make start did not start them\): postgres, redis/,
  );
  for (const i of roles.keys()) assert.ok(await portFree(base + i), `port ${base + i} is free again`);
  assert.ok(!existsSync(join(env.TIDEMARK_RUN_DIR!, "stage.json")), "the state is gone");
  for (const role of roles)
    assert.ok(!existsSync(join(env.TIDEMARK_RUN_DIR!, `${role}.pid`)), `${role}.pid is gone`);
  const after = await make(["status"], env);
  assert.match(after.output, /no stage started with make start STAGE=/);
}

test("make start STAGE=async starts Postgres and Redis through services.sh, the api and a worker; make stop stops them", async (t) => {
  const postgres = await requirePostgres(t);
  const redis = await requireRedis(t);
  if (!postgres.ok || !redis.ok) return;
  ensureFreshBuild();
  // The services come from scripts/services.sh, which finds the shared ones running and reuses
  // them: a database and a Redis prefix of this test's own keep it apart from everything else.
  const pgUrl = new URL(postgres.url);
  const database = `tidemark_test_stage_${randomBytes(4).toString("hex")}`;
  const prefix = uniqueRedisPrefix("stage");
  const { env, base } = await stageEnv({
    TIDEMARK_PG_PORT: pgUrl.port || "5432",
    TIDEMARK_PG_DB: database,
    TIDEMARK_REDIS_PORT: new URL(redis.url).port || "6379",
    TIDEMARK_REDIS_PREFIX: prefix,
  });
  cleanups.push(async () => {
    await dropRedisPrefix(redis.url, prefix);
    pgUrl.pathname = "/postgres";
    const client = new pg.Client({ connectionString: pgUrl.toString() });
    await client.connect();
    await client.query(`DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`);
    await client.end();
  });
  await exerciseStage("async", env, base, {
    api: /^tidemark_http_requests_total\{/m,
    worker: /^tidemark_queue_depth_events \d+$/m,
  });
});

test("make start STAGE=cdc runs api, worker, cdc and sink apart on services given by URL; make stop stops them", async (t) => {
  const [postgres, redis, clickhouse, kafka] = [
    await requirePostgres(t),
    await requireRedis(t),
    await requireClickHouse(t),
    await requireKafka(t),
  ];
  if (!postgres.ok || !redis.ok || !clickhouse.ok || !kafka.ok) return;
  ensureFreshBuild();
  // URLs given in the environment are used as they are, and their services left alone.
  const pipeline = await cdcPipelineEnv("stage_cdc", cleanups, {
    databaseUrl: postgres.url,
    redisUrl: redis.url,
    kafkaBrokers: kafka.url,
    clickhouseUrl: clickhouse.url,
  });
  const { env, base } = await stageEnv(pipeline);
  await exerciseStage("cdc", env, base, {
    api: /^tidemark_http_requests_total\{/m,
    worker: /^tidemark_queue_depth_events \d+$/m,
    cdc: /^tidemark_cdc_slot_lag_bytes \d+$/m,
    sink: /^tidemark_kafka_consumer_lag_messages \d+$/m,
  });
});

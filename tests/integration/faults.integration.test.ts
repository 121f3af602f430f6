import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { hostname } from "node:os";
import { after, before, test } from "node:test";
import { Redis } from "ioredis";
import pg from "pg";
import {
  createTestDatabase,
  ensureFreshBuild,
  type PrivateServices,
  startPrivateServices,
} from "../helpers/services.js";

/**
 * Faults under load, on a private Postgres and Redis (scripts/services.sh with their own folder
 * and ports), with Tidemark as real processes of the built CLI. Each scenario sends batches of
 * events with fresh uuids while a fault happens; a client retries a batch with the same uuids
 * until it gets a 202 (503 and dropped connections are retried, as an SDK does). Afterwards the
 * set of uuids that got a 202 must equal the set stored, each exactly once.
 */

const SECRET = "faults-secret-token-0123456789";
let services: PrivateServices | undefined;
let skipReason: string | undefined;
let cli = "";

before(async () => {
  const started = await startPrivateServices("faults");
  if (typeof started === "string") skipReason = started;
  else services = started;
  if (services) cli = ensureFreshBuild();
});
after(() => services?.destroy());

interface Proc {
  child: ChildProcess;
  output(): string;
  url?: string;
  exited: Promise<void>;
}

const children = new Set<ChildProcess>();
after(() => {
  for (const child of children) child.kill("SIGKILL");
});

async function freePort(): Promise<number> {
  const { createServer } = await import("node:net");
  return new Promise((resolve) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** `tidemark serve --role <role>`; resolves once it serves HTTP (api, all) or has started (worker). */
async function spawnTidemark(role: "api" | "worker" | "all", env: Record<string, string>): Promise<Proc> {
  const port = await freePort();
  const child = spawn(process.execPath, [cli, "serve", "--role", role], {
    env: {
      PATH: process.env.PATH,
      PORT: String(port),
      HOST: "127.0.0.1",
      SECRET_TOKEN: SECRET,
      TIDEMARK_LOG_LEVEL: "info",
      TIDEMARK_PIPELINE: "async",
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.add(child);
  let output = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  child.stderr?.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
  const url = role === "worker" ? undefined : `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  while (!output.includes('"msg":"tidemark started"')) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`tidemark ${role} did not start:\n${output}`);
    }
    await sleep(50);
  }
  return { child, output: () => output, url, exited };
}

function kill(proc: Proc): Promise<void> {
  proc.child.kill("SIGKILL");
  return proc.exited;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Scenario {
  databaseUrl: string;
  redisPrefix: string;
  env: Record<string, string>;
  projectId: string;
  writeKey: string;
  cleanup(): Promise<void>;
}

/** A database and Redis prefix of its own, and a project created through `api`. */
async function scenario(label: string): Promise<Omit<Scenario, "projectId" | "writeKey">> {
  const db = await createTestDatabase(services!.databaseUrl, label);
  const redisPrefix = `test-${label}-${randomUUID().slice(0, 8)}:`;
  return {
    databaseUrl: db.url,
    redisPrefix,
    env: {
      DATABASE_URL: db.url,
      REDIS_URL: services!.redisUrl,
      TIDEMARK_REDIS_PREFIX: redisPrefix,
      TIDEMARK_WORKER_CLAIM_IDLE_MS: "1000",
    },
    cleanup: db.drop,
  };
}

async function createProject(url: string): Promise<{ id: string; api_key: string }> {
  const response = await fetch(`${url}/api/v1/project`, {
    method: "POST",
    headers: { authorization: `Bearer ${SECRET}`, "content-type": "application/json" },
    body: JSON.stringify({ name: "faults", plan: "ENTERPRISE" }),
  });
  assert.equal(response.status, 201, await response.clone().text());
  return (await response.json()) as { id: string; api_key: string };
}

interface Load {
  /** uuids whose batch got a 202. */
  acked: Set<string>;
  /** Batches fully acknowledged so far. */
  done: number;
  statuses: Map<string, number>;
  /** 202s received while `window` was true. */
  ackedInWindow: number;
  window: boolean;
  finished: Promise<void>;
}

/**
 * Sends `batches` batches of `size` events from `concurrency` clients, each pausing `pauseMs`
 * between batches. A batch is retried with the same uuids (on 503, timeouts and refused
 * connections, moving to the next URL) until it is acknowledged; the whole run is bounded by
 * `limitMs`, after which the test fails.
 */
function startLoad(opts: {
  urls: () => string[];
  key: string;
  batches: number;
  size: number;
  concurrency: number;
  pauseMs: number;
  limitMs: number;
}): Load {
  const load: Load = {
    acked: new Set(),
    done: 0,
    statuses: new Map(),
    ackedInWindow: 0,
    window: false,
    finished: Promise.resolve(),
  };
  const deadline = Date.now() + opts.limitMs;
  let next = 0;
  let turn = 0;
  const count = (status: string) => load.statuses.set(status, (load.statuses.get(status) ?? 0) + 1);
  const client = async () => {
    while (next < opts.batches) {
      next++;
      const events = Array.from({ length: opts.size }, (_, i) => ({
        event: i % 3 === 0 ? "Purchase" : "Page View",
        distinct_id: `user_${i % 7}`,
        uuid: randomUUID(),
        properties: { i },
      }));
      const body = JSON.stringify({ events });
      for (;;) {
        if (Date.now() > deadline) throw new Error("load did not finish in time");
        const urls = opts.urls();
        const url = urls[turn++ % urls.length]!;
        try {
          const response = await fetch(`${url}/api/v1/event/batch`, {
            method: "POST",
            headers: { authorization: `Bearer ${opts.key}`, "content-type": "application/json" },
            body,
            signal: AbortSignal.timeout(5000),
          });
          count(String(response.status));
          await response.arrayBuffer();
          if (response.status === 202) {
            for (const e of events) load.acked.add(e.uuid);
            if (load.window) load.ackedInWindow++;
            load.done++;
            break;
          }
          if (response.status !== 503) throw new Error(`unexpected status ${response.status}`);
        } catch (error) {
          if ((error as Error).message.startsWith("unexpected status")) throw error;
          count("connection error");
        }
        await sleep(50);
      }
      await sleep(opts.pauseMs);
    }
  };
  load.finished = Promise.all(Array.from({ length: opts.concurrency }, client)).then(() => undefined);
  return load;
}

async function waitFor(
  what: string,
  check: () => Promise<boolean> | boolean,
  limitMs: number,
): Promise<void> {
  const deadline = Date.now() + limitMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** Waits until every acknowledged event is stored, then checks: same set, each exactly once. */
async function assertExactlyOnce(databaseUrl: string, projectId: string, acked: Set<string>): Promise<void> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const stored = async () =>
      Number(
        (await client.query("SELECT count(*) AS n FROM events WHERE project_id = $1", [projectId])).rows[0].n,
      );
    await waitFor(`${acked.size} events stored`, async () => (await stored()) >= acked.size, 60_000);
    await sleep(500); // anything stored after the count reached the target would be a stray
    const { rows } = await client.query<{ u: string; n: string }>(
      "SELECT uuid::text AS u, count(*) AS n FROM events WHERE project_id = $1 GROUP BY uuid",
      [projectId],
    );
    const twice = rows.filter((row) => Number(row.n) !== 1);
    assert.deepEqual(twice, [], "uuids stored more than once");
    const storedSet = new Set(rows.map((row) => row.u));
    const missing = [...acked].filter((u) => !storedSet.has(u));
    const extra = [...storedSet].filter((u) => !acked.has(u));
    assert.deepEqual({ missing: missing.length, extra: extra.length }, { missing: 0, extra: 0 });
    // accepted is written in the transaction that stores the events: it must match exactly.
    const ledger = await client.query<{ n: string }>(
      "SELECT n FROM ledger WHERE project_id = $1 AND outcome = 'accepted'",
      [projectId],
    );
    assert.equal(Number(ledger.rows[0]?.n ?? 0), acked.size, "ledger accepted equals stored");
  } finally {
    await client.end();
  }
}

/** Pending entries per consumer of the ingest stream. */
async function pendingByConsumer(redisUrl: string, prefix: string): Promise<Map<string, number>> {
  const redis = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 0 });
  try {
    await redis.connect();
    const summary = (await redis.xpending(`${prefix}{events}`, "workers")) as [
      number,
      string,
      string,
      [string, string][] | null,
    ];
    return new Map((summary[3] ?? []).map(([consumer, n]) => [consumer, Number(n)]));
  } catch {
    return new Map();
  } finally {
    redis.disconnect();
  }
}

const LOAD = { size: 20, concurrency: 4, pauseMs: 20, limitMs: 90_000 };

test("async: SIGKILL of a worker mid-batch loses nothing; another worker takes its messages over", {
  timeout: 150_000,
}, async (t) => {
  if (skipReason) return t.skip(skipReason);
  const s = await scenario("faults_worker");
  t.after(s.cleanup);
  const env = { ...s.env, TIDEMARK_WORKER_BATCH: "20" };
  const api = await spawnTidemark("api", env);
  const [doomed, survivor] = await Promise.all([spawnTidemark("worker", env), spawnTidemark("worker", env)]);
  const project = await createProject(api.url!);
  const load = startLoad({ ...LOAD, urls: () => [api.url!], key: project.api_key, batches: 400 });
  load.finished.catch(() => undefined);
  // Mid-batch: the worker holds messages it has read and not yet acked.
  const doomedName = `${hostname()}-${doomed.child.pid}-`;
  let held = 0;
  await waitFor(
    "the worker to hold unacked messages",
    async () => {
      for (const [consumer, n] of await pendingByConsumer(services!.redisUrl, s.redisPrefix)) {
        if (consumer.startsWith(doomedName) && n > 0 && load.done > 50) held = n;
      }
      return held > 0;
    },
    30_000,
  );
  await kill(doomed);
  await load.finished;
  await assertExactlyOnce(s.databaseUrl, project.id, load.acked);
  const pending = await pendingByConsumer(services!.redisUrl, s.redisPrefix);
  const left = [...pending].filter(([consumer, n]) => consumer.startsWith(doomedName) && n > 0);
  assert.deepEqual(left, [], "the dead worker's messages were taken over");
  t.diagnostic(
    `killed a worker holding ${held} messages; ${load.acked.size} events acknowledged; ${JSON.stringify([...load.statuses])}`,
  );
  await Promise.all([kill(api), kill(survivor)]);
});

test("async: SIGKILL of an API process under load; clients retry on the other", {
  timeout: 150_000,
}, async (t) => {
  if (skipReason) return t.skip(skipReason);
  const s = await scenario("faults_api");
  t.after(s.cleanup);
  const [first, second, worker] = await Promise.all([
    spawnTidemark("api", s.env),
    spawnTidemark("api", s.env),
    spawnTidemark("worker", s.env),
  ]);
  const project = await createProject(first.url!);
  let urls = [first.url!, second.url!];
  const load = startLoad({ ...LOAD, concurrency: 8, urls: () => urls, key: project.api_key, batches: 400 });
  load.finished.catch(() => undefined);
  await waitFor("a third of the load", () => load.done > 130, 60_000);
  await kill(first);
  urls = [second.url!];
  await load.finished;
  await assertExactlyOnce(s.databaseUrl, project.id, load.acked);
  t.diagnostic(`${load.acked.size} events acknowledged; ${JSON.stringify([...load.statuses])}`);
  await Promise.all([kill(second), kill(worker)]);
});

test("async: Redis killed and restarted under load (AOF, appendfsync always)", {
  timeout: 150_000,
}, async (t) => {
  if (skipReason) return t.skip(skipReason);
  const s = await scenario("faults_redis");
  t.after(s.cleanup);
  const tidemark = await spawnTidemark("all", s.env);
  const project = await createProject(tidemark.url!);
  const load = startLoad({ ...LOAD, urls: () => [tidemark.url!], key: project.api_key, batches: 400 });
  load.finished.catch(() => undefined);
  await waitFor("a third of the load", () => load.done > 130, 60_000);
  // A crash: SIGKILL, down for a second and a half, then started again from its append-only file.
  await services!.run("kill-redis");
  const refusedBefore = load.statuses.get("503") ?? 0;
  await sleep(1500);
  await services!.run("start-redis");
  assert.ok((load.statuses.get("503") ?? 0) > refusedBefore, "ingest answered 503 while Redis was down");
  await load.finished;
  await assertExactlyOnce(s.databaseUrl, project.id, load.acked);
  t.diagnostic(`${load.acked.size} events acknowledged; ${JSON.stringify([...load.statuses])}`);
  await kill(tidemark);
});

test("async: Postgres stopped for 4 s under load: ingest keeps accepting, then the worker drains", {
  timeout: 150_000,
}, async (t) => {
  if (skipReason) return t.skip(skipReason);
  const s = await scenario("faults_postgres");
  t.after(s.cleanup);
  const [api, worker] = await Promise.all([spawnTidemark("api", s.env), spawnTidemark("worker", s.env)]);
  const project = await createProject(api.url!);
  const load = startLoad({ ...LOAD, urls: () => [api.url!], key: project.api_key, batches: 500 });
  load.finished.catch(() => undefined);
  await waitFor("a fifth of the load", () => load.done > 100, 60_000);
  try {
    await services!.run("stop-postgres");
    load.window = true;
    await sleep(4000);
    load.window = false;
  } finally {
    await services!.run("start-postgres");
  }
  assert.ok(load.ackedInWindow > 20, `only ${load.ackedInWindow} batches accepted while Postgres was down`);
  await load.finished;
  try {
    await assertExactlyOnce(s.databaseUrl, project.id, load.acked);
  } catch (error) {
    t.diagnostic(
      `worker exit ${worker.child.exitCode ?? "-"}; its last output:\n${worker.output().slice(-3000)}`,
    );
    throw error;
  }
  t.diagnostic(
    `${load.ackedInWindow} batches accepted during the outage; ${load.acked.size} events acknowledged; ${JSON.stringify([...load.statuses])}`,
  );
  await Promise.all([kill(api), kill(worker)]);
});

test("sync: SIGKILL of an API process under load; every 202 was committed", {
  timeout: 150_000,
}, async (t) => {
  if (skipReason) return t.skip(skipReason);
  const s = await scenario("faults_sync_api");
  t.after(s.cleanup);
  const env = { ...s.env, TIDEMARK_PIPELINE: "sync" };
  const [first, second] = await Promise.all([spawnTidemark("api", env), spawnTidemark("api", env)]);
  const project = await createProject(first.url!);
  let urls = [first.url!, second.url!];
  const load = startLoad({ ...LOAD, concurrency: 8, urls: () => urls, key: project.api_key, batches: 400 });
  load.finished.catch(() => undefined);
  await waitFor("a third of the load", () => load.done > 130, 60_000);
  await kill(first);
  urls = [second.url!];
  await load.finished;
  await assertExactlyOnce(s.databaseUrl, project.id, load.acked);
  t.diagnostic(`${load.acked.size} events acknowledged; ${JSON.stringify([...load.statuses])}`);
  await kill(second);
});

test("sync: Postgres stopped for 3 s under load: ingest answers 503, then recovers by itself", {
  timeout: 150_000,
}, async (t) => {
  if (skipReason) return t.skip(skipReason);
  const s = await scenario("faults_sync_postgres");
  t.after(s.cleanup);
  const api = await spawnTidemark("api", { ...s.env, TIDEMARK_PIPELINE: "sync" });
  const project = await createProject(api.url!);
  // Enough batches (about 10 s of load) that the load is still running when Postgres stops.
  const load = startLoad({ ...LOAD, urls: () => [api.url!], key: project.api_key, batches: 1500 });
  load.finished.catch(() => undefined);
  await waitFor("a fifth of the load", () => load.done > 80, 60_000);
  const refusedBefore = load.statuses.get("503") ?? 0;
  try {
    await services!.run("stop-postgres");
    await sleep(3000);
  } finally {
    await services!.run("start-postgres");
  }
  assert.ok((load.statuses.get("503") ?? 0) > refusedBefore, "ingest answered 503 while Postgres was down");
  await load.finished;
  await assertExactlyOnce(s.databaseUrl, project.id, load.acked);
  t.diagnostic(`${load.acked.size} events acknowledged; ${JSON.stringify([...load.statuses])}`);
  await kill(api);
});

import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";
import { cdcPipelineEnv } from "../helpers/cdc.js";
import { freePort } from "../helpers/child-server.js";
import { ensureFreshBuild, type PrivateServices, startPrivateServices } from "../helpers/services.js";

/**
 * Faults of the cdc pipeline under load, on a private Postgres, Redis, Kafka and ClickHouse (one
 * set for this file: the shared ones stay up for the tests beside), with each role in its own
 * process of the built CLI (api, worker, cdc, sink). Clients send batches with fresh uuids and
 * retry a batch with the same uuids until they get a 202. After each fault, ClickHouse's answers
 * (through the query API) must hold exactly the acknowledged uuids: none lost, none twice.
 */

type Service = "postgres" | "redis" | "clickhouse" | "kafka";
const SECRET = "cdc-faults-secret-token-0123456789";
let services: PrivateServices<Service> | undefined;
let skipReason: string | undefined;
let cli = "";
const cleanups: (() => Promise<void>)[] = [];

before(async () => {
  const started = await startPrivateServices<Service>("cdc-faults", undefined, [
    "postgres",
    "redis",
    "clickhouse",
    "kafka",
  ]);
  if (typeof started === "string") skipReason = started;
  else services = started;
  if (services) cli = ensureFreshBuild();
});
after(async () => {
  for (const child of children) child.kill("SIGKILL");
  for (const cleanup of cleanups) await cleanup().catch(() => undefined);
  services?.destroy();
});

type Role = "api" | "worker" | "cdc" | "sink";
interface Proc {
  child: ChildProcess;
  output(): string;
  url?: string;
  exited: Promise<void>;
}
const children = new Set<ChildProcess>();
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function spawnRole(role: Role, env: Record<string, string>): Promise<Proc> {
  const port = await freePort();
  const child = spawn(process.execPath, [cli, "serve", "--role", role], {
    env: {
      PATH: process.env.PATH,
      PORT: String(port),
      HOST: "127.0.0.1",
      SECRET_TOKEN: SECRET,
      TIDEMARK_LOG_LEVEL: "info",
      TIDEMARK_WORKER_CLAIM_IDLE_MS: "1000",
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
  const deadline = Date.now() + 60_000;
  while (!output.includes('"msg":"tidemark started"')) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`tidemark ${role} did not start:\n${output.slice(-3000)}`);
    }
    await sleep(50);
  }
  return {
    child,
    output: () => output,
    url: role === "api" ? `http://127.0.0.1:${port}` : undefined,
    exited,
  };
}

function kill(proc: Proc): Promise<void> {
  proc.child.kill("SIGKILL");
  return proc.exited;
}

interface Load {
  acked: Set<string>;
  done: number;
  statuses: Map<string, number>;
  finished: Promise<void>;
}

/** Batches of fresh uuids from `concurrency` clients; each retried with the same uuids until a 202. */
function startLoad(url: string, key: string, batches: number, limitMs: number): Load {
  const load: Load = { acked: new Set(), done: 0, statuses: new Map(), finished: Promise.resolve() };
  const deadline = Date.now() + limitMs;
  let next = 0;
  const count = (status: string) => load.statuses.set(status, (load.statuses.get(status) ?? 0) + 1);
  const client = async () => {
    while (next < batches) {
      next++;
      const events = Array.from({ length: 20 }, (_, i) => ({
        event: i % 3 === 0 ? "Purchase" : "Page View",
        distinct_id: `user_${i % 7}`,
        uuid: randomUUID(),
        properties: { i },
      }));
      const body = JSON.stringify({ events });
      for (;;) {
        if (Date.now() > deadline) throw new Error("load did not finish in time");
        try {
          const response = await fetch(`${url}/api/v1/event/batch`, {
            method: "POST",
            headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
            body,
            signal: AbortSignal.timeout(5000),
          });
          count(String(response.status));
          await response.arrayBuffer();
          if (response.status === 202) {
            for (const e of events) load.acked.add(e.uuid);
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
      await sleep(20);
    }
  };
  load.finished = Promise.all(Array.from({ length: 4 }, client)).then(() => undefined);
  load.finished.catch(() => undefined);
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
    await sleep(100);
  }
}

async function stats(url: string, projectId: string): Promise<{ stored: number; analytics_stored?: number }> {
  const response = await fetch(`${url}/api/v1/project/${projectId}/stats`, {
    headers: { authorization: `Bearer ${SECRET}` },
    signal: AbortSignal.timeout(10_000),
  });
  if (response.status !== 200) return { stored: -1 };
  return (await response.json()) as { stored: number; analytics_stored?: number };
}

async function query(url: string, readKey: string, spec: Record<string, unknown>) {
  const response = await fetch(`${url}/api/v1/query`, {
    method: "POST",
    headers: { authorization: `Bearer ${readKey}`, "content-type": "application/json" },
    body: JSON.stringify(spec),
  });
  assert.equal(response.status, 200);
  return (await response.json()) as Record<string, unknown>;
}

/** ClickHouse's answers hold exactly the acknowledged uuids, each once. */
async function assertExactlyOnce(url: string, project: Project, acked: Set<string>): Promise<void> {
  await waitFor(
    `${acked.size} events in ClickHouse`,
    async () => ((await stats(url, project.id)).analytics_stored ?? 0) >= acked.size,
    90_000,
  );
  await sleep(1000); // anything written after the count reached the target would be a stray
  const ledger = await stats(url, project.id);
  assert.equal(ledger.stored, acked.size, "Postgres holds every acknowledged event once");
  assert.equal(ledger.analytics_stored, acked.size, "ClickHouse holds every acknowledged event once");
  const uuids: string[] = [];
  let cursor: string | undefined;
  for (;;) {
    const page = (await query(url, project.read_key, {
      kind: "events",
      limit: 1000,
      ...(cursor ? { cursor } : {}),
    })) as {
      events: { uuid: string }[];
      next_cursor: string | null;
    };
    uuids.push(...page.events.map((e) => e.uuid));
    if (!page.next_cursor) break;
    cursor = page.next_cursor;
  }
  assert.equal(uuids.length, new Set(uuids).size, "no event listed twice");
  const missing = [...acked].filter((u) => !uuids.includes(u));
  assert.deepEqual({ listed: uuids.length, missing: missing.length }, { listed: acked.size, missing: 0 });
  const top = (await query(url, project.read_key, {
    kind: "top_events",
    from: "2000-01-01",
    to: "2100-01-01",
  })) as { events: { count: number }[] };
  assert.equal(
    top.events.reduce((n, e) => n + e.count, 0),
    acked.size,
    "counts in ClickHouse's answers",
  );
}

interface Project {
  id: string;
  api_key: string;
  read_key: string;
}

/** Every role in its own process on a pipeline of its own (database, slot, topic, ClickHouse db). */
async function pipeline(label: string) {
  const env = await cdcPipelineEnv(label, cleanups, {
    databaseUrl: services!.databaseUrl,
    redisUrl: services!.redisUrl,
    kafkaBrokers: services!.kafkaBrokers,
    clickhouseUrl: services!.clickhouseUrl,
  });
  const procs: Record<Role, Proc> = {
    api: await spawnRole("api", env),
    worker: await spawnRole("worker", env),
    cdc: await spawnRole("cdc", env),
    sink: await spawnRole("sink", env),
  };
  const url = procs.api.url!;
  const response = await fetch(`${url}/api/v1/project`, {
    method: "POST",
    headers: { authorization: `Bearer ${SECRET}`, "content-type": "application/json" },
    body: JSON.stringify({ name: label, plan: "ENTERPRISE" }),
  });
  assert.equal(response.status, 201);
  const project = (await response.json()) as Project;
  return {
    env,
    procs,
    url,
    project,
    async stop() {
      await Promise.all(Object.values(procs).map(kill));
    },
  };
}

const BATCHES = 300;
const LIMIT_MS = 120_000;

test("cdc: SIGKILL of the cdc role mid-stream; a new one resumes from the slot", {
  timeout: 240_000,
}, async (t) => {
  if (skipReason) return t.skip(skipReason);
  const p = await pipeline("cdc_kill");
  const load = startLoad(p.url, p.project.api_key, BATCHES, LIMIT_MS);
  await waitFor(
    "events flowing to ClickHouse",
    async () => ((await stats(p.url, p.project.id)).analytics_stored ?? 0) > 200,
    60_000,
  );
  await kill(p.procs.cdc);
  await sleep(1000);
  p.procs.cdc = await spawnRole("cdc", p.env);
  await load.finished;
  await assertExactlyOnce(p.url, p.project, load.acked);
  t.diagnostic(`${load.acked.size} events acknowledged; ${JSON.stringify([...load.statuses])}`);
  await p.stop();
});

test("cdc: SIGKILL of the sink mid-batch; a new one resumes from the committed offsets", {
  timeout: 240_000,
}, async (t) => {
  if (skipReason) return t.skip(skipReason);
  const p = await pipeline("sink_kill");
  const load = startLoad(p.url, p.project.api_key, BATCHES, LIMIT_MS);
  await waitFor(
    "events flowing to ClickHouse",
    async () => ((await stats(p.url, p.project.id)).analytics_stored ?? 0) > 200,
    60_000,
  );
  await kill(p.procs.sink);
  await sleep(1000);
  p.procs.sink = await spawnRole("sink", p.env);
  await load.finished;
  await assertExactlyOnce(p.url, p.project, load.acked);
  t.diagnostic(`${load.acked.size} events acknowledged; ${JSON.stringify([...load.statuses])}`);
  await p.stop();
});

test("cdc: the Kafka broker killed and restarted under load", { timeout: 240_000 }, async (t) => {
  if (skipReason) return t.skip(skipReason);
  const p = await pipeline("kafka_kill");
  const load = startLoad(p.url, p.project.api_key, BATCHES, LIMIT_MS);
  await waitFor(
    "events flowing to ClickHouse",
    async () => ((await stats(p.url, p.project.id)).analytics_stored ?? 0) > 200,
    60_000,
  );
  await services!.kill("kafka");
  await sleep(2000);
  await services!.start("kafka");
  await load.finished;
  try {
    await assertExactlyOnce(p.url, p.project, load.acked);
  } catch (error) {
    t.diagnostic(`cdc:\n${p.procs.cdc.output().slice(-2500)}\nsink:\n${p.procs.sink.output().slice(-2500)}`);
    throw error;
  }
  t.diagnostic(`${load.acked.size} events acknowledged; ${JSON.stringify([...load.statuses])}`);
  await p.stop();
});

test("cdc: ClickHouse stopped for 5 s under load", { timeout: 240_000 }, async (t) => {
  if (skipReason) return t.skip(skipReason);
  const p = await pipeline("clickhouse_stop");
  const load = startLoad(p.url, p.project.api_key, BATCHES, LIMIT_MS);
  await waitFor(
    "events flowing to ClickHouse",
    async () => ((await stats(p.url, p.project.id)).analytics_stored ?? 0) > 200,
    60_000,
  );
  try {
    await services!.stop("clickhouse");
    await sleep(5000);
  } finally {
    await services!.start("clickhouse");
  }
  await load.finished;
  await assertExactlyOnce(p.url, p.project, load.acked);
  t.diagnostic(`${load.acked.size} events acknowledged; ${JSON.stringify([...load.statuses])}`);
  await p.stop();
});

test("cdc: Postgres restarted under load; the change feed reconnects and resumes", {
  timeout: 240_000,
}, async (t) => {
  if (skipReason) return t.skip(skipReason);
  const p = await pipeline("postgres_restart");
  const load = startLoad(p.url, p.project.api_key, BATCHES, LIMIT_MS);
  await waitFor(
    "events flowing to ClickHouse",
    async () => ((await stats(p.url, p.project.id)).analytics_stored ?? 0) > 200,
    60_000,
  );
  await services!.run("restart-postgres");
  await load.finished;
  try {
    await assertExactlyOnce(p.url, p.project, load.acked);
  } catch (error) {
    t.diagnostic(`cdc:\n${p.procs.cdc.output().slice(-2500)}`);
    throw error;
  }
  t.diagnostic(`${load.acked.size} events acknowledged; ${JSON.stringify([...load.statuses])}`);
  await p.stop();
});

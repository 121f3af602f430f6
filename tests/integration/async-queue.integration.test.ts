import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, test } from "node:test";
import { Redis } from "ioredis";
import pg from "pg";
import pino from "pino";
import { RedisConnection } from "../../src/backends/redis/redis.connection.js";
import { RedisStreamQueue } from "../../src/backends/redis/redis.queue.js";
import { decodeEvents } from "../../src/backends/redis/redis.stream-codec.js";
import { loadConfig } from "../../src/config/config.js";
import type { AppError } from "../../src/core/errors.js";
import type { StoredEvent } from "../../src/core/event.js";
import { type RunningTidemark, startTidemark } from "../../src/roles/server.js";
import {
  countScripts,
  createTestDatabase,
  dropRedisPrefix,
  requirePostgres,
  requireRedis,
  uniqueRedisPrefix,
} from "../helpers/services.js";
import { startTestTidemark } from "../helpers/tidemark.js";

// The async queue's own behaviour, beyond the conformance suite: back-pressure on a bounded
// stream, and dead letters for messages that cannot be stored.

const cleanups: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function environment(t: import("node:test").TestContext, label: string) {
  const postgres = await requirePostgres(t);
  const redis = await requireRedis(t);
  if (!postgres.ok || !redis.ok) return undefined;
  const db = await createTestDatabase(postgres.url, label);
  cleanups.push(db.drop);
  const prefix = uniqueRedisPrefix(label);
  cleanups.push(() => dropRedisPrefix(redis.url, prefix));
  return {
    redisUrl: redis.url,
    databaseUrl: db.url,
    prefix,
    env: {
      TIDEMARK_PIPELINE: "async",
      DATABASE_URL: db.url,
      REDIS_URL: redis.url,
      TIDEMARK_REDIS_PREFIX: prefix,
    },
  };
}

async function startWorker(env: Record<string, string>): Promise<RunningTidemark> {
  const config = loadConfig({
    ...env,
    TIDEMARK_ROLE: "worker",
    // A worker serves /health, /ready and /metrics on PORT: any free one.
    PORT: "0",
    HOST: "127.0.0.1",
    SECRET_TOKEN: "worker-token-0123456789",
    TIDEMARK_LOG_LEVEL: "silent",
  });
  return startTidemark(config, pino({ level: "silent" }));
}

async function waitFor(what: string, check: () => Promise<boolean>, limitMs = 20_000): Promise<void> {
  const deadline = Date.now() + limitMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

test("a full stream answers 503 with Retry-After, never trims, and accepts again once workers catch up", async (t) => {
  const e = await environment(t, "async_backpressure");
  if (!e) return;
  const api = await startTestTidemark({ ...e.env, TIDEMARK_ROLE: "api", TIDEMARK_REDIS_STREAM_MAXLEN: "3" });
  t.after(() => api.close());
  const project = await api.createProject("ENTERPRISE");
  const send = () =>
    api.request("POST", "/api/v1/event", { key: project.api_key, body: { event: "E", distinct_id: "u" } });
  for (let i = 0; i < 3; i++) assert.equal((await send()).status, 202);
  const refused = await send();
  assert.equal(refused.status, 503);
  assert.equal(refused.body.error.code, "overloaded");
  assert.equal(refused.headers.get("retry-after"), "1");
  const metrics = await api.request("GET", "/metrics");
  assert.match(metrics.body, /tidemark_queue_depth_events 3\b/);
  const redis = new Redis(e.redisUrl);
  t.after(() => redis.disconnect());
  assert.equal(await redis.xlen(`${e.prefix}{events}`), 3, "nothing trimmed");

  const worker = await startWorker(e.env);
  t.after(() => worker.close());
  await waitFor(
    "the worker to drain the stream",
    async () => (await redis.xlen(`${e.prefix}{events}`)) === 0,
  );
  assert.equal((await send()).status, 202);
  await waitFor("4 events stored", async () => {
    const stats = await api.request("GET", `/api/v1/project/${project.id}/stats`, { key: api.token });
    return stats.body.stored === 4;
  });
});

test("requests enqueued in the same instant share a script call and an entry that keeps each one's size", async (t) => {
  const redisService = await requireRedis(t);
  if (!redisService.ok) return;
  const prefix = uniqueRedisPrefix("async_grouped");
  cleanups.push(() => dropRedisPrefix(redisService.url, prefix));
  const connection = new RedisConnection({ url: redisService.url, name: "test-grouped-enqueue" });
  const queue = new RedisStreamQueue(connection, { prefix, maxLength: 2, maxEntryEvents: 6 });
  await queue.start();
  t.after(() => queue.close());
  const scripts = countScripts(connection.client);
  const request = (i: number, size: number): StoredEvent[] =>
    Array.from({ length: size }, (_, k) => ({
      projectId: randomUUID(),
      uuid: randomUUID(),
      event: `request ${i}`,
      distinctId: `u${k}`,
      timestamp: 1_700_000_000_000 + k,
      properties: "{}",
      receivedAt: 1_700_000_000_000,
    }));
  // 13 events in 7 requests, at most 6 events an entry: entries of requests 0-2 and 3-5, then
  // request 6 finds the stream at its bound of 2 entries.
  const requests = Array.from({ length: 7 }, (_, i) => request(i, 1 + (i % 3)));
  const outcomes = await Promise.allSettled(requests.map((events) => queue.enqueue(events)));
  assert.equal(scripts.calls, 3, "a script call for each entry, and one refused");
  assert.deepEqual(
    outcomes.map((o) => (o.status === "fulfilled" ? "accepted" : (o.reason as AppError).code)),
    ["accepted", "accepted", "accepted", "accepted", "accepted", "accepted", "overloaded"],
  );
  const redis = new Redis(redisService.url);
  t.after(() => redis.disconnect());
  const entries = await redis.xrange(`${prefix}{events}`, "-", "+");
  assert.equal(entries.length, 2);
  for (const [i, [, flat]] of entries.entries()) {
    const fields = new Map<string, string>();
    for (let k = 0; k < flat.length; k += 2) fields.set(flat[k]!, flat[k + 1]!);
    const decoded = decodeEvents(fields.get("v"), fields.get("e"));
    assert.ok("events" in decoded);
    assert.deepEqual(
      decoded.events,
      requests.slice(3 * i, 3 * i + 3).flat(),
      `entry ${i}: its requests, in order`,
    );
    assert.equal(fields.get("n"), "6");
    assert.equal(fields.get("r"), "1,2,3", "the size of each request");
  }
  assert.equal(await queue.depth(), 12, "the backlog counts the accepted events only");
  // A request alone has an entry without sizes, as before entries were shared.
  await redis.del(`${prefix}{events}`);
  await queue.enqueue(request(7, 2));
  const [only] = await redis.xrange(`${prefix}{events}`, "-", "+");
  const names = (only?.[1] ?? []).filter((_, k) => k % 2 === 0);
  assert.deepEqual(names, ["v", "n", "e"]);
});

test("messages that cannot be stored go to the dead-letter stream with their reason; the rest are stored", async (t) => {
  const e = await environment(t, "async_deadletter");
  if (!e) return;
  const tidemark = await startTestTidemark({ ...e.env, TIDEMARK_ROLE: "all" });
  t.after(() => tidemark.close());
  const project = await tidemark.createProject("ENTERPRISE");
  const now = Date.now();
  const row = (projectId: string, uuid: string, timestamp: number) =>
    JSON.stringify([[projectId, uuid, "Poison test", "u1", timestamp, '{"a":1}', now]]);
  const good = randomUUID();
  const sharedGood = [randomUUID(), randomUUID()];
  const sharedBad = randomUUID();
  const grouped = JSON.stringify([
    [project.id, sharedGood[0], "Poison test", "u1", now, '{"a":1}', now],
    [project.id, sharedBad, "Poison test", "u1", 1e20, '{"a":1}', now],
    [project.id, sharedGood[1], "Poison test", "u1", now, '{"a":1}', now],
  ]);
  const redis = new Redis(e.redisUrl);
  t.after(() => redis.disconnect());
  const stream = `${e.prefix}{events}`;
  // In one transaction, so the worker reads them in one batch: its insert fails, it splits the
  // batch, stores the good message and dead-letters the others.
  await redis
    .multi()
    .xadd(stream, "*", "v", "1", "n", "1", "e", row(project.id, good, now))
    .xadd(stream, "*", "v", "1", "n", "1", "e", row("not-a-project-id", randomUUID(), now))
    .xadd(stream, "*", "v", "1", "n", "1", "e", row(project.id, randomUUID(), 1e20))
    .xadd(stream, "*", "v", "1", "n", "1", "e", "this is not JSON")
    // Three requests that shared an entry, the middle one refused: only it is dead-lettered.
    .xadd(stream, "*", "v", "1", "n", "3", "e", grouped, "r", "1,1,1")
    .incrby(`${stream}:backlog`, 7)
    .exec();
  await waitFor("four dead letters", async () => (await redis.xlen(`${stream}:dead`)) === 4);
  const dead = (await redis.xrange(`${stream}:dead`, "-", "+")).map(([, fields]) => {
    const map = new Map<string, string>();
    for (let i = 0; i < fields.length; i += 2) map.set(fields[i]!, fields[i + 1]!);
    return map;
  });
  const reasons = dead.map((fields) => fields.get("reason") ?? "");
  assert.equal(reasons.filter((r) => r.startsWith("postgres refused")).length, 3, reasons.join("\n"));
  assert.equal(reasons.filter((r) => r.startsWith("undecodable")).length, 1, reasons.join("\n"));
  assert.ok(
    dead.every((fields) => fields.has("original_e") && fields.has("id")),
    "the original message is kept",
  );
  const request = dead.find((fields) => fields.has("request"));
  assert.equal(request?.get("request"), "1", "the refused request's place in its entry");
  assert.equal(request?.get("original_n"), "1");
  assert.equal(JSON.parse(request?.get("original_e") ?? "[]")[0][1], sharedBad, "and its events alone");

  await waitFor("the good event stored and the ledger counting the dead letter", async () => {
    const stats = await tidemark.request("GET", `/api/v1/project/${project.id}/stats`, {
      key: tidemark.token,
    });
    return stats.body.stored === 3 && stats.body.rejected?.dead_letter === 2;
  });
  const client = new pg.Client({ connectionString: e.databaseUrl });
  await client.connect();
  t.after(() => client.end());
  const stored = await client.query("SELECT uuid::text AS u FROM events");
  assert.deepEqual(stored.rows.map((r) => r.u).sort(), [good, ...sharedGood].sort());
  assert.equal(await redis.xlen(stream), 0, "every message acked and removed");
  assert.equal(await redis.get(`${stream}:backlog`), "0");
});

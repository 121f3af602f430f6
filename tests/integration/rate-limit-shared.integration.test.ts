import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, test } from "node:test";
import { MemoryRateLimiter } from "../../src/backends/memory/memory.rate-limiter.js";
import { RedisConnection } from "../../src/backends/redis/redis.connection.js";
import { RedisRateLimiter } from "../../src/backends/redis/redis.rate-limiter.js";
import { AppError } from "../../src/core/errors.js";
import { type ChildServer, startChildServer } from "../helpers/child-server.js";
import {
  countScripts,
  createTestDatabase,
  dropRedisPrefix,
  ensureFreshBuild,
  requirePostgres,
  requireRedis,
  uniqueRedisPrefix,
} from "../helpers/services.js";

const cleanups: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

test("two API processes share one rate limit: 150 requests on a FREE key give exactly 100 accepted", {
  timeout: 120_000,
}, async (t) => {
  const postgres = await requirePostgres(t);
  const redis = await requireRedis(t);
  if (!postgres.ok || !redis.ok) return;
  ensureFreshBuild();
  const db = await createTestDatabase(postgres.url, "ratelimit");
  cleanups.push(db.drop);
  const prefix = uniqueRedisPrefix("ratelimit");
  cleanups.push(() => dropRedisPrefix(redis.url, prefix));
  const token = "rate-limit-secret-0123456789";
  const env = {
    TIDEMARK_PIPELINE: "sync",
    DATABASE_URL: db.url,
    REDIS_URL: redis.url,
    TIDEMARK_REDIS_PREFIX: prefix,
    SECRET_TOKEN: token,
  };
  const servers: ChildServer[] = [];
  cleanups.push(() => {
    for (const server of servers) server.process.kill("SIGKILL");
  });
  servers.push(
    ...(await Promise.all([
      startChildServer(env, ["--role", "api"]),
      startChildServer(env, ["--role", "api"]),
    ])),
  );
  const created = await fetch(`${servers[0]!.url}/api/v1/project`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ name: "free", plan: "FREE" }),
  });
  assert.equal(created.status, 201);
  const project = (await created.json()) as { id: string; api_key: string };

  const started = Date.now();
  const statuses: number[] = [];
  const retryAfter: string[] = [];
  let next = 0;
  // 150 requests, alternating between the two processes, 10 at a time.
  await Promise.all(
    Array.from({ length: 10 }, async () => {
      while (next < 150) {
        const i = next++;
        const response = await fetch(`${servers[i % 2]!.url}/api/v1/event`, {
          method: "POST",
          headers: { authorization: `Bearer ${project.api_key}`, "content-type": "application/json" },
          body: JSON.stringify({ event: "Ping", distinct_id: `u${i}`, uuid: randomUUID() }),
        });
        await response.arrayBuffer();
        statuses.push(response.status);
        assert.equal(response.headers.get("x-ratelimit-limit"), "100");
        if (response.status === 429) retryAfter.push(response.headers.get("retry-after") ?? "");
      }
    }),
  );
  assert.ok(Date.now() - started < 60_000, "the 150 requests fit in one minute");
  const count = (status: number) => statuses.filter((s) => s === status).length;
  assert.deepEqual(
    { accepted: count(202), limited: count(429), other: 150 - count(202) - count(429) },
    {
      accepted: 100,
      limited: 50,
      other: 0,
    },
  );
  assert.ok(
    retryAfter.every((value) => Number(value) >= 1 && Number(value) <= 60),
    "429s carry Retry-After",
  );
  const stats = await fetch(`${servers[1]!.url}/api/v1/project/${project.id}/stats`, {
    headers: { authorization: `Bearer ${token}` },
  });
  const ledger = (await stats.json()) as { stored: number };
  assert.equal(ledger.stored, 100);
});

test("the Redis limiter decides as the in-memory one does, window edges and releases included", async (t) => {
  const redis = await requireRedis(t);
  if (!redis.ok) return;
  const prefix = uniqueRedisPrefix("ratelimit-edges");
  cleanups.push(() => dropRedisPrefix(redis.url, prefix));
  const connection = new RedisConnection({ url: redis.url, name: "test-rate-limit" });
  const shared = new RedisRateLimiter(connection, { prefix, failMode: "closed" });
  await shared.start();
  t.after(() => shared.close());
  const memory = new MemoryRateLimiter();
  // Requests at exact window edges (60 s apart), in bursts, and at random, on a limit of 5.
  const times: number[] = [];
  let now = 1_700_000_000_000;
  for (let i = 0; i < 300; i++) {
    const r = (i * 7919) % 13;
    now += r < 4 ? 0 : r < 8 ? 1 : r < 11 ? 7_000 : r === 11 ? 60_000 : 59_999;
    times.push(now);
  }
  const project = randomUUID();
  for (const [i, time] of times.entries()) {
    const { slot: memorySlot, ...expected } = memory.consumeSync(project, 5, time);
    const { slot: redisSlot, ...actual } = await shared.consume(project, 5, time);
    assert.deepEqual(actual, expected, `at ${time - times[0]!} ms`);
    assert.equal(redisSlot === undefined, memorySlot === undefined);
    // Every third allowed request is given back, in both.
    if (memorySlot && redisSlot && i % 3 === 0) {
      memory.releaseSync(project, memorySlot);
      await shared.release(project, redisSlot);
    }
  }
});

test("requests decided in the same instant share one script call, each decided as if alone", async (t) => {
  const redis = await requireRedis(t);
  if (!redis.ok) return;
  const prefix = uniqueRedisPrefix("ratelimit-grouped");
  cleanups.push(() => dropRedisPrefix(redis.url, prefix));
  const connection = new RedisConnection({ url: redis.url, name: "test-rate-limit-grouped" });
  const shared = new RedisRateLimiter(connection, { prefix, failMode: "closed" });
  await shared.start();
  t.after(() => shared.close());
  const scripts = countScripts(connection.client);
  const memory = new MemoryRateLimiter();
  const projects = [randomUUID(), randomUUID()];
  let now = 1_700_000_000_000;
  // Bursts of 7 requests sent together, on two projects in turn, with limits of 5 and 3: each
  // burst has requests allowed and refused, and the window's edge passes between some bursts.
  for (let burst = 0; burst < 12; burst++) {
    now += burst % 4 === 3 ? 60_000 : 9_000;
    const calls = Array.from({ length: 7 }, (_, i) => ({
      project: projects[i % 2]!,
      limit: i % 2 === 0 ? 5 : 3,
      time: now + (i >> 1),
    }));
    const before = scripts.calls;
    const decisions = await Promise.all(calls.map((c) => shared.consume(c.project, c.limit, c.time)));
    assert.equal(scripts.calls - before, 1, `burst ${burst}: one script call`);
    for (const [i, c] of calls.entries()) {
      const { slot: memorySlot, ...expected } = memory.consumeSync(c.project, c.limit, c.time);
      const { slot: redisSlot, ...actual } = decisions[i]!;
      assert.deepEqual(actual, expected, `burst ${burst}, request ${i}`);
      assert.equal(redisSlot === undefined, memorySlot === undefined);
    }
  }
  // A group bigger than one script call's bound is sent in several, still decided in order.
  const project = randomUUID();
  const many = await Promise.all(Array.from({ length: 600 }, () => shared.consume(project, 500, now)));
  assert.equal(many.filter((d) => d.allowed).length, 500);
  assert.deepEqual(
    many.slice(495, 505).map((d) => d.remaining),
    [4, 3, 2, 1, 0, 0, 0, 0, 0, 0],
  );
});

test("a Redis outage fails open or closed, as TIDEMARK_RATE_LIMIT_FAIL says", async (t) => {
  // Nothing listens on port 1 of the loopback: Redis is unreachable.
  for (const failMode of ["open", "closed"] as const) {
    const connection = new RedisConnection({
      url: "redis://127.0.0.1:1",
      name: "test-outage",
      connectWaitMs: 200,
    });
    const limiter = new RedisRateLimiter(connection, { prefix: "test-outage:", failMode });
    await limiter.start();
    t.after(() => limiter.close());
    if (failMode === "open") {
      const decision = await limiter.consume(randomUUID(), 100, Date.now());
      assert.equal(decision.allowed, true);
      assert.equal(await limiter.ready(), undefined, "failing open, Redis is not needed to serve");
    } else {
      await assert.rejects(
        limiter.consume(randomUUID(), 100, Date.now()),
        (error: unknown) => error instanceof AppError && error.status === 503 && error.retryAfter === 1,
      );
      assert.match((await limiter.ready()) ?? "", /rate limiter/);
    }
  }
});

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";
import type { FastifyRequest } from "fastify";
import { KeyResolver } from "../../src/api/auth.js";
import { AppError } from "../../src/core/errors.js";
import { hashKey } from "../../src/core/keys.js";
import type { KeyMatch, Project, ProjectStore } from "../../src/pipeline/project-store.js";

const project: Project = { id: "p1", name: "shop", plan: "PRO", createdAt: 0 };
const WRITE = "wk_dev_0123456789abcdefghijklmnopqrstuv";
const READ = "rk_dev_0123456789abcdefghijklmnopqrstuv";

/** A project store whose key reads the test settles by hand, counting them. */
function storeWithHandReads() {
  const keys = new Map<string, KeyMatch>([
    [hashKey(WRITE), { project, kind: "write" }],
    [hashKey(READ), { project, kind: "read" }],
  ]);
  const pending: (() => void)[] = [];
  let reads = 0;
  const store = {
    findByKeyHash(hash: string): Promise<KeyMatch | undefined> {
      reads++;
      // What the store holds when the read runs, answered when the test says so.
      const match = keys.get(hash);
      return new Promise((resolve) => pending.push(() => resolve(match)));
    },
  } as unknown as ProjectStore;
  return {
    store,
    keys,
    reads: () => reads,
    settle: () => {
      for (const answer of pending.splice(0)) answer();
    },
    /** Answers the newest read first: an early read that finishes last. */
    settleNewestFirst: () => {
      for (const answer of pending.splice(0).reverse()) answer();
    },
  };
}

const request = (key: string) =>
  ({ headers: { authorization: `Bearer ${key}` } }) as unknown as FastifyRequest;

test("the key hash is SHA-256 in hex, as stored by earlier versions", () => {
  assert.equal(hashKey(WRITE), createHash("sha256").update(WRITE).digest("hex"));
});

test("a cached key resolves at once, without a promise; a wrong kind or unknown key throws at once", async () => {
  const { store, settle } = storeWithHandReads();
  const resolver = new KeyResolver(store, "", 60_000);
  const first = resolver.resolve(request(WRITE), "write");
  assert.ok(first instanceof Promise, "the first use reads the store");
  settle();
  assert.deepEqual(await first, project);
  assert.deepEqual(resolver.resolve(request(WRITE), "write"), project);
  assert.throws(
    () => resolver.resolve(request(WRITE), "read"),
    (error) => error instanceof AppError && error.code === "forbidden",
  );
  assert.throws(
    () => resolver.resolve(request("xx_nope"), "write"),
    (error) => error instanceof AppError && error.code === "unauthorized",
  );
  assert.throws(
    () => resolver.resolve({ headers: {} } as unknown as FastifyRequest, "write"),
    (error) => error instanceof AppError && error.code === "unauthorized",
  );
});

test("requests with an uncached key share one store read", async () => {
  const { store, settle, reads } = storeWithHandReads();
  const resolver = new KeyResolver(store, "", 60_000);
  const waiting = Array.from({ length: 10 }, () => resolver.require(request(WRITE), "write"));
  assert.equal(reads(), 1);
  settle();
  for (const result of await Promise.all(waiting)) assert.deepEqual(result, project);
  assert.equal(reads(), 1);
});

test("a read that began before a rotation neither caches nor answers requests made after it", async () => {
  const { store, keys, settleNewestFirst, reads } = storeWithHandReads();
  const resolver = new KeyResolver(store, "", 60_000);
  const before = resolver.require(request(WRITE), "write");
  // The rotation: the store drops the key, then the cache forgets the project.
  keys.delete(hashKey(WRITE));
  resolver.forgetProject(project.id);
  const after = resolver.require(request(WRITE), "write");
  assert.equal(reads(), 2, "the request after the rotation reads the store again");
  settleNewestFirst();
  await before; // it was made before the rotation finished: either answer is right for it
  await assert.rejects(after, (error) => error instanceof AppError && error.code === "unauthorized");
  // What is cached is the later read's answer, not what the early one saw.
  assert.throws(
    () => resolver.resolve(request(WRITE), "write"),
    (error) => error instanceof AppError && error.code === "unauthorized",
  );
  assert.equal(reads(), 2);
});

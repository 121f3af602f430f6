import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, type TestContext, test } from "node:test";
import type { FastifyInstance } from "fastify";
import { postgresPipelineEnv } from "../helpers/services.js";
import { startTestTidemark, type TestTidemark } from "../helpers/tidemark.js";

// Embedded decides a request's limit in this process's memory, at once; async asks Redis, whose
// answer the request waits for before its body is read. The answers must be the same.

const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

const good = () => ({ event: "Ping", distinct_id: "u", uuid: randomUUID() });

for (const pipeline of ["embedded", "async"] as const) {
  describe(`what spends a project's rate limit (${pipeline})`, () => {
    let tidemark: TestTidemark | undefined;
    let app: FastifyInstance;
    let unavailable: string | undefined;
    before(async () => {
      let env: Record<string, string> = { TIDEMARK_MAX_BODY_BYTES: "4096" };
      if (pipeline === "async") {
        const services = await postgresPipelineEnv("async", cleanups);
        if (typeof services === "string") {
          unavailable = services;
          return;
        }
        env = { ...env, ...services };
      }
      tidemark = await startTestTidemark(env);
      app = tidemark.running.app!.fastify;
    });
    after(() => tidemark?.close());

    /** The running server, or undefined (the test skipped) when its services are absent. */
    const server = (t: TestContext): TestTidemark | undefined => {
      if (unavailable) t.skip(unavailable);
      return tidemark;
    };
    const send = (key: string, payload: unknown, headers: Record<string, string> = {}) =>
      app.inject({
        method: "POST",
        url: "/api/v1/event",
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json", ...headers },
        payload: typeof payload === "string" ? payload : JSON.stringify(payload),
      });
    /** The project's ledger once `accepted` reaches `expected` (async workers store after the 202). */
    const ledger = async (tidemark: TestTidemark, projectId: string, expected: number) => {
      const deadline = Date.now() + 20_000;
      for (;;) {
        const stats = await app.inject({
          url: `/api/v1/project/${projectId}/stats`,
          headers: { authorization: `Bearer ${tidemark.token}` },
        });
        const body = stats.json();
        if (body.accepted >= expected || Date.now() > deadline) return body;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    };

    test("refused bodies do not: 100 bad ones leave a FREE project its 100 requests", async (t) => {
      const tidemark = server(t);
      if (!tidemark) return;
      const free = await tidemark.createProject("FREE");
      const bad = [
        { event: "" }, // invalid
        "{not json",
        JSON.stringify({ ...good(), properties: { blob: "x".repeat(5000) } }), // 413
      ];
      for (let i = 0; i < 100; i++) {
        const response = await send(free.api_key, bad[i % bad.length]!);
        assert.ok([400, 413].includes(response.statusCode), `${response.statusCode} ${response.body}`);
        assert.equal(
          response.headers["x-ratelimit-remaining"],
          "100",
          "a refused request gives its slot back",
        );
      }
      const statuses: number[] = [];
      for (let i = 0; i < 101; i++) statuses.push((await send(free.api_key, good())).statusCode);
      assert.deepEqual(
        {
          accepted: statuses.filter((s) => s === 202).length,
          limited: statuses.filter((s) => s === 429).length,
        },
        { accepted: 100, limited: 1 },
      );
      const stats = await ledger(tidemark, free.id, 100);
      assert.equal(stats.accepted, 100);
      assert.equal(stats.rate_limited, 1);
    });

    test("garbage beyond the plan's limit of refusals per minute counts, so a key holder cannot flood for free", async (t) => {
      const tidemark = server(t);
      if (!tidemark) return;
      const free = await tidemark.createProject("FREE");
      for (let i = 0; i < 150; i++) assert.equal((await send(free.api_key, { event: "" })).statusCode, 400);
      // 100 refusals were free; the next 50 took slots.
      const statuses: number[] = [];
      for (let i = 0; i < 60; i++) statuses.push((await send(free.api_key, good())).statusCode);
      assert.equal(statuses.filter((s) => s === 202).length, 50);
      assert.equal(statuses.filter((s) => s === 429).length, 10);
      // With the budget spent, anything is refused before its body is read: garbage is no cheaper.
      const limited = await send(free.api_key, "{not json");
      assert.equal(limited.statusCode, 429);
      assert.equal(limited.json().error.code, "rate_limited");
    });

    test("a project with no slot left is answered 429 whatever its body, before a refusal was seen", async (t) => {
      const tidemark = server(t);
      if (!tidemark) return;
      const free = await tidemark.createProject("FREE");
      // Every slot spent by accepted events: nothing was refused yet.
      for (let i = 0; i < 100; i++) assert.equal((await send(free.api_key, good())).statusCode, 202);
      for (const bad of [{ event: "" }, "{not json", { ...good(), timestamp: "yesterday" }]) {
        const response = await send(free.api_key, bad);
        assert.equal(response.statusCode, 429, response.body);
        assert.equal(response.json().error.code, "rate_limited");
        assert.ok(Number(response.headers["retry-after"]) >= 1);
        assert.equal(response.headers["x-ratelimit-remaining"], "0");
      }
      const stats = await ledger(tidemark, free.id, 100);
      assert.equal(stats.accepted, 100);
      assert.equal(stats.rate_limited, 3);
      assert.deepEqual(stats.rejected, {}, "counted as refused by the limit, not as bad bodies");
    });

    test("unknown keys and read keys never touch a project's budget", async (t) => {
      const tidemark = server(t);
      if (!tidemark) return;
      const free = await tidemark.createProject("FREE");
      for (let i = 0; i < 120; i++) {
        assert.equal((await send(`wk_dev_${"x".repeat(32)}`, good())).statusCode, 401);
        assert.equal((await send(free.read_key, good())).statusCode, 403);
      }
      const first = await send(free.api_key, good());
      assert.equal(first.statusCode, 202);
      assert.equal(first.headers["x-ratelimit-remaining"], "99");
    });
  });
}

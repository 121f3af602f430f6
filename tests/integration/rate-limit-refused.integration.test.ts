import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import type { FastifyInstance } from "fastify";
import { startTestTidemark, type TestTidemark } from "../helpers/tidemark.js";

let tidemark: TestTidemark;
let app: FastifyInstance;
before(async () => {
  tidemark = await startTestTidemark({ TIDEMARK_MAX_BODY_BYTES: "4096" });
  app = tidemark.running.app!.fastify;
});
after(() => tidemark.close());

const good = () => ({ event: "Ping", distinct_id: "u", uuid: randomUUID() });
const send = (key: string, payload: unknown, headers: Record<string, string> = {}) =>
  app.inject({
    method: "POST",
    url: "/api/v1/event",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json", ...headers },
    payload: typeof payload === "string" ? payload : JSON.stringify(payload),
  });

describe("what spends a project's rate limit", () => {
  test("refused bodies do not: 100 bad ones leave a FREE project its 100 requests", async () => {
    const free = await tidemark.createProject("FREE");
    const bad = [
      { event: "" }, // invalid
      "{not json",
      JSON.stringify({ ...good(), properties: { blob: "x".repeat(5000) } }), // 413
    ];
    for (let i = 0; i < 100; i++) {
      const response = await send(free.api_key, bad[i % bad.length]!);
      assert.ok([400, 413].includes(response.statusCode), `${response.statusCode} ${response.body}`);
      assert.equal(response.headers["x-ratelimit-remaining"], "100", "a refused request gives its slot back");
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
    const stats = await tidemark.running.app!.fastify.inject({
      url: `/api/v1/project/${free.id}/stats`,
      headers: { authorization: `Bearer ${tidemark.token}` },
    });
    assert.equal(stats.json().accepted, 100);
    assert.equal(stats.json().rate_limited, 1);
  });

  test("garbage beyond the plan's limit of refusals per minute counts, so a key holder cannot flood for free", async () => {
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

  test("unknown keys and read keys never touch a project's budget", async () => {
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

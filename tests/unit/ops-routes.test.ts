import assert from "node:assert/strict";
import { test } from "node:test";
import Fastify from "fastify";
import { registerErrorHandler } from "../../src/api/error-handler.js";
import { Metrics } from "../../src/api/ops/metrics.js";
import { registerOpsRoutes } from "../../src/api/ops/ops.routes.js";
import type { Lifecycle } from "../../src/pipeline/lifecycle.js";

const part = (name: string, ready: () => Promise<string | undefined>): Lifecycle => ({
  name,
  start: async () => undefined,
  ready,
  close: async () => undefined,
});

test("a backend that cannot report makes /metrics say NaN for it, not fail the scrape", async () => {
  const metrics = new Metrics({
    queueDepth: async () => {
      throw new Error("connect ECONNREFUSED 10.0.0.7:6379");
    },
  });
  const app = Fastify();
  registerErrorHandler(app);
  registerOpsRoutes(app, { parts: [], metrics, isShuttingDown: () => false });
  const response = await app.inject({ url: "/metrics" });
  assert.equal(response.statusCode, 200);
  assert.match(response.body, /^tidemark_queue_depth_events nan$/im);
  assert.match(response.body, /tidemark_ingest_events_total|tidemark_http_requests_total/);
});

test("a readiness check that throws is a failing check (503), and its error is not answered", async () => {
  const app = Fastify();
  registerErrorHandler(app);
  registerOpsRoutes(app, {
    parts: [
      part("store", async () => undefined),
      part("queue", async () => {
        throw new Error("secret internal detail at 10.0.0.7");
      }),
    ],
    metrics: new Metrics(),
    isShuttingDown: () => false,
  });
  const response = await app.inject({ url: "/ready" });
  assert.equal(response.statusCode, 503);
  assert.deepEqual(response.json(), { status: "not_ready", checks: { store: "ok", queue: "check failed" } });
  assert.ok(!response.body.includes("10.0.0.7"));
});

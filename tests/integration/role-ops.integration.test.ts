import assert from "node:assert/strict";
import { after, test } from "node:test";
import pino from "pino";
import { loadConfig } from "../../src/config/config.js";
import { startTidemark } from "../../src/roles/server.js";
import { postgresPipelineEnv } from "../helpers/services.js";

// A process without the api role (here an async worker) answers /health, /ready and /metrics on
// its PORT, as the API does, so probes, `make status` and Prometheus reach every role alike.

const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

test("a worker-only process serves /health, /ready and /metrics, and nothing of the API", async (t) => {
  const env = await postgresPipelineEnv("async", cleanups);
  if (typeof env === "string") {
    t.skip(env);
    return;
  }
  const config = loadConfig({
    ...env,
    TIDEMARK_ROLE: "worker",
    PORT: "0",
    HOST: "127.0.0.1",
    TIDEMARK_LOG_LEVEL: "silent",
  });
  const running = await startTidemark(config, pino({ level: "silent" }));
  let closed = false;
  t.after(async () => {
    if (!closed) await running.close();
  });
  assert.equal(running.url, undefined, "a worker runs no API");
  assert.match(running.opsUrl, /^http:\/\/127\.0\.0\.1:\d+$/);

  const health = await fetch(`${running.opsUrl}/health`);
  assert.equal(health.status, 200);
  assert.equal(((await health.json()) as { service: string }).service, "tidemark");
  assert.ok(health.headers.get("x-tidemark-version"));

  const ready = await fetch(`${running.opsUrl}/ready`);
  const readyBody = (await ready.json()) as { status: string; checks: Record<string, string> };
  assert.equal(ready.status, 200, JSON.stringify(readyBody));
  assert.equal(readyBody.status, "ready");
  assert.equal(readyBody.checks.worker, "ok", "the role loop is among the checks");

  const metrics = await fetch(`${running.opsUrl}/metrics`);
  assert.equal(metrics.status, 200);
  assert.match(metrics.headers.get("content-type") ?? "", /^text\/plain/);
  const text = await metrics.text();
  assert.match(text, /^tidemark_queue_depth_events \d+$/m, "the stream's depth, as the worker sees it");
  assert.match(text, /^tidemark_process_resident_memory_bytes \d+/m);

  // The API's routes are not here: the one JSON 404.
  const event = await fetch(`${running.opsUrl}/api/v1/event`, { method: "POST", body: "{}" });
  assert.equal(event.status, 404);
  assert.equal(((await event.json()) as { error: { code: string } }).error.code, "not_found");

  closed = true;
  await running.close();
  await assert.rejects(fetch(`${running.opsUrl}/health`), "the ops server closes with the process");
});

import assert from "node:assert/strict";
import { test } from "node:test";
import { Counter, Histogram, Registry } from "prom-client";
import { Metrics } from "../../src/api/ops/metrics.js";

test("HTTP requests and latencies read the same as prom-client's own counter and histogram would", async () => {
  const metrics = new Metrics();
  const reference = new Registry();
  const requests = new Counter({
    name: "tidemark_http_requests_total",
    help: "HTTP requests by route and status",
    labelNames: ["route", "status"],
    registers: [reference],
  });
  const duration = new Histogram({
    name: "tidemark_http_request_duration_seconds",
    help: "HTTP request latency by route",
    labelNames: ["route"],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [reference],
  });
  const answered: [string, number, number][] = [
    ["/api/v1/event", 202, 0.0004],
    ["/api/v1/event", 202, 0.001],
    ["/api/v1/event", 400, 0.0031],
    ["/api/v1/event/batch", 202, 0.04],
    ["/api/v1/event/batch", 202, 7],
    ["unmatched", 404, 0.0001],
    ["/api/v1/event", 202, 0.25],
  ];
  const check = async () => {
    for (const name of ["tidemark_http_requests_total", "tidemark_http_request_duration_seconds"]) {
      assert.equal(
        await metrics.registry.getSingleMetricAsString(name),
        await reference.getSingleMetricAsString(name),
      );
    }
  };
  for (const [route, status, seconds] of answered) {
    metrics.recordHttp(route, status, seconds);
    requests.inc({ route, status });
    duration.observe({ route }, seconds);
  }
  await check();
  // Counts go on from what the last read gave.
  metrics.recordHttp("/api/v1/event", 202, 0.002);
  requests.inc({ route: "/api/v1/event", status: 202 });
  duration.observe({ route: "/api/v1/event" }, 0.002);
  await check();
  const json = (await metrics.registry.getMetricsAsJSON()).find(
    (m) => m.name === "tidemark_http_request_duration_seconds",
  );
  const expected = (await reference.getMetricsAsJSON()).find(
    (m) => m.name === "tidemark_http_request_duration_seconds",
  );
  assert.deepEqual(json?.values, expected?.values);
});

test("a store's memory: by tag, against its cap, one read a scrape, and a failed read fails no scrape", async () => {
  const metrics = new Metrics();
  const text = () => metrics.registry.metrics();
  // Without a store in the process, the gauges stay empty.
  assert.doesNotMatch(await text(), /^tidemark_store_memory_bytes\{/m);
  let reads = 0;
  let used = new Map([
    ["BASE_TABLE", 104_600_000],
    ["HASH_TABLE", 0],
    ["IN_MEMORY_TABLE", 24_100_000],
  ]);
  let failing = false;
  metrics.watch({
    storeMemory: async () => {
      reads++;
      if (failing) throw new Error("the store is closed");
      return { limitBytes: 512_000_000, usedBytes: used, spilledBytes: 3_000_000 };
    },
  });
  const first = await text();
  assert.equal(reads, 1, "the three gauges share one read");
  assert.match(first, /^tidemark_store_memory_bytes\{tag="BASE_TABLE"\} 104600000$/m);
  assert.match(first, /^tidemark_store_memory_bytes\{tag="IN_MEMORY_TABLE"\} 24100000$/m);
  assert.doesNotMatch(first, /tag="HASH_TABLE"/, "a tag holding nothing is left out");
  assert.match(first, /^tidemark_store_memory_limit_bytes 512000000$/m);
  assert.match(first, /^tidemark_store_spilled_bytes 3000000$/m);
  // A tag that empties leaves the next scrape.
  used = new Map([["BASE_TABLE", 200_000_000]]);
  const second = await text();
  assert.equal(reads, 2);
  assert.match(second, /^tidemark_store_memory_bytes\{tag="BASE_TABLE"\} 200000000$/m);
  assert.doesNotMatch(second, /IN_MEMORY_TABLE/);
  failing = true;
  const third = await text();
  assert.match(
    third,
    /^tidemark_http_requests_total|^# HELP tidemark_queue_depth_events/m,
    "the scrape still answers",
  );
  assert.doesNotMatch(third, /^tidemark_store_memory_bytes\{/m, "and shows no stale memory figures");
});

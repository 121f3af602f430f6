import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { test } from "node:test";
import { runLoad } from "../../bench/load.js";

// The benches' fixed-rate load (bench/load.ts): requests spread evenly over the run, and each
// request's latency counted from when it was due, so a server that falls behind shows it.

async function serve(delayMs: number): Promise<{ url: string; arrivals: number[]; server: Server }> {
  const arrivals: number[] = [];
  const server = createServer((request, response) => {
    arrivals.push(performance.now());
    request.resume();
    request.on("end", () => {
      setTimeout(() => {
        response.writeHead(202, { "content-type": "application/json" });
        response.end('{"status":"accepted"}');
      }, delayMs);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/api/v1/event`, arrivals, server };
}

const options = { name: "paced", body: "{}", eventsPerRequest: 1, keys: ["wk_a", "wk_b"] };

test("a fixed rate is spread over the run, not sent as each second's burst", async (t) => {
  const { url, arrivals, server } = await serve(0);
  t.after(() => server.close());
  const started = performance.now();
  const result = await runLoad({ ...options, url, connections: 50, durationS: 2, rate: 200 });
  assert.equal(result.requests, 400);
  assert.equal(result.ok, 400);
  assert.equal(arrivals.length, 400);
  // Evenly spaced, 50 arrive in each quarter of a second; one burst a second would bring 200.
  for (let quarter = 0; quarter < 8; quarter++) {
    const from = started + quarter * 250;
    const inQuarter = arrivals.filter((at) => at >= from && at < from + 250).length;
    assert.ok(inQuarter <= 110, `${inQuarter} requests arrived in quarter ${quarter}`);
  }
});

test("a request that waits for a connection counts its wait: latency runs from when it was due", async (t) => {
  // One connection and a server that takes 50 ms a request: 20 a second, against 50 offered.
  const { url, server } = await serve(50);
  t.after(() => server.close());
  const result = await runLoad({ ...options, url, connections: 1, durationS: 1, rate: 50 });
  assert.equal(result.ok, 50);
  // The last request was due at 1 s and answered at about 2.5 s; from when it went out, 50 ms.
  assert.ok(result.max > 1000, `the slowest request took ${result.max} ms`);
  assert.ok(result.p50 > 300, `P50 ${result.p50} ms`);
});

test("a paced load offers nothing once `until` settles, and its rates are over the time it ran", async (t) => {
  const { url, arrivals, server } = await serve(0);
  t.after(() => server.close());
  const until = new Promise((resolve) => setTimeout(resolve, 500));
  const started = performance.now();
  const result = await runLoad({ ...options, url, connections: 10, durationS: 30, rate: 100, until });
  assert.ok(performance.now() - started < 2_000, "the load ended soon after `until`, not after 30 s");
  // About 50 requests in half a second of 100 a second; 3,000 had the load run its whole duration.
  assert.ok(result.requests >= 40 && result.requests <= 60, `${result.requests} requests`);
  assert.equal(arrivals.length, result.requests);
  assert.ok(result.rps > 70 && result.rps < 130, `${result.rps} req/s`);
});

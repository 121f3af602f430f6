/**
 * What the benchmarks share: one autocannon run with exact latency percentiles, and the no-op
 * HTTP server that shows the machine's ceiling. Method: bench/README.md.
 */
import { spawn } from "node:child_process";
import { DuckDBInstance } from "@duckdb/node-api";
import autocannon from "autocannon";
import { Pool } from "undici";

export interface LoadOptions {
  name: string;
  url: string;
  body: string;
  /** Events per request, for events/s. */
  eventsPerRequest: number;
  /** Write keys used in turn, so a per-project rate limit is not what is measured. */
  keys: readonly string[];
  connections: number;
  durationS: number;
  /** Requests per second offered in all (open loop); 0 for a closed loop. */
  rate?: number;
  /**
   * With `rate`: no request is offered once this settles, and the rates are over the time the
   * requests were offered, so `durationS` is then the longest the load runs.
   */
  until?: Promise<unknown>;
  /**
   * How a request carries its key: headers, and a body of its own when the key is in the body
   * (PostHog's doors); `Authorization: Bearer <key>` and `body` when absent.
   */
  keyed?: (key: string) => { headers: Record<string, string>; body?: string };
}

export interface LoadResult {
  name: string;
  requests: number;
  ok: number;
  rps: number;
  eventsPerSecond: number;
  p50: number;
  p95: number;
  p99: number;
  p999: number;
  max: number;
  non2xx: number;
  errors: number;
}

/** The five properties every ingest bench's events carry (about 110 bytes as JSON). */
export const SAMPLE_PROPERTIES = {
  path: "/pricing",
  plan: "pro",
  price: 19.99,
  browser: "Firefox",
  referrer: "https://example.com/blog/post",
} as const;

/**
 * The event body the embedded ingest benches send: one of three names, user `user_<i>`, and
 * SAMPLE_PROPERTIES (about 150 bytes as JSON), so figures of different benches compare.
 */
export function sampleEvent(i: number) {
  return {
    event: ["Page View", "Click", "Add To Cart"][i % 3]!,
    distinct_id: `user_${i}`,
    properties: SAMPLE_PROPERTIES,
  };
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/**
 * The same fixed DuckDB work (hashing and summing 20M integers on 2 threads, median of 10), in ms:
 * this host's speed drifts between runs, by 1.4x or more in an afternoon (benchmarks/README.md),
 * and runs are comparable only at a like reference time.
 */
export async function machineReference(): Promise<number> {
  const instance = await DuckDBInstance.create(":memory:", { threads: "2" });
  const connection = await instance.connect();
  const times: number[] = [];
  for (let i = 0; i < 11; i++) {
    const started = performance.now();
    await connection.run("SELECT sum(hash(range)) FROM range(20000000)");
    if (i > 0) times.push(performance.now() - started);
  }
  connection.closeSync();
  instance.closeSync();
  times.sort((a, b) => a - b);
  return percentile(times, 50);
}

/**
 * One load run; latencies are recorded per response so every percentile is exact. A closed loop
 * (each connection sends its next request when its last is answered) runs on autocannon; a fixed
 * rate is paced evenly (runPacedLoad).
 */
export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  if (options.rate) return runPacedLoad(options, options.rate);
  const latencies: number[] = [];
  let next = 0;
  const instance = autocannon({
    url: options.url,
    method: "POST",
    connections: options.connections,
    duration: options.durationS,
    headers: { "content-type": "application/json" },
    requests: [
      {
        method: "POST",
        body: options.body,
        setupRequest: (request) => {
          const keyed = keyedRequest(options, next++);
          request.headers = { ...request.headers, ...keyed.headers };
          request.body = keyed.body;
          return request;
        },
      },
    ],
  });
  // The typings return a Promise; the object is also the run's EventEmitter.
  (instance as unknown as NodeJS.EventEmitter).on(
    "response",
    (_client: unknown, _status: number, _bytes: number, responseTime: number) => latencies.push(responseTime),
  );
  const result = await instance;
  return summarise(options, latencies, {
    requests: result.requests.total,
    ok: result["2xx"],
    non2xx: result.non2xx,
    errors: result.errors + result.timeouts,
  });
}

/** The n-th request's key headers and body: the keys in turn, as `options.keyed` places them. */
function keyedRequest(options: LoadOptions, n: number): { headers: Record<string, string>; body: string } {
  const key = options.keys[n % options.keys.length]!;
  const keyed = options.keyed?.(key);
  return {
    headers: keyed?.headers ?? { authorization: `Bearer ${key}` },
    body: keyed?.body ?? options.body,
  };
}

/** A run's figures from its counts and every response's latency (sorted here). */
function summarise(
  options: LoadOptions,
  latencies: number[],
  counts: Pick<LoadResult, "requests" | "ok" | "non2xx" | "errors">,
): LoadResult {
  latencies.sort((a, b) => a - b);
  return {
    name: options.name,
    ...counts,
    rps: counts.ok / options.durationS,
    eventsPerSecond: (counts.ok * options.eventsPerRequest) / options.durationS,
    p50: percentile(latencies, 50),
    p95: percentile(latencies, 95),
    p99: percentile(latencies, 99),
    p999: percentile(latencies, 99.9),
    max: latencies.at(-1) ?? Number.NaN,
  };
}

/**
 * `rate` requests a second, evenly spaced (the i-th is due at start + i / rate), over a pool of
 * `connections` keep-alive connections. Open loop: a request that finds every connection busy
 * waits in the pool's queue, and its latency counts from when it was due, not from when it went
 * out, so a server that falls behind shows it. (autocannon's fixed rate lets each connection send
 * its share of a second back to back from the second's start, then idle: 500 requests a second
 * over 50 connections arrived as one burst of 500, and the figures were the burst's.)
 */
async function runPacedLoad(options: LoadOptions, rate: number): Promise<LoadResult> {
  const target = new URL(options.url);
  const pool = new Pool(target.origin, { connections: options.connections, pipelining: 1 });
  const latencies: number[] = [];
  let ok = 0;
  let non2xx = 0;
  let errors = 0;
  let next = 0;
  const send = (due: number): Promise<void> => {
    const keyed = keyedRequest(options, next++);
    return pool
      .request({
        path: target.pathname + target.search,
        method: "POST",
        headers: { "content-type": "application/json", ...keyed.headers },
        body: keyed.body,
      })
      .then(async (response) => {
        await response.body.dump();
        latencies.push(performance.now() - due);
        if (response.statusCode >= 200 && response.statusCode < 300) ok++;
        else non2xx++;
      })
      .catch(() => {
        errors++;
      });
  };
  const total = Math.round(rate * options.durationS);
  const spacing = 1000 / rate;
  const start = performance.now();
  const sent: Promise<void>[] = [];
  let stopped = false;
  const stop = () => {
    stopped = true;
  };
  options.until?.then(stop, stop);
  await new Promise<void>((resolve) => {
    const tick = () => {
      if (stopped) return resolve();
      const now = performance.now();
      while (sent.length < total && start + sent.length * spacing <= now) {
        sent.push(send(start + sent.length * spacing));
      }
      if (sent.length >= total) resolve();
      else setTimeout(tick, Math.max(0, start + sent.length * spacing - performance.now()));
    };
    tick();
  });
  const offeredS = stopped ? (performance.now() - start) / 1000 : options.durationS;
  await Promise.all(sent);
  await pool.close();
  return summarise({ ...options, durationS: offeredS }, latencies, {
    requests: sent.length,
    ok,
    non2xx,
    errors,
  });
}

/**
 * A server that reads the body and answers 202 with a small JSON: the machine's HTTP ceiling. It
 * runs in its own process, as Tidemark does, so it does not share the load generator's thread.
 */
const NOOP_SERVER = `
  const server = require("node:http").createServer((request, response) => {
    request.on("data", () => {});
    request.on("end", () => {
      response.writeHead(202, { "content-type": "application/json" });
      response.end('{"status":"accepted"}');
    });
  });
  server.listen(0, "127.0.0.1", () => process.stdout.write(String(server.address().port) + "\\n"));
`;

export function startNoopServer(): Promise<{ url: string; close(): void }> {
  const child = spawn(process.execPath, ["-e", NOOP_SERVER], { stdio: ["ignore", "pipe", "inherit"] });
  return new Promise((resolve, reject) => {
    child.once("error", reject);
    child.stdout.once("data", (chunk: Buffer) => {
      resolve({ url: `http://127.0.0.1:${chunk.toString().trim()}`, close: () => child.kill() });
    });
  });
}

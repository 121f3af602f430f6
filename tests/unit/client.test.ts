import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, test } from "node:test";
import { gunzipSync, gzipSync } from "node:zlib";
import { parseRetryAfter, retryDelay } from "../../clients/js/src/backoff.js";
import {
  Client,
  KEEPALIVE_BUDGET,
  type Platform,
  planUnload,
  type TidemarkError,
  type TidemarkOptions,
  type WireEvent,
} from "../../clients/js/src/client.js";
import { uuidv4 } from "../../clients/js/src/uuid.js";

/**
 * Tidemark's client (clients/js) on a fake clock and a scripted fetch: batching, backoff,
 * Retry-After, what is retried and what is not, identity. Nothing here waits on real time.
 */

interface Timer {
  at: number;
  run(): void;
}

/** Promises chained on resolved ones settle before a macrotask runs. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

class FakeClock {
  now = Date.parse("2026-11-02T09:00:00Z");
  private timers: Timer[] = [];

  readonly setTimer = (run: () => void, ms: number): Timer => {
    const timer = { at: this.now + ms, run };
    this.timers.push(timer);
    return timer;
  };

  readonly clearTimer = (timer: unknown): void => {
    this.timers = this.timers.filter((t) => t !== timer);
  };

  /** Moves time on by `ms`, running each timer that falls due, in order, letting promises settle. */
  async advance(ms: number): Promise<void> {
    const end = this.now + ms;
    await settle();
    for (;;) {
      const due = this.timers.filter((t) => t.at <= end).sort((a, b) => a.at - b.at)[0];
      if (!due) break;
      this.clearTimer(due);
      this.now = due.at;
      due.run();
      await settle();
    }
    this.now = end;
    await settle();
  }
}

interface Sent {
  at: number;
  headers: Record<string, string>;
  events: WireEvent[];
  sentAt: string;
  keepalive: boolean;
}

type Reply = Response | Promise<Response> | "drop" | "hang";

/** A platform whose fetch answers from `reply` (202 by default) and records every request. */
function fakePlatform(clock: FakeClock, reply: (request: Sent, n: number) => Reply = () => accepted()) {
  const sent: Sent[] = [];
  const storage = new Map<string, string>();
  const platform: Platform = {
    now: () => clock.now,
    setTimer: clock.setTimer,
    clearTimer: clock.clearTimer,
    random: () => 0,
    uuid: randomUUID,
    load: (key) => storage.get(key) ?? null,
    save: (key, value) => (value === null ? storage.delete(key) : storage.set(key, value)),
    fetch: async (_url, init) => {
      const headers = init?.headers as Record<string, string>;
      const raw = init?.body as string | Uint8Array;
      const text =
        headers["content-encoding"] === "gzip"
          ? gunzipSync(raw as Uint8Array).toString()
          : (raw as string).toString();
      const body = JSON.parse(text) as { events: WireEvent[]; sent_at: string };
      const request = {
        at: clock.now,
        headers,
        events: body.events,
        sentAt: body.sent_at,
        keepalive: init?.keepalive === true,
      };
      sent.push(request);
      const answer = reply(request, sent.length);
      if (answer === "drop") throw new TypeError("fetch failed: socket hang up");
      if (answer === "hang") {
        return new Promise<Response>((_resolve, reject) => {
          init?.signal?.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")));
        });
      }
      return answer;
    },
  };
  return { platform, sent, storage };
}

const accepted = () => new Response(JSON.stringify({ status: "accepted" }), { status: 202 });
const json = (status: number, body: unknown, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });
const failure = (status: number, code: string, headers: Record<string, string> = {}) =>
  json(status, { error: { code, message: `${code} happened` } }, headers);

function setup(
  options: Partial<TidemarkOptions> = {},
  reply?: (request: Sent, n: number) => Reply,
): { client: Client; clock: FakeClock; sent: Sent[]; errors: TidemarkError[]; storage: Map<string, string> } {
  const clock = new FakeClock();
  const { platform, sent, storage } = fakePlatform(clock, reply);
  const errors: TidemarkError[] = [];
  const client = new Client(
    { apiKey: "wk_test_key", host: "http://tidemark.test/", onError: (e) => errors.push(e), ...options },
    platform,
  );
  return { client, clock, sent, errors, storage };
}

describe("batching", () => {
  test("a batch leaves when flushAt events wait, and not before", async () => {
    const { client, clock, sent } = setup({ flushAt: 3, flushInterval: 60_000 });
    client.track("a");
    client.track("b");
    await clock.advance(0);
    assert.equal(sent.length, 0);
    client.track("c");
    await clock.advance(0);
    assert.equal(sent.length, 1);
    assert.deepEqual(
      sent[0]!.events.map((e) => e.event),
      ["a", "b", "c"],
    );
    assert.equal(sent[0]!.headers.authorization, "Bearer wk_test_key");
  });

  test("a lone event leaves after flushInterval, and not before", async () => {
    const { client, clock, sent } = setup({ flushAt: 100, flushInterval: 5000 });
    client.track("a");
    await clock.advance(4999);
    assert.equal(sent.length, 0);
    await clock.advance(1);
    assert.equal(sent.length, 1);
    assert.equal(sent[0]!.at - Date.parse("2026-11-02T09:00:00Z"), 5000);
  });

  test("flush sends everything at once, in batches of at most maxBatchSize, in order", async () => {
    const { client, sent } = setup({ flushAt: 1000, maxBatchSize: 4 });
    for (let i = 0; i < 10; i++) client.track(`e${i}`);
    await client.flush();
    assert.deepEqual(
      sent.map((r) => r.events.length),
      [4, 4, 2],
    );
    assert.deepEqual(
      sent.flatMap((r) => r.events.map((e) => e.event)),
      Array.from({ length: 10 }, (_, i) => `e${i}`),
    );
  });

  test("one request at a time: events tracked during a send go in the next", async () => {
    let release: (() => void) | undefined;
    const { client, clock, sent } = setup({ flushAt: 2 }, (_request, n) =>
      n === 1 ? new Promise<void>((r) => (release = r)).then(accepted) : accepted(),
    );
    client.track("a");
    client.track("b");
    await clock.advance(0);
    client.track("c");
    client.track("d");
    await clock.advance(0);
    assert.equal(sent.length, 1, "the second batch waits for the first answer");
    release?.();
    await client.flush();
    assert.deepEqual(
      sent.map((r) => r.events.map((e) => e.event)),
      [
        ["a", "b"],
        ["c", "d"],
      ],
    );
  });

  test("an event carries a uuid, its time of tracking, and the batch its time of sending", async () => {
    const { client, clock, sent } = setup({ flushAt: 100 });
    const uuid = client.track("Signup", { plan: "pro" });
    await clock.advance(2000);
    await client.flush();
    const event = sent[0]!.events[0]!;
    assert.equal(event.uuid, uuid);
    assert.match(event.uuid, /^[0-9a-f-]{36}$/);
    assert.equal(event.timestamp, "2026-11-02T09:00:00.000Z");
    assert.equal(sent[0]!.sentAt, "2026-11-02T09:00:02.000Z");
    assert.deepEqual(event.properties, { plan: "pro" });
  });

  test("properties are copied when tracked: a later change does not leak into the event", async () => {
    const { client, sent } = setup();
    const properties = { step: 1 };
    client.track("a", properties);
    properties.step = 2;
    await client.flush();
    assert.deepEqual(sent[0]!.events[0]!.properties, { step: 1 });
  });

  test("a timestamp, distinct id and uuid given to track are sent as given", async () => {
    const { client, sent } = setup();
    const uuid = randomUUID();
    client.track("a", undefined, { distinctId: "user_9", timestamp: new Date("2026-01-01T00:00:00Z"), uuid });
    client.track("b", undefined, { timestamp: 1_780_000_000_000 });
    await client.flush();
    assert.deepEqual(sent[0]!.events[0], {
      uuid,
      event: "a",
      distinct_id: "user_9",
      timestamp: "2026-01-01T00:00:00.000Z",
    });
    assert.equal(sent[0]!.events[1]!.timestamp, 1_780_000_000_000);
  });

  test("past maxQueueSize new events are refused and reported; so are unserializable ones", async () => {
    const { client, errors } = setup({ flushAt: 100, maxQueueSize: 2 });
    assert.ok(client.track("a"));
    assert.ok(client.track("b"));
    assert.equal(client.track("c"), undefined);
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    assert.equal(client.track("d", circular), undefined);
    assert.deepEqual(
      errors.map((e) => e.events[0]?.event),
      ["c", "d"],
    );
    assert.match(errors[0]!.message, /maxQueueSize/);
    assert.match(errors[1]!.message, /JSON/);
  });

  test("gzip: the body is compressed and says so when the platform can", async () => {
    const clock = new FakeClock();
    const { platform, sent } = fakePlatform(clock);
    platform.gzip = async (body) => new Uint8Array(gzipSync(body));
    const client = new Client({ apiKey: "wk_x", host: "http://t" }, platform);
    client.track("a");
    await client.flush();
    assert.equal(sent[0]!.headers["content-encoding"], "gzip");
    assert.equal(sent[0]!.events[0]!.event, "a");
    const plain = new Client({ apiKey: "wk_x", host: "http://t", gzip: false }, platform);
    plain.track("b");
    await plain.flush();
    assert.equal(sent[1]!.headers["content-encoding"], undefined);
  });
});

describe("retries", () => {
  test("exponential backoff with jitter between attempts, the same uuids each time", async () => {
    const { client, clock, sent, errors } = setup({ retryBaseMs: 1000, retryMaxMs: 8000 }, (_r, n) =>
      n <= 5 ? "drop" : accepted(),
    );
    const uuid = client.track("a");
    const done = client.flush();
    await clock.advance(60_000);
    await done;
    // random() is 0 here: each wait is half of min(8000, 1000 * 2^attempt).
    const gaps = sent.slice(1).map((r, i) => r.at - sent[i]!.at);
    assert.deepEqual(gaps, [500, 1000, 2000, 4000, 4000]);
    assert.ok(sent.every((r) => r.events[0]!.uuid === uuid));
    assert.deepEqual(errors, []);
  });

  test("the jitter spreads waits between half and all of the step", () => {
    const policy = { baseMs: 1000, maxMs: 30_000 };
    assert.equal(
      retryDelay(0, undefined, policy, () => 0),
      500,
    );
    assert.equal(
      retryDelay(0, undefined, policy, () => 0.999999),
      999.9995,
    );
    assert.equal(
      retryDelay(3, undefined, policy, () => 0.5),
      6000,
    );
    assert.equal(
      retryDelay(10, undefined, policy, () => 1),
      30_000,
    );
    assert.equal(
      retryDelay(10, 7000, policy, () => 0.5),
      7500,
      "Retry-After plus up to baseMs",
    );
  });

  test("429 with Retry-After: the next attempt waits exactly that long", async () => {
    const { client, clock, sent } = setup({}, (_r, n) =>
      n === 1 ? failure(429, "rate_limited", { "retry-after": "7" }) : accepted(),
    );
    client.track("a");
    const done = client.flush();
    await clock.advance(6999);
    assert.equal(sent.length, 1, "not a millisecond early");
    await clock.advance(1);
    await done;
    assert.equal(sent.length, 2);
    assert.equal(sent[1]!.at - sent[0]!.at, 7000);
  });

  test("503 with Retry-After longer than the backoff cap is still honoured", async () => {
    const { client, clock, sent } = setup({ retryMaxMs: 2000 }, (_r, n) =>
      n === 1 ? failure(503, "overloaded", { "retry-after": "45" }) : accepted(),
    );
    client.track("a");
    const done = client.flush();
    await clock.advance(120_000);
    await done;
    assert.equal(sent[1]!.at - sent[0]!.at, 45_000);
  });

  test("Retry-After as an HTTP date", () => {
    const now = Date.parse("2026-11-02T09:00:00Z");
    assert.equal(parseRetryAfter("Mon, 02 Nov 2026 09:00:30 GMT", now), 30_000);
    assert.equal(parseRetryAfter("Mon, 02 Nov 2026 08:00:00 GMT", now), 0, "a past date: at once");
    assert.equal(parseRetryAfter("soon", now), undefined);
    assert.equal(parseRetryAfter(null, now), undefined);
    assert.equal(parseRetryAfter(" 12 ", now), 12_000);
  });

  for (const status of [408, 429, 500, 502, 503, 504]) {
    test(`${status} is retried`, async () => {
      const { client, clock, sent, errors } = setup({}, (_r, n) =>
        n === 1 ? failure(status, "x") : accepted(),
      );
      client.track("a");
      const done = client.flush();
      await clock.advance(10_000);
      await done;
      assert.equal(sent.length, 2);
      assert.deepEqual(errors, []);
    });
  }

  for (const [status, code] of [
    [400, "invalid_json"],
    [401, "unauthorized"],
    [403, "forbidden"],
    [404, "not_found"],
    [413, "payload_too_large"],
    [415, "unsupported_media_type"],
  ] as const) {
    test(`${status} is not retried: the events are reported once`, async () => {
      const { client, clock, sent, errors } = setup({}, () => failure(status, code));
      client.track("a");
      const done = client.flush();
      await clock.advance(600_000);
      await done;
      assert.equal(sent.length, 1);
      assert.equal(errors.length, 1);
      assert.equal(errors[0]!.status, status);
      assert.equal(errors[0]!.code, code);
      assert.equal(errors[0]!.events[0]!.event, "a");
      assert.match(errors[0]!.message, new RegExp(`${status}: ${code} happened`));
    });
  }

  test("after maxRetries the batch is reported, and the next one is sent", async () => {
    const { client, clock, sent, errors } = setup({ maxRetries: 3, maxBatchSize: 1 }, (r) =>
      r.events[0]!.event === "a" ? failure(503, "unavailable") : accepted(),
    );
    client.track("a");
    client.track("b");
    const done = client.flush();
    await clock.advance(600_000);
    await done;
    assert.deepEqual(
      sent.map((r) => r.events[0]!.event),
      ["a", "a", "a", "a", "b"],
    );
    assert.equal(errors.length, 1);
    assert.match(errors[0]!.message, /503.*after 3 retries/);
  });

  test("a request with no answer is abandoned after timeoutMs and retried", async () => {
    const { client, clock, sent } = setup({ timeoutMs: 10_000 }, (_r, n) => (n === 1 ? "hang" : accepted()));
    client.track("a");
    const done = client.flush();
    await clock.advance(9999);
    assert.equal(sent.length, 1);
    await clock.advance(1);
    await clock.advance(1000);
    await done;
    assert.equal(sent.length, 2);
    assert.equal(sent[1]!.at - sent[0]!.at, 10_500, "the timeout, then the first backoff step");
  });

  test("a 400 naming some events drops those and sends the rest again at once", async () => {
    const { client, sent, errors } = setup({}, (_r, n) =>
      n === 1
        ? json(400, {
            error: {
              code: "validation_failed",
              message: "2 problems",
              details: [
                { index: 1, field: "event", message: "too long" },
                { index: 3, field: "distinct_id", message: "empty" },
              ],
            },
          })
        : accepted(),
    );
    for (const name of ["a", "b", "c", "d", "e"]) client.track(name);
    await client.flush();
    assert.deepEqual(
      sent.map((r) => r.events.map((e) => e.event)),
      [
        ["a", "b", "c", "d", "e"],
        ["a", "c", "e"],
      ],
    );
    assert.equal(errors.length, 1);
    assert.equal(errors[0]!.code, "validation_failed");
    assert.deepEqual(
      errors[0]!.events.map((e) => e.event),
      ["b", "d"],
    );
  });

  test("a 413 on a batch splits it in halves", async () => {
    const { client, sent, errors } = setup({}, (r) =>
      r.events.length > 2 ? failure(413, "payload_too_large") : accepted(),
    );
    for (const name of ["a", "b", "c", "d", "e"]) client.track(name);
    await client.flush();
    assert.deepEqual(
      sent.map((r) => r.events.length),
      [5, 3, 2, 1, 2],
    );
    assert.deepEqual(errors, []);
  });

  test("duplicates in a 202 (a retry of stored events) are success", async () => {
    const { client, errors } = setup({}, () =>
      json(202, { status: "accepted", count: 1, duplicates: 1, duplicate_indexes: [0] }),
    );
    client.track("a");
    await client.flush();
    assert.deepEqual(errors, []);
  });
});

describe("identity", () => {
  test("identify links the anonymous id with $identify, then sends as the user", async () => {
    const { client, sent, storage } = setup();
    const anonymous = client.distinctId;
    client.track("Page View");
    client.identify("user_42", { plan: "pro" });
    client.track("Purchase");
    await client.flush();
    const [view, identify, purchase] = sent[0]!.events;
    assert.equal(view!.distinct_id, anonymous);
    assert.deepEqual(identify, {
      ...identify,
      event: "$identify",
      distinct_id: "user_42",
      properties: { $anon_distinct_id: anonymous, $set: { plan: "pro" } },
    });
    assert.equal(purchase!.distinct_id, "user_42");
    assert.deepEqual(JSON.parse(storage.get("tidemark_id")!), { id: "user_42", anonymous: false });
  });

  test("identify from an identified id links nothing; the same id without traits sends nothing", async () => {
    const { client, sent } = setup();
    client.identify("user_1");
    client.identify("user_1");
    client.identify("user_2", { name: "Bo" });
    client.identify("user_2", { plan: "pro" });
    await client.flush();
    assert.deepEqual(
      sent[0]!.events.map((e) => [e.event, e.distinct_id, Object.keys(e.properties ?? {})]),
      [
        ["$identify", "user_1", ["$anon_distinct_id"]],
        ["$identify", "user_2", ["$set"]],
        ["$identify", "user_2", ["$set"]],
      ],
    );
  });

  test("alias sends $create_alias from the current id, which does not change", async () => {
    const { client, sent } = setup();
    client.identify("user_1");
    client.alias("user_1@example.com");
    client.alias("anon-from-cookie", "user_7");
    await client.flush();
    const [, alias, other] = sent[0]!.events;
    assert.deepEqual(
      [alias!.event, alias!.distinct_id, alias!.properties],
      ["$create_alias", "user_1", { alias: "user_1@example.com" }],
    );
    assert.deepEqual([other!.distinct_id, other!.properties], ["user_7", { alias: "anon-from-cookie" }]);
    assert.equal(client.distinctId, "user_1");
  });

  test("the anonymous id is kept in storage across clients; reset makes a new one", () => {
    const clock = new FakeClock();
    const { platform, storage } = fakePlatform(clock);
    const first = new Client({ apiKey: "wk_x", host: "http://t" }, platform);
    const second = new Client({ apiKey: "wk_x", host: "http://t" }, platform);
    assert.equal(second.distinctId, first.distinctId);
    second.reset();
    assert.notEqual(second.distinctId, first.distinctId);
    assert.deepEqual(JSON.parse(storage.get("tidemark_id")!), { id: second.distinctId, anonymous: true });
    const given = new Client({ apiKey: "wk_x", host: "http://t", distinctId: "server" }, platform);
    assert.equal(given.distinctId, "server");
  });

  test("uuidv4 makes version 4 uuids that differ", () => {
    const made = new Set(Array.from({ length: 1000 }, uuidv4));
    assert.equal(made.size, 1000);
    for (const uuid of made)
      assert.match(uuid, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });
});

describe("shutdown and unload", () => {
  test("shutdown sends what waits, then refuses new events", async () => {
    const { client, sent, errors } = setup({ flushAt: 100 });
    client.track("a");
    await client.shutdown();
    assert.equal(sent.length, 1);
    assert.equal(client.track("b"), undefined);
    assert.match(errors[0]!.message, /shut down/);
  });

  test("shutdown gives up after its timeout and reports what was not confirmed", async () => {
    const { client, clock, sent, errors } = setup({}, () => failure(503, "unavailable"));
    client.track("a");
    client.track("b");
    const done = client.shutdown(5000);
    await clock.advance(5000);
    await done;
    assert.equal(errors.length, 1);
    assert.match(errors[0]!.message, /shutdown's 5000 ms/);
    assert.equal(errors[0]!.events.length, 2);
    const requests = sent.length;
    await clock.advance(600_000);
    assert.equal(sent.length, requests, "no retry after shutdown gave up");
  });

  test("unload sends what waits with keepalive, uncompressed", async () => {
    const clock = new FakeClock();
    const { platform, sent } = fakePlatform(clock);
    platform.gzip = async (body) => new Uint8Array(gzipSync(body));
    platform.keepalive = true;
    class Page extends Client {
      leave() {
        this.unload();
      }
    }
    const page = new Page({ apiKey: "wk_x", host: "http://t", flushAt: 100 }, platform);
    page.track("a");
    page.track("b");
    page.leave();
    await clock.advance(0);
    assert.equal(sent.length, 1);
    assert.equal(sent[0]!.keepalive, true);
    assert.equal(sent[0]!.headers["content-encoding"], undefined);
    assert.deepEqual(
      sent[0]!.events.map((e) => e.event),
      ["a", "b"],
    );
    await clock.advance(600_000);
    assert.equal(sent.length, 1, "the flush timer was cancelled: nothing is sent twice");
  });

  test("unload includes a batch waiting for its retry; what passes the budget waits for the next page", async () => {
    const clock = new FakeClock();
    const { platform, sent, storage } = fakePlatform(clock, (_r, n) =>
      n === 1 ? failure(503, "unavailable", { "retry-after": "30" }) : accepted(),
    );
    platform.keepalive = true;
    class Page extends Client {
      leave() {
        this.unload();
      }
    }
    const page = new Page({ apiKey: "wk_x", host: "http://t", flushAt: 1 }, platform);
    page.track("retried");
    await clock.advance(0);
    const big = "x".repeat(20_000);
    for (let i = 0; i < 4; i++) page.track(`big${i}`, { big });
    page.leave();
    await clock.advance(0);
    const unloaded = sent.slice(1).flatMap((r) => r.events.map((e) => e.event));
    assert.deepEqual(unloaded, ["retried", "big0", "big1"], "60 KB fit: the retried batch and two big ones");
    const kept = JSON.parse(storage.get("tidemark_queue_wk_x")!) as string[];
    assert.deepEqual(
      kept.map((e) => (JSON.parse(e) as WireEvent).event),
      ["big2", "big3"],
    );
    // The next page sends them.
    const next = new Page({ apiKey: "wk_x", host: "http://t", flushInterval: 1000 }, platform);
    assert.equal(storage.has("tidemark_queue_wk_x"), false);
    await clock.advance(1000);
    await next.flush();
    assert.deepEqual(
      sent.at(-1)!.events.map((e) => e.event),
      ["big2", "big3"],
    );
  });

  test("planUnload keeps every request and their sum within the keepalive budget", () => {
    const events = Array.from({ length: 50 }, (_, i) => JSON.stringify({ i, pad: "é".repeat(1000) }));
    const { requests, rest } = planUnload(events, KEEPALIVE_BUDGET, 20);
    assert.ok(requests.every((r) => r.length <= 20));
    const bytes = requests.reduce(
      (sum, r) => sum + Buffer.byteLength(`{"events":[${r.join(",")}],"sent_at":"2026-11-02T09:00:00.000Z"}`),
      0,
    );
    assert.ok(bytes <= KEEPALIVE_BUDGET, `${bytes} bytes`);
    assert.deepEqual([...requests.flat(), ...rest], events, "nothing lost, order kept");
    assert.ok(rest.length > 0 && requests.flat().length > 20);
  });
});

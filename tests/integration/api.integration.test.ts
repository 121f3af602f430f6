import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { gzipSync } from "node:zlib";
import type { FastifyInstance } from "fastify";
import { startTestTidemark, type TestTidemark } from "../helpers/tidemark.js";

let tidemark: TestTidemark;
let app: FastifyInstance;
before(async () => {
  tidemark = await startTestTidemark({ TIDEMARK_MAX_BODY_BYTES: "65536", TIDEMARK_MAX_BATCH_EVENTS: "100" });
  app = tidemark.running.app!.fastify;
});
after(() => tidemark.close());

const bearer = (key: string) => ({ authorization: `Bearer ${key}` });
const event = (extra: Record<string, unknown> = {}) => ({
  event: "Page View",
  distinct_id: "user_1",
  uuid: randomUUID(),
  ...extra,
});

describe("admin API", () => {
  test("needs the admin token, compared exactly", async () => {
    for (const headers of [
      {},
      bearer("nope"),
      bearer(`${tidemark.token}x`),
      { authorization: tidemark.token },
    ]) {
      const response = await app.inject({ method: "GET", url: "/api/v1/project", headers });
      assert.equal(response.statusCode, 401);
      assert.equal(response.json().error.code, "unauthorized");
    }
  });

  test("create, list, get, change plan, rotate keys, delete", async () => {
    // Listed once before the project exists too: a list planned while the table was empty or
    // smaller must still read every later project whole (DuckDB bakes the statistics of the data it
    // planned on into a plan, so a kept prepared statement read 'FREE' back as 'I').
    const earlier = await app.inject({
      method: "GET",
      url: "/api/v1/project",
      headers: bearer(tidemark.token),
    });
    assert.equal(earlier.statusCode, 200);
    const created = await app.inject({
      method: "POST",
      url: "/api/v1/project",
      headers: bearer(tidemark.token),
      payload: { name: "shop", plan: "PRO" },
    });
    assert.equal(created.statusCode, 201);
    const project = created.json();
    assert.match(project.id, /^[0-9a-f-]{36}$/);
    assert.equal(project.name, "shop");
    assert.equal(project.plan, "PRO");
    assert.equal(project.rate_limit_rpm, 1000);
    assert.match(project.api_key, /^wk_dev_[0-9A-Za-z]{32}$/);
    assert.match(project.read_key, /^rk_dev_[0-9A-Za-z]{32}$/);
    assert.ok(!Number.isNaN(Date.parse(project.created_at)));

    const list = (
      await app.inject({ method: "GET", url: "/api/v1/project", headers: bearer(tidemark.token) })
    ).json();
    const listed = list.projects.find((p: { id: string }) => p.id === project.id);
    assert.equal(listed.name, "shop");
    assert.equal(listed.plan, "PRO");
    assert.equal(listed.api_key, undefined, "keys are shown only when created or rotated");

    const got = await app.inject({
      method: "GET",
      url: `/api/v1/project/${project.id}`,
      headers: bearer(tidemark.token),
    });
    assert.equal(got.json().plan, "PRO");
    assert.equal(got.json().read_key, undefined);

    const changed = await app.inject({
      method: "PATCH",
      url: `/api/v1/project/${project.id}`,
      headers: bearer(tidemark.token),
      payload: { plan: "ENTERPRISE" },
    });
    assert.equal(changed.statusCode, 200);
    assert.equal(changed.json().rate_limit_rpm, 10000);

    assert.equal(
      (
        await app.inject({
          method: "POST",
          url: "/api/v1/event",
          headers: bearer(project.api_key),
          payload: event(),
        })
      ).statusCode,
      202,
    );
    const rotated = await app.inject({
      method: "POST",
      url: `/api/v1/project/${project.id}/rotate-keys`,
      headers: bearer(tidemark.token),
    });
    assert.equal(rotated.statusCode, 200);
    const fresh = rotated.json();
    assert.notEqual(fresh.api_key, project.api_key);
    const old = await app.inject({
      method: "POST",
      url: "/api/v1/event",
      headers: bearer(project.api_key),
      payload: event(),
    });
    assert.equal(old.statusCode, 401, "the old write key stops working");
    assert.equal(
      (
        await app.inject({
          method: "POST",
          url: "/api/v1/event",
          headers: bearer(fresh.api_key),
          payload: event(),
        })
      ).statusCode,
      202,
    );

    const deleted = await app.inject({
      method: "DELETE",
      url: `/api/v1/project/${project.id}`,
      headers: bearer(tidemark.token),
    });
    assert.equal(deleted.statusCode, 204);
    assert.equal(
      (
        await app.inject({
          method: "GET",
          url: `/api/v1/project/${project.id}`,
          headers: bearer(tidemark.token),
        })
      ).statusCode,
      404,
    );
    assert.equal(
      (
        await app.inject({
          method: "POST",
          url: "/api/v1/event",
          headers: bearer(fresh.api_key),
          payload: event(),
        })
      ).statusCode,
      401,
    );
    const again = await app.inject({
      method: "DELETE",
      url: `/api/v1/project/${project.id}`,
      headers: bearer(tidemark.token),
    });
    assert.equal(again.statusCode, 404);
  });

  test("deleting a project removes its events", async () => {
    const project = await tidemark.createProject("ENTERPRISE");
    const other = await tidemark.createProject("ENTERPRISE");
    for (const p of [project, other]) {
      const r = await app.inject({
        method: "POST",
        url: "/api/v1/event/batch",
        headers: bearer(p.api_key),
        payload: { events: [event(), event()] },
      });
      assert.equal(r.statusCode, 202);
    }
    await app.inject({
      method: "DELETE",
      url: `/api/v1/project/${project.id}`,
      headers: bearer(tidemark.token),
    });
    const remaining = await tidemark.running.parts.events.readLedger(project.id);
    assert.equal(remaining.stored, 0);
    assert.equal(
      (await tidemark.running.parts.events.readLedger(other.id)).stored,
      2,
      "other projects keep theirs",
    );
  });

  test("bad bodies and ids are 4xx with the field named", async () => {
    const cases = [
      { payload: { plan: "FREE" }, field: "name" },
      { payload: { name: "x", plan: "GOLD" }, field: "plan" },
      { payload: { name: "", plan: "FREE" }, field: "name" },
      { payload: { name: "x", plan: "FREE", extra: 1 }, field: "" },
    ];
    for (const c of cases) {
      const response = await app.inject({
        method: "POST",
        url: "/api/v1/project",
        headers: bearer(tidemark.token),
        payload: c.payload,
      });
      assert.equal(response.statusCode, 400, JSON.stringify(c));
      assert.equal(response.json().error.code, "validation_failed");
      if (c.field)
        assert.ok(
          response.json().error.details.some((d: { field: string }) => d.field.includes(c.field)),
          response.body,
        );
    }
    for (const id of ["nope", randomUUID()]) {
      const response = await app.inject({
        method: "GET",
        url: `/api/v1/project/${id}`,
        headers: bearer(tidemark.token),
      });
      assert.equal(response.statusCode, 404);
    }
    const missing = await app.inject({ method: "GET", url: "/api/v1/nothing-here" });
    assert.equal(missing.statusCode, 404);
    assert.equal(missing.json().error.code, "not_found");
  });
});

describe("ingest API", () => {
  let project: { id: string; api_key: string; read_key: string };
  before(async () => {
    project = await tidemark.createProject("ENTERPRISE");
  });

  test("keys: 401 missing or unknown, 403 read key, X-API-Key accepted", async () => {
    const missing = await app.inject({ method: "POST", url: "/api/v1/event", payload: event() });
    assert.equal(missing.statusCode, 401);
    const unknown = await app.inject({
      method: "POST",
      url: "/api/v1/event",
      headers: bearer("wk_dev_unknownunknownunknownunknown12"),
      payload: event(),
    });
    assert.equal(unknown.statusCode, 401);
    const read = await app.inject({
      method: "POST",
      url: "/api/v1/event",
      headers: bearer(project.read_key),
      payload: event(),
    });
    assert.equal(read.statusCode, 403);
    assert.equal(read.json().error.code, "forbidden");
    const header = await app.inject({
      method: "POST",
      url: "/api/v1/event",
      headers: { "x-api-key": project.api_key },
      payload: event(),
    });
    assert.equal(header.statusCode, 202);
  });

  test("202 with the uuid, rate-limit headers on every answer", async () => {
    const uuid = randomUUID();
    const response = await app.inject({
      method: "POST",
      url: "/api/v1/event",
      headers: bearer(project.api_key),
      payload: event({ uuid }),
    });
    assert.equal(response.statusCode, 202);
    assert.deepEqual(response.json(), { status: "accepted", uuid, duplicate: false });
    assert.equal(response.headers["x-ratelimit-limit"], "10000");
    assert.ok(Number(response.headers["x-ratelimit-remaining"]) < 10000);
    assert.ok(Number(response.headers["x-ratelimit-reset"]) > Date.now() / 1000);
    const bad = await app.inject({
      method: "POST",
      url: "/api/v1/event",
      headers: bearer(project.api_key),
      payload: { event: "x" },
    });
    assert.equal(bad.statusCode, 400);
    assert.equal(bad.headers["x-ratelimit-limit"], "10000");
  });

  test("400 lists every problem; a batch is accepted or rejected whole", async () => {
    const before = await tidemark.running.parts.events.readLedger(project.id);
    const response = await app.inject({
      method: "POST",
      url: "/api/v1/event/batch",
      headers: bearer(project.api_key),
      payload: { events: [event(), { event: "x" }, event({ timestamp: "soon" })] },
    });
    assert.equal(response.statusCode, 400);
    const details = response.json().error.details;
    assert.deepEqual(
      details.map((d: { index: number; field: string }) => [d.index, d.field]),
      [
        [1, "distinct_id"],
        [2, "timestamp"],
      ],
    );
    const afterLedger = await tidemark.running.parts.events.readLedger(project.id);
    assert.equal(afterLedger.stored, before.stored, "nothing of a rejected batch is stored");
  });

  test("malformed JSON, wrong content type and encoding", async () => {
    const headers = { ...bearer(project.api_key), "content-type": "application/json" };
    const malformed = await app.inject({
      method: "POST",
      url: "/api/v1/event",
      headers,
      payload: '{"event": ',
    });
    assert.equal(malformed.statusCode, 400);
    assert.equal(malformed.json().error.code, "invalid_json");
    const xml = await app.inject({
      method: "POST",
      url: "/api/v1/event",
      headers: { ...headers, "content-type": "application/xml" },
      payload: "<e/>",
    });
    assert.equal(xml.statusCode, 415);
    const brotli = await app.inject({
      method: "POST",
      url: "/api/v1/event",
      headers: { ...headers, "content-encoding": "br" },
      payload: "{}",
    });
    assert.equal(brotli.statusCode, 415);
    const notGzip = await app.inject({
      method: "POST",
      url: "/api/v1/event",
      headers: { ...headers, "content-encoding": "gzip" },
      payload: "plain",
    });
    assert.ok(notGzip.statusCode >= 400 && notGzip.statusCode < 500, String(notGzip.statusCode));
    const beacon = await app.inject({
      method: "POST",
      url: "/api/v1/event",
      headers: { ...headers, "content-type": "text/plain;charset=UTF-8" },
      payload: JSON.stringify(event()),
    });
    assert.equal(beacon.statusCode, 202, "JSON sent as text/plain (sendBeacon) is accepted");
  });

  test("gzip bodies; limits apply after decompression (413)", async () => {
    const headers = {
      ...bearer(project.api_key),
      "content-type": "application/json",
      "content-encoding": "gzip",
    };
    const zipped = await app.inject({
      method: "POST",
      url: "/api/v1/event/batch",
      headers,
      payload: gzipSync(JSON.stringify({ events: [event(), event()] })),
    });
    assert.equal(zipped.statusCode, 202, zipped.body);
    assert.equal(zipped.json().count, 2);
    const bomb = gzipSync(JSON.stringify(event({ properties: { pad: "a".repeat(200_000) } })));
    assert.ok(bomb.length < 65536, "small on the wire");
    const response = await app.inject({ method: "POST", url: "/api/v1/event", headers, payload: bomb });
    assert.equal(response.statusCode, 413);
    assert.equal(response.json().error.code, "payload_too_large");
  });

  test("text that is not Unicode (unpaired surrogates) or holds NUL is stored, not a 5xx", async () => {
    const uuid = randomUUID();
    const response = await app.inject({
      method: "POST",
      url: "/api/v1/event",
      headers: { ...bearer(project.api_key), "content-type": "application/json" },
      payload: `{"event": "odd\\ud800", "distinct_id": "nul\\u0000", "uuid": "${uuid}", "properties": {"k\\udc00": "v\\ud83d"}}`,
    });
    assert.equal(response.statusCode, 202, response.body);
    const stored = await app.inject({
      method: "POST",
      url: "/api/v1/query",
      headers: bearer(project.read_key),
      payload: { kind: "events", event: "odd\ufffd" },
    });
    assert.equal(stored.json().events[0].uuid, uuid);
    assert.deepEqual(stored.json().events[0].properties, { "k\ufffd": "v\ufffd" });
  });

  test("413 for bodies and batches over the limits", async () => {
    const big = await app.inject({
      method: "POST",
      url: "/api/v1/event",
      headers: bearer(project.api_key),
      payload: event({ properties: { pad: "a".repeat(70_000) } }),
    });
    assert.equal(big.statusCode, 413);
    const many = await app.inject({
      method: "POST",
      url: "/api/v1/event/batch",
      headers: bearer(project.api_key),
      payload: { events: Array.from({ length: 101 }, () => event()) },
    });
    assert.equal(many.statusCode, 413);
    assert.equal(many.json().error.code, "batch_too_large");
  });

  test("the same uuid is stored once and reported as a duplicate", async () => {
    const uuid = randomUUID();
    const first = await app.inject({
      method: "POST",
      url: "/api/v1/event",
      headers: bearer(project.api_key),
      payload: event({ uuid }),
    });
    const second = await app.inject({
      method: "POST",
      url: "/api/v1/event",
      headers: bearer(project.api_key),
      payload: event({ uuid }),
    });
    assert.equal(first.json().duplicate, false);
    assert.equal(second.json().duplicate, true);
    const batch = await app.inject({
      method: "POST",
      url: "/api/v1/event/batch",
      headers: bearer(project.api_key),
      payload: { events: [event({ uuid }), event(), event({ uuid: uuid.toUpperCase() })] },
    });
    assert.equal(batch.json().count, 3);
    assert.equal(batch.json().duplicates, 2);
    const stored = await app.inject({
      method: "POST",
      url: "/api/v1/query",
      headers: bearer(project.read_key),
      payload: { kind: "events", limit: 1000 },
    });
    assert.equal(stored.json().events.filter((e: { uuid: string }) => e.uuid === uuid).length, 1);
  });

  test("timestamps: ISO and epoch ms stored exactly, far future clamped with a warning, received_at kept", async () => {
    const uuids = [randomUUID(), randomUUID(), randomUUID()];
    const now = Date.now();
    const response = await app.inject({
      method: "POST",
      url: "/api/v1/event/batch",
      headers: bearer(project.api_key),
      payload: {
        events: [
          event({ uuid: uuids[0], distinct_id: "time", timestamp: "2026-01-02T03:04:05.678+01:00" }),
          event({ uuid: uuids[1], distinct_id: "time", timestamp: 1767000000123 }),
          event({ uuid: uuids[2], distinct_id: "time", timestamp: now + 3 * 86_400_000 }),
        ],
      },
    });
    assert.equal(response.statusCode, 202);
    assert.deepEqual(
      response.json().warnings.map((w: { index: number }) => w.index),
      [2],
    );
    const stored = (
      await app.inject({
        method: "POST",
        url: "/api/v1/query",
        headers: bearer(project.read_key),
        payload: { kind: "events", distinct_id: "time" },
      })
    ).json().events;
    const byUuid = new Map(stored.map((e: { uuid: string }) => [e.uuid, e]));
    const at = (i: number) => byUuid.get(uuids[i]!) as { timestamp: string; received_at: string };
    assert.equal(at(0).timestamp, "2026-01-02T02:04:05.678Z");
    assert.equal(at(1).timestamp, new Date(1767000000123).toISOString());
    assert.equal(at(2).timestamp, at(2).received_at, "clamped to the time of receipt");
    assert.ok(Math.abs(Date.parse(at(0).received_at) - now) < 60_000);
  });

  test("429 past the plan's limit with Retry-After, counted in the ledger", async () => {
    const free = await tidemark.createProject("FREE");
    const statuses: number[] = [];
    let limited: { headers: Record<string, unknown>; json(): { error: { code: string } } } | undefined;
    for (let i = 0; i < 105; i++) {
      const response = await app.inject({
        method: "POST",
        url: "/api/v1/event",
        headers: bearer(free.api_key),
        payload: event(),
      });
      statuses.push(response.statusCode);
      if (response.statusCode === 429) limited = response;
    }
    assert.equal(statuses.filter((s) => s === 202).length, 100);
    assert.equal(statuses.filter((s) => s === 429).length, 5);
    assert.ok(limited);
    assert.equal(limited.json().error.code, "rate_limited");
    assert.ok(Number(limited.headers["retry-after"]) >= 1);
    assert.equal(limited.headers["x-ratelimit-remaining"], "0");
    const batch = await app.inject({
      method: "POST",
      url: "/api/v1/event/batch",
      headers: bearer(free.api_key),
      payload: { events: [event(), event(), event()] },
    });
    assert.equal(batch.statusCode, 429);
    const stats = (
      await app.inject({
        method: "GET",
        url: `/api/v1/project/${free.id}/stats`,
        headers: bearer(tidemark.token),
      })
    ).json();
    // A 429 is answered before its body is read: the batch counts as one.
    assert.deepEqual(stats, {
      received: 106,
      accepted: 100,
      duplicate: 0,
      rate_limited: 6,
      rejected: {},
      stored: 100,
    });
  });

  test("CORS for browser SDKs", async () => {
    const preflight = await app.inject({
      method: "OPTIONS",
      url: "/api/v1/event",
      headers: {
        origin: "https://shop.example",
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type,x-api-key",
      },
    });
    assert.equal(preflight.statusCode, 204);
    assert.equal(preflight.headers["access-control-allow-origin"], "https://shop.example");
    assert.match(String(preflight.headers["access-control-allow-headers"]), /X-API-Key/i);
  });
});

describe("query API", () => {
  let project: { id: string; api_key: string; read_key: string };
  before(async () => {
    project = await tidemark.createProject("ENTERPRISE");
    await app.inject({
      method: "POST",
      url: "/api/v1/event/batch",
      headers: bearer(project.api_key),
      payload: { events: [event(), event({ event: "Click" })] },
    });
  });

  test("read key or admin token with project_id; 401 and 403 otherwise", async () => {
    const spec = { kind: "top_events", from: "2000-01-01", to: "2100-01-01" };
    const read = await app.inject({
      method: "POST",
      url: "/api/v1/query",
      headers: bearer(project.read_key),
      payload: spec,
    });
    assert.equal(read.statusCode, 200);
    assert.equal(read.json().events.length, 2);
    assert.equal(typeof read.json().took_ms, "number");
    const admin = await app.inject({
      method: "POST",
      url: `/api/v1/query?project_id=${project.id}`,
      headers: bearer(tidemark.token),
      payload: spec,
    });
    assert.deepEqual(admin.json().events, read.json().events);
    const adminNoProject = await app.inject({
      method: "POST",
      url: "/api/v1/query",
      headers: bearer(tidemark.token),
      payload: spec,
    });
    assert.equal(adminNoProject.statusCode, 400);
    const write = await app.inject({
      method: "POST",
      url: "/api/v1/query",
      headers: bearer(project.api_key),
      payload: spec,
    });
    assert.equal(write.statusCode, 403);
    assert.equal((await app.inject({ method: "POST", url: "/api/v1/query", payload: spec })).statusCode, 401);
  });

  test("a bad spec is a 400 naming the field", async () => {
    const cases: [unknown, string][] = [
      [{ kind: "pie" }, "kind"],
      [{ kind: "trends", from: "2026-01-01" }, "to"],
      [{ kind: "trends", from: "2026-01-02", to: "2026-01-01" }, "to"],
      [{ kind: "trends", from: "x", to: "2026-01-01" }, "from"],
      [{ kind: "trends", from: "2000-01-01", to: "2026-01-01", interval: "hour" }, "interval"],
      [{ kind: "trends", from: "2026-01-01", to: "2026-02-01", interval: "minute" }, "interval"],
      [
        {
          kind: "trends",
          from: "2026-01-01",
          to: "2026-02-01",
          filters: [{ property: "a", op: "gt", value: "x" }],
        },
        "filters.0.value",
      ],
      [
        { kind: "trends", from: "2026-01-01", to: "2026-02-01", filters: [{ property: "a", op: "eq" }] },
        "filters.0.value",
      ],
      [{ kind: "funnel", steps: ["a"], from: "2026-01-01", to: "2026-02-01" }, "steps"],
      [{ kind: "events", cursor: "bogus" }, "cursor"],
      [{ kind: "events", limit: 0 }, "limit"],
      [{ kind: "top_values", from: "2026-01-01", to: "2026-02-01" }, "property"],
      [[1, 2], "(body)"],
    ];
    for (const [payload, field] of cases) {
      const response = await app.inject({
        method: "POST",
        url: "/api/v1/query",
        headers: bearer(project.read_key),
        payload: payload as object,
      });
      assert.equal(response.statusCode, 400, `${JSON.stringify(payload)} -> ${response.body}`);
      assert.ok(
        response.json().error.details.some((d: { field: string }) => d.field === field),
        `${JSON.stringify(payload)} should name ${field}: ${response.body}`,
      );
    }
  });

  test("property names with SQL in them are data, not SQL", async () => {
    const evil = ["'); DROP TABLE events; --", "a' OR '1'='1", '$."x"', "a/b~c"];
    for (const property of evil) {
      const response = await app.inject({
        method: "POST",
        url: "/api/v1/query",
        headers: bearer(project.read_key),
        payload: {
          kind: "top_values",
          property,
          from: "2000-01-01",
          to: "2100-01-01",
          filters: [{ property, op: "is_set" }],
        },
      });
      assert.equal(response.statusCode, 200, response.body);
      assert.deepEqual(response.json().values, []);
    }
    const still = await app.inject({
      method: "POST",
      url: "/api/v1/query",
      headers: bearer(project.read_key),
      payload: { kind: "events" },
    });
    assert.equal(still.json().events.length, 2);
  });
});

describe("operations", () => {
  test("/health, /ready, /metrics, /docs", async () => {
    const health = await app.inject({ url: "/health" });
    const { version } = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8"));
    assert.deepEqual(health.json(), { status: "ok", service: "tidemark", version });
    assert.equal(health.headers["x-tidemark-version"], version, "the CLI tells Tidemark by this header");
    const ready = await app.inject({ url: "/ready" });
    assert.equal(ready.statusCode, 200);
    assert.equal(ready.json().status, "ready");
    const metrics = await app.inject({ url: "/metrics" });
    assert.equal(metrics.statusCode, 200);
    for (const name of [
      "tidemark_ingest_events_total",
      "tidemark_http_request_duration_seconds_bucket",
      "tidemark_flush_events_bucket",
      "tidemark_queue_depth_events",
    ]) {
      assert.ok(metrics.body.includes(name), name);
    }
    const docs = await app.inject({ url: "/docs/json" });
    assert.equal(docs.statusCode, 200);
    const spec = docs.json();
    assert.match(spec.openapi, /^3\./);
    for (const path of [
      "/api/v1/event",
      "/api/v1/event/batch",
      "/api/v1/query",
      "/api/v1/project",
      "/api/v1/project/{id}/stats",
    ]) {
      assert.ok(spec.paths[path], path);
    }
  });

  test("concurrent requests share commits (group commit)", async () => {
    const project = await tidemark.createProject("ENTERPRISE");
    const flushes = async () => {
      const text = (await app.inject({ url: "/metrics" })).body;
      return Number(/^tidemark_flush_events_count (\d+)/m.exec(text)?.[1] ?? 0);
    };
    const before = await flushes();
    const responses = await Promise.all(
      Array.from({ length: 200 }, () =>
        fetch(`${tidemark.url}/api/v1/event`, {
          method: "POST",
          headers: { ...bearer(project.api_key), "content-type": "application/json" },
          body: JSON.stringify(event()),
        }),
      ),
    );
    assert.ok(responses.every((r) => r.status === 202));
    const used = (await flushes()) - before;
    assert.ok(used < 200, `200 concurrent requests took ${used} commits`);
    assert.equal((await tidemark.running.parts.events.readLedger(project.id)).stored, 200);
  });
});

describe("back-pressure", () => {
  test("over the pending limit ingest answers 503 with Retry-After, and nothing acknowledged is lost", async () => {
    const small = await startTestTidemark({
      TIDEMARK_MAX_PENDING_EVENTS: "20",
      TIDEMARK_FLUSH_INTERVAL_MS: "20",
    });
    try {
      const project = await small.createProject("ENTERPRISE");
      const responses = await Promise.all(
        Array.from({ length: 40 }, () =>
          fetch(`${small.url}/api/v1/event/batch`, {
            method: "POST",
            headers: { ...bearer(project.api_key), "content-type": "application/json" },
            body: JSON.stringify({ events: Array.from({ length: 5 }, () => event()) }),
          }),
        ),
      );
      const statuses = responses.map((r) => r.status);
      const refused = responses.filter((r) => r.status === 503);
      assert.ok(refused.length > 0, `expected some 503s, got ${statuses.join(",")}`);
      assert.ok(refused.every((r) => Number(r.headers.get("retry-after")) >= 1));
      assert.ok(statuses.every((s) => s === 202 || s === 503));
      const accepted = statuses.filter((s) => s === 202).length * 5;
      const stats = await small.request("GET", `/api/v1/project/${project.id}/stats`, { key: small.token });
      assert.equal(stats.body.stored, accepted);
      assert.equal(stats.body.rejected.overloaded, refused.length * 5);
    } finally {
      await small.close();
    }
  });
});

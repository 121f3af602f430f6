import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import fc from "fast-check";
import type { FastifyInstance } from "fastify";
import { startTestTidemark, type TestTidemark } from "../helpers/tidemark.js";

let tidemark: TestTidemark;
let app: FastifyInstance;
let project: { api_key: string; read_key: string };
before(async () => {
  tidemark = await startTestTidemark({ TIDEMARK_MAX_BODY_BYTES: "65536" });
  app = tidemark.running.app!.fastify;
  project = await tidemark.createProject("ENTERPRISE");
  await app.inject({
    method: "POST",
    url: "/api/v1/event/batch",
    headers: { authorization: `Bearer ${project.api_key}` },
    payload: {
      events: [{ event: "a", distinct_id: "u", properties: { x: 1, s: "t", n: null, o: { deep: [1] } } }],
    },
  });
});
after(() => tidemark.close());

const RUNS = 300;

async function send(url: string, key: string, payload: string | object, contentType = "application/json") {
  const response = await app.inject({
    method: "POST",
    url,
    headers: { authorization: `Bearer ${key}`, "content-type": contentType },
    payload: typeof payload === "string" ? payload : JSON.stringify(payload),
  });
  assert.ok(
    response.statusCode < 500,
    `${url} answered ${response.statusCode} to ${JSON.stringify(payload).slice(0, 300)}: ${response.body}`,
  );
  if (response.statusCode >= 400) assert.equal(typeof response.json().error.code, "string");
  return response.statusCode;
}

const timestamp = fc.oneof(
  fc.integer({ min: -1e15, max: 1e16 }),
  fc.double(),
  fc.date({ noInvalidDate: true }).map((d) => d.toISOString()),
  fc.string(),
  fc.constantFrom(
    "2026-02-30",
    "2026-11-28T10:00:00+25:00",
    "0000-01-01",
    "9999-12-31T23:59:59.999Z",
    "1764324000000",
  ),
);
const eventLike = fc.record(
  {
    event: fc.oneof(
      fc.string({ maxLength: 250 }),
      fc.string({ unit: "binary", maxLength: 20 }),
      fc.integer(),
      fc.constant(null),
    ),
    distinct_id: fc.oneof(fc.string({ maxLength: 250 }), fc.integer(), fc.double(), fc.boolean()),
    timestamp,
    sent_at: timestamp,
    properties: fc.oneof(
      fc.jsonValue(),
      fc.dictionary(fc.string(), fc.jsonValue()),
      // Any UTF-16 code units, unpaired surrogates and NUL included.
      fc.dictionary(fc.string({ unit: "binary" }), fc.string({ unit: "binary" })),
    ),
    uuid: fc.oneof(fc.uuid(), fc.string()),
  },
  { requiredKeys: [] },
);

test("ingest: no body makes it answer 5xx", async () => {
  await fc.assert(
    fc.asyncProperty(fc.oneof(eventLike, fc.jsonValue()), async (body) => {
      await send("/api/v1/event", project.api_key, body as object);
    }),
    { numRuns: RUNS },
  );
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        fc.record({ events: fc.array(fc.oneof(eventLike, fc.jsonValue()), { maxLength: 30 }) }),
        fc.record({ events: fc.jsonValue() }),
        fc.jsonValue(),
      ),
      async (body) => {
        await send("/api/v1/event/batch", project.api_key, body as object);
      },
    ),
    { numRuns: RUNS },
  );
  await fc.assert(
    fc.asyncProperty(
      fc.string(),
      fc.constantFrom("application/json", "text/plain", "application/x-www-form-urlencoded"),
      async (raw, type) => {
        await send("/api/v1/event", project.api_key, raw, type);
      },
    ),
    { numRuns: RUNS },
  );
});

/** Segment's and PostHog's fields, so their mappings are reached with every kind of value. */
const anyValue = fc.oneof(
  fc.string({ maxLength: 60 }),
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.jsonValue(),
);
const segmentLike = fc.record(
  {
    type: fc.oneof(fc.constantFrom("track", "identify", "page", "screen", "group", "alias"), fc.string()),
    userId: anyValue,
    anonymousId: anyValue,
    event: anyValue,
    name: anyValue,
    category: anyValue,
    properties: fc.oneof(fc.dictionary(fc.string(), fc.jsonValue()), anyValue),
    traits: fc.oneof(fc.dictionary(fc.string(), fc.jsonValue()), anyValue),
    context: fc.oneof(fc.dictionary(fc.string(), fc.jsonValue()), anyValue),
    groupId: anyValue,
    previousId: anyValue,
    messageId: fc.oneof(fc.string(), fc.uuid(), anyValue),
    timestamp,
    originalTimestamp: timestamp,
    sentAt: timestamp,
  },
  { requiredKeys: [] },
);
const posthogLike = fc.record(
  {
    event: anyValue,
    distinct_id: anyValue,
    properties: fc.oneof(fc.dictionary(fc.string(), fc.jsonValue()), anyValue),
    timestamp,
    offset: fc.oneof(fc.integer(), fc.double(), anyValue),
    uuid: fc.oneof(fc.uuid(), anyValue),
    $set: fc.oneof(fc.dictionary(fc.string(), fc.jsonValue()), anyValue),
    $set_once: anyValue,
    token: anyValue,
    sent_at: timestamp,
  },
  { requiredKeys: [] },
);

test("Segment and PostHog doors: no body makes them answer 5xx", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom("track", "identify", "page", "screen", "group", "alias"),
      fc.oneof(segmentLike, fc.jsonValue()),
      async (type, body) => {
        await send(`/v1/${type}`, project.api_key, body as object);
      },
    ),
    { numRuns: RUNS },
  );
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        fc.record(
          {
            batch: fc.array(fc.oneof(segmentLike, fc.jsonValue()), { maxLength: 20 }),
            context: anyValue,
            sentAt: timestamp,
          },
          { requiredKeys: ["batch"] },
        ),
        fc.jsonValue(),
      ),
      async (body) => {
        await send("/v1/batch", project.api_key, body as object);
      },
    ),
    { numRuns: RUNS },
  );
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        fc.record(
          {
            api_key: fc.constant(project.api_key),
            batch: fc.array(fc.oneof(posthogLike, fc.jsonValue()), { maxLength: 20 }),
            sent_at: timestamp,
          },
          { requiredKeys: ["api_key", "batch"] },
        ),
        posthogLike.map((e) => ({ ...e, api_key: project.api_key })),
        fc.array(posthogLike.map((e) => ({ ...e, properties: { token: project.api_key } }))),
        fc.jsonValue(),
      ),
      fc.constantFrom("/capture/", "/batch/", "/e/", "/i/v0/e/", "/flags/", "/decide/"),
      async (body, url) => {
        await send(url, project.api_key, body as object);
      },
    ),
    { numRuns: RUNS },
  );
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        fc.string(),
        fc.base64String().map((b) => `data=${b}`),
      ),
      fc.constantFrom("application/json", "text/plain", "application/x-www-form-urlencoded"),
      fc.constantFrom("/e/", "/e/?compression=gzip-js", "/e/?compression=base64", "/flags/"),
      async (raw, type, url) => {
        await send(url, project.api_key, raw, type);
      },
    ),
    { numRuns: RUNS },
  );
});

const filter = fc.record(
  {
    property: fc.oneof(
      fc.string(),
      fc.constantFrom("x", "s", "n", "o", "'; DROP TABLE events; --", "/x", "~0"),
    ),
    op: fc.oneof(fc.constantFrom("eq", "neq", "contains", "gt", "lt", "is_set"), fc.string()),
    value: fc.oneof(fc.string(), fc.double(), fc.integer(), fc.boolean(), fc.constant(null), fc.jsonValue()),
  },
  { requiredKeys: [] },
);
const time = fc.oneof(timestamp, fc.constantFrom("2000-01-01", "2100-01-01", "2026-11-01T00:00:00Z"));
const spec = fc.record(
  {
    kind: fc.oneof(
      fc.constantFrom("trends", "funnel", "retention", "events", "top_events", "top_values"),
      fc.string(),
    ),
    event: fc.oneof(fc.string(), fc.jsonValue()),
    math: fc.oneof(fc.constantFrom("total", "unique_users"), fc.string()),
    interval: fc.oneof(fc.constantFrom("hour", "day", "week"), fc.string()),
    from: time,
    to: time,
    filters: fc.oneof(fc.array(filter, { maxLength: 4 }), fc.jsonValue()),
    breakdown: fc.oneof(fc.string(), fc.constant("s")),
    limit: fc.oneof(fc.integer({ min: -5, max: 2000 }), fc.double(), fc.string()),
    steps: fc.oneof(fc.array(fc.string(), { maxLength: 12 }), fc.jsonValue()),
    window_seconds: fc.oneof(fc.integer(), fc.double()),
    start_event: fc.string(),
    return_event: fc.string(),
    periods: fc.oneof(fc.integer({ min: -2, max: 200 }), fc.double()),
    distinct_id: fc.string(),
    cursor: fc.oneof(fc.string(), fc.base64String()),
    property: fc.oneof(fc.string(), fc.constant("x")),
  },
  { requiredKeys: [] },
);

test("query: no spec makes it answer 5xx", async () => {
  await fc.assert(
    fc.asyncProperty(fc.oneof(spec, fc.jsonValue()), async (body) => {
      await send("/api/v1/query", project.read_key, body as object);
    }),
    { numRuns: RUNS * 2 },
  );
});

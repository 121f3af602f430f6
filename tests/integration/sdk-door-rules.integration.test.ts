import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { gzipSync } from "node:zlib";
import type { FastifyInstance } from "fastify";
import { startTestTidemark, type TestTidemark } from "../helpers/tidemark.js";

/**
 * The rules of /api/v1/event hold at the Segment and PostHog doors: keys, rate limits counted in
 * the ledger, body limits after decompression, clear 4xx answers; and the flags endpoints answer
 * "no flags" in the shapes PostHog's SDKs read.
 */
let tidemark: TestTidemark;
let app: FastifyInstance;
let project: { id: string; api_key: string; read_key: string };
before(async () => {
  tidemark = await startTestTidemark({ TIDEMARK_MAX_BODY_BYTES: "65536" });
  app = tidemark.running.app!.fastify;
  project = await tidemark.createProject("ENTERPRISE", "rules");
});
after(() => tidemark.close());

const basic = (key: string) => `Basic ${Buffer.from(`${key}:`).toString("base64")}`;
const ledger = async (id: string) =>
  (await tidemark.request("GET", `/api/v1/project/${id}/stats`, { key: tidemark.token })).body;

test("keys: unknown keys are 401, a read key is 403, a body naming another key is 400", async () => {
  const track = { userId: "u", event: "e" };
  const cases: [string, Record<string, string>, unknown, number][] = [
    ["/v1/track", {}, track, 401],
    ["/v1/track", { authorization: basic("wk_dev_unknown") }, track, 401],
    ["/v1/track", { authorization: basic(project.read_key) }, track, 403],
    ["/v1/track", { authorization: `Bearer ${project.api_key}` }, track, 200],
    ["/v1/track", { authorization: basic(project.api_key) }, { ...track, writeKey: "wk_dev_other" }, 400],
    [
      "/v1/batch",
      {},
      { batch: [{ ...track, type: "track", writeKey: project.api_key }], writeKey: "wk_dev_x" },
      400,
    ],
    ["/capture/", {}, { event: "e", distinct_id: "d" }, 401],
    ["/capture/", {}, { event: "e", distinct_id: "d", api_key: project.read_key }, 403],
    [
      "/capture/",
      {},
      { api_key: project.api_key, batch: [{ event: "e", distinct_id: "d", api_key: "wk_dev_y" }] },
      400,
    ],
    ["/flags/?v=2", {}, { distinct_id: "d" }, 401],
  ];
  for (const [url, headers, payload, status] of cases) {
    const response = await app.inject({ method: "POST", url, headers, payload: payload as object });
    assert.equal(response.statusCode, status, `${url} ${JSON.stringify(payload)}: ${response.body}`);
    if (status >= 400) assert.equal(typeof response.json().error.code, "string");
  }
});

test("the rate limit applies to each door as to /api/v1/event, and the ledger counts it", async () => {
  const free = await tidemark.createProject("FREE", "rules free");
  const sends = [
    () =>
      app.inject({
        method: "POST",
        url: "/v1/track",
        headers: { authorization: basic(free.api_key) },
        payload: { userId: "u", event: "e" },
      }),
    () =>
      app.inject({
        method: "POST",
        url: "/e/",
        payload: { event: "e", distinct_id: "d", api_key: free.api_key },
      }),
    () =>
      app.inject({
        method: "POST",
        url: "/api/v1/event",
        headers: { authorization: `Bearer ${free.api_key}` },
        payload: { event: "e", distinct_id: "d" },
      }),
  ];
  const statuses: number[] = [];
  for (let i = 0; i < 102; i++) {
    const response = await sends[i % 3]!();
    statuses.push(response.statusCode);
    if (response.statusCode === 429) assert.ok(Number(response.headers["retry-after"]) > 0, "Retry-After");
    else assert.equal(response.headers["x-ratelimit-limit"], "100");
  }
  assert.equal(statuses.filter((s) => s === 200 || s === 202).length, 100);
  assert.deepEqual(statuses.slice(100), [429, 429]);
  const stats = await ledger(free.id);
  assert.equal(stats.accepted, 100);
  assert.equal(stats.rate_limited, 2);
});

test("bodies: gzip by header, by marker or by bytes, within the size limit after inflation", async () => {
  const events = JSON.stringify({ api_key: project.api_key, batch: [{ event: "gz", distinct_id: "d" }] });
  const bomb = gzipSync(
    JSON.stringify({
      api_key: project.api_key,
      batch: [{ event: "x", distinct_id: "d", properties: { pad: "a".repeat(200_000) } }],
    }),
  );
  const cases: [string, Record<string, string>, Buffer | string, number, string?][] = [
    ["/batch/", { "content-type": "application/json", "content-encoding": "gzip" }, gzipSync(events), 200],
    ["/e/?compression=gzip-js", { "content-type": "text/plain" }, gzipSync(events), 200],
    ["/e/", { "content-type": "text/plain" }, gzipSync(events), 200],
    ["/e/", { "content-type": "text/plain" }, bomb, 413, "payload_too_large"],
    [
      "/batch/",
      { "content-type": "application/json", "content-encoding": "gzip" },
      bomb,
      413,
      "payload_too_large",
    ],
    ["/e/?compression=gzip-js", { "content-type": "text/plain" }, events, 415, "unsupported_media_type"],
    [
      "/e/",
      { "content-type": "text/plain" },
      Buffer.from([0x1f, 0x8b, 1, 2, 3]),
      415,
      "unsupported_media_type",
    ],
    [
      "/e/?compression=lz64",
      { "content-type": "application/x-www-form-urlencoded" },
      "data=abc",
      415,
      "unsupported_media_type",
    ],
    ["/e/", { "content-type": "application/x-www-form-urlencoded" }, "other=1", 400, "validation_failed"],
    [
      "/e/",
      { "content-type": "application/x-www-form-urlencoded" },
      `data=${Buffer.from("{nope").toString("base64")}`,
      400,
      "invalid_json",
    ],
    [
      "/e/",
      { "content-type": "application/json" },
      '{"__proto__": {"x": 1}, "event": "e"}',
      400,
      "invalid_json",
    ],
    ["/e/", { "content-type": "application/json" }, "", 400, "invalid_json"],
    [
      "/v1/track",
      { "content-type": "application/json", authorization: basic(project.api_key) },
      "{nope",
      400,
      "invalid_json",
    ],
  ];
  for (const [url, headers, payload, status, code] of cases) {
    const response = await app.inject({ method: "POST", url, headers, payload });
    assert.equal(response.statusCode, status, `${url} ${JSON.stringify(headers)}: ${response.body}`);
    if (code) assert.equal(response.json().error.code, code, url);
  }
  // A form whose unescaped "+" became a space still decodes (this body's base64 has one).
  const plus = Buffer.from(
    JSON.stringify({ api_key: project.api_key, event: "plus>>>", distinct_id: "d" }),
  ).toString("base64");
  assert.ok(plus.includes("+"), "the base64 has a +");
  const response = await app.inject({
    method: "POST",
    url: "/e/",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    payload: `data=${plus}`,
  });
  assert.equal(response.statusCode, 200, response.body);
});

test("a property integer a JSON number cannot carry is refused at every door, naming its path", async () => {
  const big = "9007199254740993";
  const segment = await app.inject({
    method: "POST",
    url: "/v1/identify",
    headers: { authorization: basic(project.api_key), "content-type": "application/json" },
    payload: `{"userId": "u", "traits": {"id": ${big}}}`,
  });
  assert.equal(segment.statusCode, 400);
  assert.equal(segment.json().error.details[0].field, "traits.id");
  const posthog = await app.inject({
    method: "POST",
    url: "/e/",
    headers: { "content-type": "text/plain" },
    payload: gzipSync(
      `{"api_key": "${project.api_key}", "event": "e", "distinct_id": "d", "properties": {"n": ${big}}}`,
    ),
  });
  assert.equal(posthog.statusCode, 400, posthog.body);
  assert.equal(posthog.json().error.details[0].field, "properties.n");
});

test("/flags and /decide answer no flags in the shapes PostHog's SDKs read; /array/:token/config the remote config", async () => {
  const flags = await app.inject({
    method: "POST",
    url: "/flags/?v=2&config=true",
    payload: { token: project.api_key, distinct_id: "d" },
  });
  assert.equal(flags.statusCode, 200);
  const body = flags.json();
  assert.deepEqual(body.flags, {});
  assert.equal(body.errorsWhileComputingFlags, false);
  assert.deepEqual(body.supportedCompression, ["gzip-js", "base64"]);
  const decide = await app.inject({
    method: "POST",
    url: "/decide/?v=3",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    payload: `data=${encodeURIComponent(Buffer.from(JSON.stringify({ token: project.api_key, distinct_id: "d" })).toString("base64"))}`,
  });
  assert.equal(decide.statusCode, 200, decide.body);
  assert.deepEqual(decide.json().featureFlags, {});
  assert.equal(decide.json().sessionRecording, false);
  const config = await app.inject({ method: "GET", url: `/array/${project.api_key}/config` });
  assert.equal(config.statusCode, 200);
  assert.equal(config.json().sessionRecording, false);
  assert.equal((await app.inject({ method: "GET", url: "/array/wk_dev_nope/config" })).statusCode, 401);
});

test("the doors answer CORS preflights, and are in the OpenAPI document", async () => {
  const preflight = await app.inject({
    method: "OPTIONS",
    url: "/e/",
    headers: {
      origin: "https://shop.example",
      "access-control-request-method": "POST",
      "access-control-request-headers": "content-type",
    },
  });
  assert.equal(preflight.statusCode, 204);
  assert.equal(preflight.headers["access-control-allow-origin"], "https://shop.example");
  const spec = (await app.inject({ method: "GET", url: "/docs/json" })).json();
  for (const path of [
    "/v1/track",
    "/v1/identify",
    "/v1/page",
    "/v1/screen",
    "/v1/group",
    "/v1/alias",
    "/v1/batch",
    "/capture/",
    "/batch/",
    "/e/",
    "/i/v0/e/",
    "/flags/",
    "/decide/",
    "/array/{token}/config",
  ]) {
    assert.ok(spec.paths[path], path);
  }
  assert.ok(
    spec.paths["/e/"].post.requestBody.content["application/x-www-form-urlencoded"],
    "the form body is documented",
  );
  assert.equal(spec.paths["/e"], undefined, "the slashless twin is not listed twice");
});

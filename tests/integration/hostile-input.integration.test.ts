import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import fc from "fast-check";
import { startTestTidemark, type TestTidemark } from "../helpers/tidemark.js";

/**
 * Input a hostile client sends to a running server (embedded pipeline): each answer is a 4xx
 * naming the field, never a 500, and the ledger counts what the response says.
 */
let tidemark: TestTidemark;
let project: { id: string; api_key: string; read_key: string };

before(async () => {
  tidemark = await startTestTidemark();
  project = await tidemark.createProject("ENTERPRISE", "hostile input");
});
after(() => tidemark.close());

const send = (body: string, contentType = "application/json", path = "/api/v1/event") =>
  fetch(`${tidemark.url}${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${project.api_key}`, "content-type": contentType },
    body,
  });

interface ErrorBody {
  error: { code: string; message: string; details: { index?: number; field: string; message: string }[] };
}
const errorOf = async (response: Response) => ((await response.json()) as ErrorBody).error;

function nestedJson(levels: number): string {
  return `${'{"a":'.repeat(levels - 1)}{"a":1}${"}".repeat(levels - 1)}`;
}

describe("deep JSON", () => {
  test("100,000 [ is a 400 whatever the content type, never a 500", async () => {
    for (const contentType of ["application/json", "text/plain"]) {
      for (const body of ["[".repeat(100_000), `${"[".repeat(100_000)}${"]".repeat(100_000)}`]) {
        const response = await send(body, contentType);
        assert.equal(response.status, 400, `${contentType}, ${body.length} characters`);
        const error = await errorOf(response);
        assert.ok(["invalid_json", "validation_failed"].includes(error.code), error.code);
      }
    }
  });

  test("properties nested 4,100 levels deep are a 400 naming properties (and the index), counted as such", async () => {
    for (const levels of [33, 4100, 100_000]) {
      const single = await send(`{"event": "x", "distinct_id": "u", "properties": ${nestedJson(levels)}}`);
      assert.equal(single.status, 400, `${levels} levels`);
      const error = await errorOf(single);
      assert.equal(error.code, "validation_failed");
      assert.deepEqual(
        error.details.map((p) => p.field),
        ["properties"],
      );
    }
    const deep = `{"event": "x", "distinct_id": "u", "properties": ${nestedJson(100_000)}}`;
    const batch = await send(
      `{"events": [{"event": "x", "distinct_id": "u"}, ${deep}]}`,
      "application/json",
      "/api/v1/event/batch",
    );
    assert.equal(batch.status, 400);
    assert.deepEqual(
      (await errorOf(batch)).details.map((p) => `${p.index}:${p.field}`),
      ["1:properties"],
    );
    // 32 levels are stored as sent.
    const ok = await send(`{"event": "x", "distinct_id": "u", "properties": ${nestedJson(32)}}`);
    assert.equal(ok.status, 202);
    await tidemark.running.app?.ledger.flush();
    const stats = await tidemark.request("GET", `/api/v1/project/${project.id}/stats`, {
      key: tidemark.token,
    });
    assert.equal(stats.body.rejected.internal, undefined, "no request failed inside");
  });
});

test("a text/plain body gets the same prototype-poisoning checks as application/json", async () => {
  const poisoned = '{"event": "x", "distinct_id": "u", "properties": {"__proto__": {"admin": true}}}';
  for (const contentType of ["application/json", "text/plain"]) {
    const response = await send(poisoned, contentType);
    assert.equal(response.status, 400, contentType);
    assert.equal((await errorOf(response)).code, "invalid_json");
  }
});

describe("numbers", () => {
  test("an integer distinct_id beyond 2^53 is a 400 saying to send a string; as a string it is kept exactly", async () => {
    const big = await send('{"event": "x", "distinct_id": 12345678901234567891}');
    assert.equal(big.status, 400);
    const error = await errorOf(big);
    assert.equal(error.details[0]?.field, "distinct_id");
    assert.match(error.details[0]?.message ?? "", /string/);
    const text = await send('{"event": "x", "distinct_id": "12345678901234567891"}');
    assert.equal(text.status, 202);
  });

  test("a property integer JSON.parse would round, or a number beyond a double, is a 400 naming its path", async () => {
    for (const [body, field] of [
      [
        '{"event": "x", "distinct_id": "u", "properties": {"order": {"id": 12345678901234567891}}}',
        "properties.order.id",
      ],
      [
        '{"event": "x", "distinct_id": "u", "properties": {"ids": [1, 9007199254740993]}}',
        "properties.ids.1",
      ],
      ['{"event": "x", "distinct_id": "u", "properties": {"huge": 1e400}}', "properties.huge"],
    ] as const) {
      for (const contentType of ["application/json", "text/plain"]) {
        const response = await send(body, contentType);
        assert.equal(response.status, 400, `${body} as ${contentType}`);
        const error = await errorOf(response);
        assert.deepEqual(
          error.details.map((p) => p.field),
          [field],
        );
        assert.match(error.details[0]?.message ?? "", /string/);
      }
    }
    // Exact ones are kept as sent: 2^53 and a double written out in full (as JavaScript sends it),
    // and long digit runs inside strings.
    const exact =
      '{"event": "Exact", "distinct_id": "u", "properties": {"a": 9007199254740992, "b": 1152921504606847000, "c": "12345678901234567891"}}';
    assert.equal((await send(exact)).status, 202);
    const stored = await tidemark.request("POST", "/api/v1/query", {
      key: project.read_key,
      body: { kind: "events", event: "Exact" },
    });
    assert.deepEqual(stored.body.events[0].properties, {
      a: 9007199254740992,
      b: 2 ** 60,
      c: "12345678901234567891",
    });
  });
});

describe("query", () => {
  const query = (spec: unknown) =>
    tidemark.request("POST", "/api/v1/query", { key: project.read_key, body: spec });

  test("any string as a cursor gives 200 or 400 invalid_cursor, never a 500", async () => {
    const stored = await tidemark.request("POST", "/api/v1/event/batch", {
      key: project.api_key,
      body: { events: Array.from({ length: 3 }, (_, i) => ({ event: "Page", distinct_id: `c${i}` })) },
    });
    assert.equal(stored.status, 202);
    const first = await query({ kind: "events", limit: 1 });
    assert.equal(first.status, 200);
    assert.equal((await query({ kind: "events", limit: 1, cursor: first.body.next_cursor })).status, 200);
    const base64url = (text: string) => Buffer.from(text).toString("base64url");
    const forged = fc.oneof(
      fc.string({ maxLength: 80 }),
      fc.string({ unit: "binary", maxLength: 60 }).map(base64url),
      fc
        .tuple(
          fc.oneof(fc.bigInt({ min: -(10n ** 17n), max: 10n ** 17n }).map(String), fc.string()),
          fc.string(),
        )
        .map(([t, u]) => base64url(`${t}:${u}`)),
      fc.tuple(fc.bigInt({ min: 0n, max: 10n ** 16n }), fc.uuid()).map(([t, u]) => base64url(`${t}:${u}`)),
      fc
        .tuple(fc.bigInt({ min: 0n, max: 10n ** 16n }), fc.stringMatching(/^[0-9a-f-]{36}$/))
        .map(([t, u]) => base64url(`${t}:${u}`)),
    );
    await fc.assert(
      fc.asyncProperty(forged, async (cursor) => {
        const response = await query({ kind: "events", limit: 2, cursor });
        if (response.status === 400) return response.body.error.code === "invalid_cursor";
        return response.status === 200;
      }),
      { numRuns: 400 },
    );
  });

  test("from and to take epoch milliseconds (number or digits) as ISO 8601, on every kind", async () => {
    const from = Date.now() - 86_400_000;
    const to = Date.now() + 86_400_000;
    const specs = [
      { kind: "trends", interval: "hour" },
      { kind: "funnel", steps: ["Page", "Page"] },
      { kind: "retention", start_event: "Page", return_event: "Page" },
      { kind: "events" },
      { kind: "top_events" },
      { kind: "top_values", property: "p" },
    ];
    for (const spec of specs) {
      const iso = await query({
        ...spec,
        from: new Date(from).toISOString(),
        to: new Date(to).toISOString(),
      });
      assert.equal(iso.status, 200, JSON.stringify(iso.body));
      delete iso.body.took_ms;
      for (const [f, t] of [
        [from, to],
        [String(from), String(to)],
      ]) {
        const epoch = await query({ ...spec, from: f, to: t });
        assert.equal(epoch.status, 200, `${spec.kind}: ${JSON.stringify(epoch.body)}`);
        delete epoch.body.took_ms;
        assert.deepEqual(epoch.body, iso.body, spec.kind);
      }
    }
  });
});

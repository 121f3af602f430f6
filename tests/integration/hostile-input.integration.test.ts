import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
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
});

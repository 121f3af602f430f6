import assert from "node:assert/strict";
import { test } from "node:test";
import { AppError } from "../../src/core/errors.js";
import { encodeCursor, parseQuerySpec } from "../../src/query/spec.js";

const base64url = (text: string) => Buffer.from(text).toString("base64url");
const UUID = "0d9f3c1e-8a4b-4c5d-9e6f-7a8b9c0d1e2f";

function refusal(spec: unknown): AppError {
  try {
    parseQuerySpec(spec);
  } catch (error) {
    assert.ok(error instanceof AppError);
    return error;
  }
  assert.fail(`expected a refusal of ${JSON.stringify(spec)}`);
}

test("a cursor this API returned is read back", () => {
  const cursor = encodeCursor({ timestamp: Date.UTC(2026, 10, 28), uuid: UUID });
  const spec = parseQuerySpec({ kind: "events", cursor });
  assert.deepEqual(spec.kind === "events" && spec.cursor, { timestamp: Date.UTC(2026, 10, 28), uuid: UUID });
});

test("a forged cursor is a 400 invalid_cursor naming the field", () => {
  for (const cursor of [
    "",
    "!!!!",
    base64url(`1764324000000:${"-".repeat(36)}`),
    base64url(`1764324000000:${UUID.replaceAll("-", "0")}0000`),
    base64url(`1764324000000:${UUID.toUpperCase()}`),
    base64url(`9999999999999999:${UUID}`),
    base64url(`0:${UUID}`),
    base64url(`-1:${UUID}`),
    base64url(`01764324000000:${UUID}`),
    `${base64url(`1764324000000:${UUID}`)}!`,
    `${base64url(`1764324000000:${UUID}`)}==`,
  ]) {
    const error = refusal({ kind: "events", cursor });
    assert.equal(error.status, 400, cursor);
    assert.equal(error.code, "invalid_cursor", cursor);
    assert.deepEqual(
      error.details?.map((p) => p.field),
      ["cursor"],
      cursor,
    );
  }
});

test("from and to take epoch milliseconds as well as ISO 8601, on every kind", () => {
  const from = Date.UTC(2026, 10, 1);
  const to = Date.UTC(2026, 10, 28);
  const specs = [
    { kind: "trends" },
    { kind: "funnel", steps: ["a", "b"] },
    { kind: "retention", start_event: "a", return_event: "b" },
    { kind: "events" },
    { kind: "top_events" },
    { kind: "top_values", property: "p" },
  ];
  for (const spec of specs) {
    const iso = parseQuerySpec({
      ...spec,
      from: new Date(from).toISOString(),
      to: new Date(to).toISOString(),
    });
    for (const [f, t] of [
      [from, to],
      [String(from), String(to)],
    ]) {
      assert.deepEqual(parseQuerySpec({ ...spec, from: f, to: t }), iso, `${spec.kind} ${typeof f}`);
    }
  }
  const bad = refusal({ kind: "top_events", from: 1764324000, to: Date.UTC(2026, 10, 28) });
  assert.equal(bad.details?.[0]?.field, "from");
});

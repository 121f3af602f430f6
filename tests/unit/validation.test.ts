import assert from "node:assert/strict";
import { test } from "node:test";
import { AppError } from "../../src/core/errors.js";
import { validateBatch, validateEvent } from "../../src/core/validation.js";

const limits = { maxBatchEvents: 5, futureToleranceMs: 86_400_000 };
const project = "11111111-1111-4111-8111-111111111111";
const now = Date.UTC(2026, 10, 28, 12);

function problems(run: () => unknown): AppError {
  try {
    run();
  } catch (error) {
    assert.ok(error instanceof AppError);
    return error;
  }
  assert.fail("expected a validation error");
}

test("a valid event is normalised", () => {
  const { events, warnings } = validateEvent(
    {
      event: "Page View",
      distinct_id: 42,
      properties: { a: 1 },
      uuid: "AAAAAAAA-AAAA-4AAA-8AAA-AAAAAAAAAAAA",
      timestamp: "2026-11-28T11:00:00Z",
    },
    project,
    now,
    limits,
  );
  assert.deepEqual(events, [
    {
      projectId: project,
      uuid: "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa",
      event: "Page View",
      distinctId: "42",
      timestamp: Date.UTC(2026, 10, 28, 11),
      properties: '{"a":1}',
      receivedAt: now,
    },
  ]);
  assert.deepEqual(warnings, []);
});

test("a missing uuid is generated, a missing time is receipt time", () => {
  const { events } = validateEvent({ event: "x", distinct_id: "u" }, project, now, limits);
  assert.match(events[0]!.uuid, /^[0-9a-f-]{36}$/);
  assert.equal(events[0]!.timestamp, now);
  assert.equal(events[0]!.properties, "{}");
});

test("every problem of a batch is listed with its index and field", () => {
  const error = problems(() =>
    validateBatch(
      {
        events: [
          { event: "ok", distinct_id: "u" },
          { distinct_id: "u" },
          { event: "x", distinct_id: "u", timestamp: "nope" },
          { event: "x", distinct_id: "u", properties: [1, 2] },
          { event: "x", distinct_id: "u", colour: "red" },
        ],
      },
      project,
      now,
      limits,
    ),
  );
  assert.equal(error.status, 400);
  const found = (error.details ?? []).map((p) => `${p.index}:${p.field}`);
  assert.ok(found.includes("1:event"), found.join());
  assert.ok(found.includes("2:timestamp"), found.join());
  assert.ok(found.includes("3:properties"), found.join());
  assert.ok(found.includes("4:colour"), found.join());
  assert.ok(!found.some((f) => f.startsWith("0:")), "the valid event has no problem");
});

test("batch shape and size", () => {
  assert.equal(problems(() => validateBatch([], project, now, limits)).status, 400);
  assert.equal(problems(() => validateBatch({ events: [] }, project, now, limits)).status, 400);
  const tooMany = { events: Array.from({ length: 6 }, () => ({ event: "x", distinct_id: "u" })) };
  const error = problems(() => validateBatch(tooMany, project, now, limits));
  assert.equal(error.status, 413);
  assert.equal(error.code, "batch_too_large");
});

test("far-future times are clamped with a warning, batch sent_at corrects skew", () => {
  const { events, warnings } = validateBatch(
    {
      sent_at: now + 3_600_000,
      events: [
        { event: "x", distinct_id: "u", timestamp: now + 3_600_000 - 1000 },
        { event: "y", distinct_id: "u", timestamp: now + 10 * 86_400_000, sent_at: now },
      ],
    },
    project,
    now,
    limits,
  );
  assert.equal(events[0]!.timestamp, now - 1000);
  assert.equal(events[1]!.timestamp, now);
  assert.deepEqual(
    warnings.map((w) => w.index),
    [1],
  );
});

test("types are checked, not coerced", () => {
  for (const bad of [
    { event: "", distinct_id: "u" },
    { event: 5, distinct_id: "u" },
    { event: "x", distinct_id: null },
    { event: "x", distinct_id: 1.5 },
    { event: "x", distinct_id: "u", uuid: "not-a-uuid" },
    { event: "x".repeat(201), distinct_id: "u" },
    "string",
    null,
  ]) {
    assert.equal(problems(() => validateEvent(bad, project, now, limits)).status, 400, JSON.stringify(bad));
  }
});

test("unpaired surrogates and NUL become U+FFFD; paired ones and literal backslashes are kept", () => {
  const { events } = validateEvent(
    {
      event: "a\ud800b\u0000",
      distinct_id: "\udc00",
      properties: {
        lone: "x\ud83dy",
        pair: "😀",
        literal: "\\ud800",
        [`k\udfff`]: 1,
        nul: "\u0000",
        lit: "\\u0000",
      },
    },
    project,
    now,
    limits,
  );
  const e = events[0]!;
  assert.equal(e.event, "a\ufffdb\ufffd");
  assert.equal(e.distinctId, "\ufffd");
  assert.deepEqual(JSON.parse(e.properties), {
    lone: "x\ufffdy",
    pair: "😀",
    literal: "\\ud800",
    "k\ufffd": 1,
    nul: "\ufffd",
    lit: "\\u0000",
  });
  assert.ok(e.properties.isWellFormed());
});

test("the range rules apply to the time after clock-skew correction", () => {
  // A sent_at far ahead moves a valid timestamp to before 2000: refused, naming the field.
  const early = problems(() =>
    validateEvent(
      {
        event: "x",
        distinct_id: "u",
        timestamp: "2001-01-01T00:00:00Z",
        sent_at: "9999-01-01T00:00:00Z",
      },
      project,
      now,
      limits,
    ),
  );
  assert.equal(early.status, 400);
  assert.deepEqual(
    early.details?.map((p) => p.field),
    ["timestamp"],
  );
  assert.match(early.details?.[0]?.message ?? "", /sent_at/);
  // The same through a batch-level sent_at, with the index.
  const batch = problems(() =>
    validateBatch(
      {
        sent_at: "9999-01-01T00:00:00Z",
        events: [{ event: "x", distinct_id: "u", timestamp: "2001-01-01T00:00:00Z" }],
      },
      project,
      now,
      limits,
    ),
  );
  assert.deepEqual(
    batch.details?.map((p) => `${p.index}:${p.field}`),
    ["0:timestamp"],
  );
  // A sent_at far behind moves it into the far future: clamped to receipt, with a warning.
  const late = validateEvent(
    { event: "x", distinct_id: "u", timestamp: "9999-01-01T00:00:00Z", sent_at: "2000-01-01T00:00:00Z" },
    project,
    now,
    limits,
  );
  assert.equal(late.events[0]!.timestamp, now);
  assert.equal(late.warnings.length, 1);
  // The earliest time allowed is kept, with or without a correction.
  const earliest = Date.UTC(2000, 0, 1);
  assert.equal(
    validateEvent({ event: "x", distinct_id: "u", timestamp: earliest }, project, now, limits).events[0]!
      .timestamp,
    earliest,
  );
  assert.equal(
    validateEvent(
      { event: "x", distinct_id: "u", timestamp: earliest + 5000, sent_at: now + 5000 },
      project,
      now,
      limits,
    ).events[0]!.timestamp,
    earliest,
  );
});

test("properties nest at most 32 levels; deeper is a 400 naming the field and the index", () => {
  const nested = (levels: number) => {
    let value: unknown = 1;
    for (let i = 1; i < levels; i++) value = i % 2 === 0 ? [value] : { a: value };
    return { a: value };
  };
  const ok = validateEvent({ event: "x", distinct_id: "u", properties: nested(32) }, project, now, limits);
  assert.equal(ok.events.length, 1);
  const single = problems(() =>
    validateEvent({ event: "x", distinct_id: "u", properties: nested(33) }, project, now, limits),
  );
  assert.equal(single.status, 400);
  assert.deepEqual(
    single.details?.map((p) => p.field),
    ["properties"],
  );
  // Far deeper than JSON.stringify's recursion survives: still a 400, not a stack overflow.
  const batch = problems(() =>
    validateBatch(
      {
        events: [
          { event: "x", distinct_id: "u" },
          { event: "x", distinct_id: "u", properties: nested(100_000) },
        ],
      },
      project,
      now,
      limits,
    ),
  );
  assert.equal(batch.status, 400);
  assert.deepEqual(
    batch.details?.map((p) => `${p.index}:${p.field}`),
    ["1:properties"],
  );
});

test("an integer distinct_id outside the exact range of a JSON number is refused: send it as a string", () => {
  for (const id of [2 ** 53, -(2 ** 53), Number("12345678901234567890"), 1e21]) {
    const error = problems(() => validateEvent({ event: "x", distinct_id: id }, project, now, limits));
    assert.equal(error.status, 400, String(id));
    assert.deepEqual(
      error.details?.map((p) => p.field),
      ["distinct_id"],
    );
    assert.match(error.details?.[0]?.message ?? "", /string/);
  }
  const largest = validateEvent({ event: "x", distinct_id: 2 ** 53 - 1 }, project, now, limits);
  assert.equal(largest.events[0]!.distinctId, "9007199254740991");
  assert.equal(
    validateEvent({ event: "x", distinct_id: "12345678901234567890" }, project, now, limits).events[0]!
      .distinctId,
    "12345678901234567890",
  );
});

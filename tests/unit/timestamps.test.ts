import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { parseTimestamp, resolveEventTime } from "../../src/core/timestamps.js";

const ok = (input: unknown) => {
  const parsed = parseTimestamp(input);
  assert.ok(parsed.ok, `${String(input)}: ${parsed.ok ? "" : parsed.message}`);
  return parsed.ms;
};

test("ISO 8601 in its common forms", () => {
  assert.equal(ok("2026-11-28T10:00:00Z"), Date.UTC(2026, 10, 28, 10));
  assert.equal(ok("2026-11-28T10:00:00.123Z"), Date.UTC(2026, 10, 28, 10, 0, 0, 123));
  assert.equal(ok("2026-11-28T10:00:00.123456Z"), Date.UTC(2026, 10, 28, 10, 0, 0, 123));
  assert.equal(ok("2026-11-28T12:00:00+02:00"), Date.UTC(2026, 10, 28, 10));
  assert.equal(ok("2026-11-28T05:30:00-0430"), Date.UTC(2026, 10, 28, 10));
  assert.equal(ok("2026-11-28 10:00:00"), Date.UTC(2026, 10, 28, 10), "no offset means UTC");
  assert.equal(ok("2026-11-28"), Date.UTC(2026, 10, 28));
});

test("epoch milliseconds as a number or digits", () => {
  assert.equal(ok(1764324000000), 1764324000000);
  assert.equal(ok("1764324000000"), 1764324000000);
  assert.equal(ok(1764324000000.7), 1764324000000);
});

test("refuses what is not a time, with a reason", () => {
  for (const bad of [
    "yesterday",
    "2026-13-01",
    "2026-02-30T00:00:00Z",
    "2026-11-28T25:00:00Z",
    "",
    true,
    null,
    {},
    Number.NaN,
  ]) {
    const parsed = parseTimestamp(bad);
    assert.equal(parsed.ok, false, String(bad));
  }
  const seconds = parseTimestamp(1764324000);
  assert.ok(!seconds.ok && seconds.message.includes("seconds"), "epoch seconds get a hint");
});

test("clock skew is corrected by sent_at, far future is clamped, absent time is receipt time", () => {
  const received = Date.UTC(2026, 10, 28, 12);
  const hour = 3_600_000;
  assert.deepEqual(resolveEventTime(undefined, undefined, received, 86_400_000), {
    ok: true,
    ms: received,
    clamped: false,
  });
  // The device clock is one hour ahead: it says it sent at 13:00 an event from 12:50.
  assert.deepEqual(resolveEventTime(received + hour - 600_000, received + hour, received, 86_400_000), {
    ok: true,
    ms: received - 600_000,
    clamped: false,
  });
  assert.deepEqual(resolveEventTime(received + 2 * 86_400_000, undefined, received, 86_400_000), {
    ok: true,
    ms: received,
    clamped: true,
  });
  assert.deepEqual(resolveEventTime(received + hour, undefined, received, 86_400_000), {
    ok: true,
    ms: received + hour,
    clamped: false,
  });
});

test("whatever the client sends, the time to store lies between 2000-01-01 and receipt plus the tolerance", () => {
  const received = Date.UTC(2026, 10, 28, 12);
  const tolerance = 86_400_000;
  const earliest = Date.UTC(2000, 0, 1);
  const latest = Date.UTC(9999, 11, 31, 23, 59, 59, 999);
  fc.assert(
    fc.property(
      fc.integer({ min: earliest, max: latest }),
      fc.option(fc.integer({ min: earliest, max: latest }), { nil: undefined }),
      (client, sentAt) => {
        const time = resolveEventTime(client, sentAt, received, tolerance);
        if (!time.ok) return time.message.includes("before 2000-01-01");
        return time.ms >= earliest && time.ms <= received + tolerance;
      },
    ),
  );
  const moved = resolveEventTime(Date.UTC(2001, 0, 1), Date.UTC(9999, 0, 1), received, tolerance);
  assert.equal(moved.ok, false);
});

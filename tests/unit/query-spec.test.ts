import assert from "node:assert/strict";
import { test } from "node:test";
import { AppError } from "../../src/core/errors.js";
import { parseQuerySpec } from "../../src/query/spec.js";

const FROM = Date.UTC(2026, 0, 1);
const TO = Date.UTC(2026, 1, 1);
const range = { from: "2026-01-01", to: "2026-02-01" };

test("each kind parses with its defaults applied and its times read", () => {
  assert.deepEqual(parseQuerySpec({ kind: "trends", ...range }), {
    kind: "trends",
    event: undefined,
    math: "total",
    interval: "day",
    fromMs: FROM,
    toMs: TO,
    filters: [],
    breakdown: undefined,
    limit: 10,
  });
  assert.deepEqual(parseQuerySpec({ kind: "funnel", steps: ["a", "b"], ...range }), {
    kind: "funnel",
    steps: ["a", "b"],
    windowSeconds: 86400,
    fromMs: FROM,
    toMs: TO,
    filters: [],
  });
  assert.deepEqual(
    parseQuerySpec({ kind: "retention", start_event: "s", return_event: "r", interval: "week", ...range }),
    {
      kind: "retention",
      startEvent: "s",
      returnEvent: "r",
      interval: "week",
      periods: 5,
      fromMs: FROM,
      toMs: TO,
      filters: [],
    },
  );
  assert.deepEqual(parseQuerySpec({ kind: "events" }), {
    kind: "events",
    event: undefined,
    distinctId: undefined,
    fromMs: undefined,
    toMs: undefined,
    filters: [],
    limit: 100,
    cursor: undefined,
  });
  assert.deepEqual(parseQuerySpec({ kind: "top_events", from: FROM, to: TO, limit: 3 }), {
    kind: "top_events",
    fromMs: FROM,
    toMs: TO,
    filters: [],
    limit: 3,
  });
  assert.deepEqual(
    parseQuerySpec({
      kind: "top_values",
      property: "plan",
      ...range,
      filters: [{ property: "n", op: "gt", value: 2 }],
    }),
    {
      kind: "top_values",
      property: "plan",
      event: undefined,
      fromMs: FROM,
      toMs: TO,
      filters: [{ property: "n", op: "gt", value: 2 }],
      limit: 10,
    },
  );
});

test("each bad field is a 400 that names it", () => {
  const cases: [unknown, string][] = [
    [null, "(body)"],
    [[], "(body)"],
    [{}, "kind"],
    [{ kind: "pie" }, "kind"],
    [{ kind: "trends", ...range, math: "median" }, "math"],
    [{ kind: "trends", ...range, interval: "minute" }, "interval"],
    [{ kind: "trends", from: "2026-01-01", to: "2025-01-01" }, "to"],
    [{ kind: "trends", from: "last week", to: "2026-01-01" }, "from"],
    [{ kind: "trends", ...range, limit: 0 }, "limit"],
    [{ kind: "trends", ...range, breakdown: "" }, "breakdown"],
    [{ kind: "trends", from: "2000-01-01", to: "2026-01-01", interval: "hour" }, "interval"],
    [{ kind: "trends", ...range, colour: "red" }, "colour"],
    [{ kind: "trends", ...range, filters: [{ property: "p", op: "like", value: "x" }] }, "filters.0.op"],
    [{ kind: "trends", ...range, filters: [{ property: "p", op: "eq" }] }, "filters.0.value"],
    [{ kind: "trends", ...range, filters: [{ property: "p", op: "gt", value: "9" }] }, "filters.0.value"],
    [{ kind: "funnel", steps: ["a"], ...range }, "steps"],
    [{ kind: "funnel", steps: ["a", "b"], window_seconds: 0, ...range }, "window_seconds"],
    [{ kind: "retention", return_event: "r", ...range }, "start_event"],
    [{ kind: "retention", start_event: "s", return_event: "r", periods: 91, ...range }, "periods"],
    [{ kind: "events", limit: 1001 }, "limit"],
    [{ kind: "events", cursor: "not-a-cursor" }, "cursor"],
    [{ kind: "top_events", to: "2026-01-01" }, "from"],
    [{ kind: "top_values", ...range }, "property"],
  ];
  for (const [body, field] of cases) {
    assert.throws(
      () => parseQuerySpec(body),
      (error: unknown) => {
        assert.ok(error instanceof AppError, JSON.stringify(body));
        assert.equal(error.status, 400, JSON.stringify(body));
        assert.ok(
          error.details?.some((problem) => problem.field === field),
          `${JSON.stringify(body)}: ${JSON.stringify(error.details)} names ${field}`,
        );
        return true;
      },
    );
  }
});

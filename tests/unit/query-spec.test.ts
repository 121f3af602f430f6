import assert from "node:assert/strict";
import { test } from "node:test";
import { AppError } from "../../src/core/errors.js";
import {
  countsUsers,
  parseQuerySpec,
  personPropertiesReadBy,
  propertiesReadBy,
} from "../../src/query/spec.js";

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
    breakdownType: "event",
    limit: 10,
    identity: "person",
  });
  assert.deepEqual(parseQuerySpec({ kind: "funnel", steps: ["a", "b"], ...range }), {
    kind: "funnel",
    steps: ["a", "b"],
    windowSeconds: 86400,
    fromMs: FROM,
    toMs: TO,
    filters: [],
    identity: "person",
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
      identity: "person",
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
    [{ kind: "trends", ...range, identity: "people" }, "identity"],
    [{ kind: "funnel", steps: ["a", "b"], identity: "user", ...range }, "identity"],
    [{ kind: "events", identity: "person" }, "identity"],
    [{ kind: "top_events", ...range, identity: "person" }, "identity"],
    [{ kind: "trends", ...range, breakdown_type: "person" }, "breakdown_type"],
    [{ kind: "trends", ...range, breakdown: "plan", breakdown_type: "group" }, "breakdown_type"],
    [
      { kind: "trends", ...range, filters: [{ property: "p", op: "is_set", type: "user" }] },
      "filters.0.type",
    ],
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

test("identity options: persons by default, distinct ids on request, person properties by type", () => {
  const trends = parseQuerySpec({
    kind: "trends",
    ...range,
    math: "unique_users",
    breakdown: "plan",
    breakdown_type: "person",
    identity: "distinct_id",
    filters: [
      { property: "plan", op: "eq", value: "pro", type: "person" },
      { property: "path", op: "eq", value: "/", type: "event" },
      { property: "price", op: "gt", value: 1 },
    ],
  });
  assert.equal(trends.kind === "trends" && trends.identity, "distinct_id");
  assert.equal(trends.kind === "trends" && trends.breakdownType, "person");
  assert.deepEqual([...personPropertiesReadBy(trends)], ["plan"]);
  assert.deepEqual([...propertiesReadBy(trends)], ["path", "price"]);
  assert.equal(countsUsers(trends), false, "distinct ids: no persons to resolve");
  assert.equal(countsUsers(parseQuerySpec({ kind: "trends", ...range, math: "unique_users" })), true);
  assert.equal(countsUsers(parseQuerySpec({ kind: "trends", ...range })), false, "a total counts events");
  assert.equal(countsUsers(parseQuerySpec({ kind: "funnel", steps: ["a", "b"], ...range })), true);
  assert.equal(
    countsUsers(parseQuerySpec({ kind: "retention", start_event: "a", return_event: "b", ...range })),
    true,
  );
  assert.equal(countsUsers(parseQuerySpec({ kind: "events" })), false);
});

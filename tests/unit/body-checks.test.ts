import assert from "node:assert/strict";
import { test } from "node:test";
import { checkBatchBody, checkEventBody, normaliseBatch } from "../../src/core/validation.js";
import { checkQueryBody } from "../../src/query/spec.js";

const limits = { maxBatchEvents: 3, futureToleranceMs: 86_400_000 };

test("the ingest body checks give the typed body, or a 400 listing every problem with index and field", () => {
  const event = checkEventBody({ event: "x", distinct_id: 7 });
  assert.deepEqual(event, { value: { event: "x", distinct_id: 7 } });

  const bad = checkBatchBody(
    {
      events: [
        { event: "", distinct_id: "u" },
        { event: "ok", distinct_id: "u", timestamp: "yesterday" },
        { event: "ok", distinct_id: "u", colour: "red" },
      ],
    },
    limits.maxBatchEvents,
  );
  assert.equal(bad.error?.status, 400);
  assert.deepEqual(
    bad.error?.details?.map((p) => [p.index, p.field]),
    [
      [0, "event"],
      [1, "timestamp"],
      [2, "colour"],
    ],
  );
  assert.equal(checkBatchBody({ events: [{}, {}, {}, {}] }, limits.maxBatchEvents).error?.status, 413);
  assert.equal(checkBatchBody({ events: [] }, limits.maxBatchEvents).error?.details?.[0]?.field, "events");
  assert.equal(checkBatchBody([], limits.maxBatchEvents).error?.status, 400);

  const batch = checkBatchBody({ events: [{ event: "a", distinct_id: "u" }], sent_at: 1_700_000_000_000 }, 3);
  assert.ok(batch.value);
  const { events } = normaliseBatch(batch.value, "p", 1_700_000_000_000, limits);
  assert.equal(events[0]?.projectId, "p");
});

test("the query body check gives the typed spec, or a 400 naming the field of the spec's own kind", () => {
  const spec = { kind: "top_events", from: "2026-01-01", to: "2026-02-01" };
  assert.deepEqual(checkQueryBody(spec), { value: spec });
  assert.equal(checkQueryBody({ kind: "nope" }).error?.details?.[0]?.field, "kind");
  const wrong = checkQueryBody({ kind: "funnel", steps: ["a"], from: "2026-01-01", to: "2026-02-01" });
  assert.equal(wrong.error?.code, "invalid_query");
  assert.deepEqual(
    wrong.error?.details?.map((p) => p.field),
    ["steps"],
  );
});

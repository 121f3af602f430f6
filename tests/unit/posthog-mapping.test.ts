import assert from "node:assert/strict";
import { test } from "node:test";
import { normaliseMapped } from "../../src/api/ingest/mapped-events.js";
import {
  checkPosthogBody,
  mapPosthogEvent,
  posthogSize,
  posthogToken,
} from "../../src/api/ingest/posthog.mapping.js";
import type { AppError } from "../../src/core/errors.js";

const limits = { maxBatchEvents: 10, futureToleranceMs: 86_400_000 };
const project = "11111111-1111-4111-8111-111111111111";
const now = Date.UTC(2026, 10, 28, 12);
const uuid = "0192a0b4-7c3e-7d6f-9a1b-2c3d4e5f6a7b";

function mapped(raw: unknown): Record<string, unknown> {
  const item = mapPosthogEvent(raw);
  assert.ok("event" in item, JSON.stringify(item));
  return item.event;
}

function refused(check: { error?: AppError }): AppError {
  assert.ok(check.error, "expected a refusal");
  return check.error;
}

test("an event is stored as sent; the key is not stored; type and library are dropped", () => {
  assert.deepEqual(
    mapped({
      event: "Purchase",
      distinct_id: "d1",
      properties: { amount: 5, token: "wk_dev_x", $lib: "posthog-node" },
      timestamp: "2026-11-28T10:00:00Z",
      uuid,
      api_key: "wk_dev_x",
      type: "capture",
      library: "posthog-node",
      library_version: "5.70.0",
    }),
    {
      event: "Purchase",
      distinct_id: "d1",
      properties: { amount: 5, $lib: "posthog-node" },
      timestamp: "2026-11-28T10:00:00Z",
      uuid,
    },
  );
});

test("posthog-js puts distinct_id in properties; it stays there and is the distinct id", () => {
  assert.deepEqual(
    mapped({ event: "$pageview", properties: { distinct_id: "anon-1", token: "k", $current_url: "/" } }),
    {
      event: "$pageview",
      distinct_id: "anon-1",
      properties: { distinct_id: "anon-1", $current_url: "/" },
    },
  );
});

test("$identify, $create_alias and $set keep their properties; a top-level $set is merged over properties.$set", () => {
  assert.deepEqual(
    mapped({
      event: "$identify",
      distinct_id: "u1",
      properties: { $anon_distinct_id: "a1", $set: { a: 1, b: 1 } },
      $set: { b: 2 },
      $set_once: { first: "x" },
    }),
    {
      event: "$identify",
      distinct_id: "u1",
      properties: { $anon_distinct_id: "a1", $set: { a: 1, b: 2 }, $set_once: { first: "x" } },
    },
  );
  assert.deepEqual(
    mapped({ event: "$create_alias", distinct_id: "u1", properties: { alias: "a1", distinct_id: "u1" } }),
    {
      event: "$create_alias",
      distinct_id: "u1",
      properties: { alias: "a1", distinct_id: "u1" },
    },
  );
});

test("offset: the event happened that many ms before receipt", () => {
  const check = checkPosthogBody(
    { event: "e", distinct_id: "d", offset: 60_000, timestamp: "2020-01-01T00:00:00Z" },
    10,
  );
  assert.ok(check.value, JSON.stringify(check.error));
  const { events } = normaliseMapped(check.value, project, now, limits);
  assert.equal(events[0]!.timestamp, now - 60_000);

  const tooFar = checkPosthogBody({ event: "e", distinct_id: "d", offset: now }, 10);
  assert.ok(tooFar.value, "maps");
  assert.throws(
    () => normaliseMapped(tooFar.value!, project, now, limits),
    (error: AppError) => error.details?.[0]?.field === "offset",
  );
  assert.equal(
    refused(checkPosthogBody({ event: "e", distinct_id: "d", offset: -1 }, 10)).details?.[0]?.field,
    "offset",
  );
});

test("every shape of body: one event, an array, {batch}; sent_at of the batch corrects the clock", () => {
  assert.equal(checkPosthogBody({ event: "e", distinct_id: "d" }, 10).value?.single, true);
  assert.equal(checkPosthogBody([{ event: "e", distinct_id: "d" }], 10).value?.events.length, 1);
  const batch = checkPosthogBody(
    {
      api_key: "k",
      batch: [{ event: "e", distinct_id: "d", timestamp: "2026-11-28T10:00:00Z" }],
      sent_at: "2026-11-28T11:00:00Z",
      historical_migration: false,
    },
    10,
  );
  assert.ok(batch.value, "maps");
  assert.equal(
    normaliseMapped(batch.value, project, now, limits).events[0]!.timestamp,
    Date.UTC(2026, 10, 28, 11),
  );
  for (const body of ["x", 5, null, { foo: 1 }]) {
    assert.equal(refused(checkPosthogBody(body, 10)).code, "validation_failed", JSON.stringify(body));
  }
  assert.equal(refused(checkPosthogBody({ batch: [], extra: 1 }, 10)).details?.[0]?.field, "extra");
  assert.equal(refused(checkPosthogBody({ batch: [] }, 10)).code, "validation_failed");
  const many = Array.from({ length: 11 }, () => ({ event: "e", distinct_id: "d" }));
  assert.equal(refused(checkPosthogBody(many, 10)).code, "batch_too_large");
  assert.equal(posthogSize(many), 11);
  assert.equal(posthogSize({ batch: many }), 11);
  assert.equal(posthogSize("x"), 1);
});

test("unmappable events are refused with the reason and their index; the batch is refused whole", () => {
  const error = refused(
    checkPosthogBody(
      {
        batch: [
          { event: "ok", distinct_id: "d" },
          { event: "no id" },
          { event: "$snapshot", distinct_id: "d", properties: { $snapshot_data: {} } },
          { event: "e", distinct_id: "d", extra: true },
          { event: "e", distinct_id: "d", uuid: "not-a-uuid" },
          { event: "e", distinct_id: "d", $set: "x" },
          { distinct_id: "d" },
        ],
      },
      10,
    ),
  );
  assert.deepEqual(
    (error.details ?? []).map((d) => [d.index, d.field]),
    [
      [1, "distinct_id"],
      [2, "event"],
      [3, "extra"],
      [4, "uuid"],
      [5, "$set"],
      [6, "event"],
    ],
  );
  assert.match(error.details?.[1]?.message ?? "", /session recording/);
});

test("the project key: api_key or token of the body, else of the events; two different keys are refused", () => {
  assert.equal(posthogToken({ api_key: "a", batch: [] }), "a");
  assert.equal(posthogToken({ token: "t", event: "e" }), "t");
  assert.equal(posthogToken([{ event: "e", properties: { token: "p" } }]), "p");
  assert.equal(
    posthogToken({
      batch: [
        { event: "e", api_key: "a" },
        { event: "f", properties: { token: "a" } },
      ],
    }),
    "a",
  );
  assert.equal(posthogToken({ event: "e" }), undefined);
  assert.equal(posthogToken("x"), undefined);
  assert.equal(posthogToken({ token: "t" }), "t", "a flags body");
  assert.throws(
    () => posthogToken({ api_key: "a", batch: [{ event: "e", properties: { token: "b" } }] }),
    (error: AppError) => error.code === "validation_failed",
  );
});

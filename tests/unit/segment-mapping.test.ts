import assert from "node:assert/strict";
import { test } from "node:test";
import { normaliseMapped } from "../../src/api/ingest/mapped-events.js";
import {
  checkSegmentBatch,
  checkSegmentCall,
  mapSegmentMessage,
  SEGMENT_MESSAGE_NAMESPACE,
  segmentMessageUuid,
  segmentWriteKeys,
} from "../../src/api/ingest/segment.mapping.js";
import type { AppError } from "../../src/core/errors.js";
import { uuidV5 } from "../../src/core/uuid-v5.js";

const limits = { maxBatchEvents: 10, futureToleranceMs: 86_400_000 };
const project = "11111111-1111-4111-8111-111111111111";
const now = Date.UTC(2026, 10, 28, 12);

/** The event a message maps to (asserting it maps). */
function mapped(message: unknown): Record<string, unknown> {
  const item = mapSegmentMessage(message);
  assert.ok("event" in item, JSON.stringify(item));
  return item.event;
}

function refused(check: { error?: AppError }): AppError {
  assert.ok(check.error, "expected a refusal");
  return check.error;
}

test("uuid v5 matches RFC 9562's example (the DNS namespace, www.example.com)", () => {
  assert.equal(
    uuidV5("www.example.com", "6ba7b810-9dad-11d1-80b4-00c04fd430c8"),
    "2ed6657d-e927-568b-95e1-2665a8aea6a2",
  );
});

test("a messageId that is a UUID is the uuid; any other is its UUID v5, the same every time", () => {
  assert.equal(
    segmentMessageUuid("AAAAAAAA-AAAA-4AAA-8AAA-AAAAAAAAAAAA"),
    "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa",
  );
  const id = "node-next-1795923160949-a896113f-247b-499b-a6a6-16a67f81fb48";
  assert.equal(segmentMessageUuid(id), uuidV5(id, SEGMENT_MESSAGE_NAMESPACE));
  assert.equal(segmentMessageUuid(id), segmentMessageUuid(id));
  assert.notEqual(segmentMessageUuid(id), segmentMessageUuid(`${id}x`));
  assert.match(
    segmentMessageUuid(id),
    /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
  );
});

test("track: event, userId over anonymousId, properties with the context under $context", () => {
  assert.deepEqual(
    mapped({
      type: "track",
      event: "Purchase",
      userId: "u1",
      anonymousId: "a1",
      properties: { amount: 5 },
      context: { ip: "1.2.3.4" },
      timestamp: "2026-11-28T10:00:00Z",
      sentAt: "2026-11-28T10:00:05Z",
      messageId: "m1",
      integrations: {},
      _metadata: { jsRuntime: "node" },
      receivedAt: "2026-11-28T10:00:06Z",
      channel: "server",
      version: 2,
    }),
    {
      event: "Purchase",
      distinct_id: "u1",
      properties: { amount: 5, $context: { ip: "1.2.3.4" } },
      timestamp: "2026-11-28T10:00:00Z",
      sent_at: "2026-11-28T10:00:05Z",
      uuid: segmentMessageUuid("m1"),
    },
  );
  // anonymousId when userId is absent, null or empty; originalTimestamp when timestamp is absent
  for (const userId of [undefined, null, ""]) {
    assert.equal(mapped({ type: "track", event: "x", userId, anonymousId: "a1" }).distinct_id, "a1");
  }
  assert.equal(
    mapped({ type: "track", event: "x", userId: "u", originalTimestamp: "2026-11-28T09:00:00Z" }).timestamp,
    "2026-11-28T09:00:00Z",
  );
});

test("page and screen: Page View / Screen View with name and category in properties", () => {
  assert.deepEqual(
    mapped({ type: "page", anonymousId: "a1", name: "Pricing", category: "Docs", properties: { url: "/p" } }),
    {
      event: "Page View",
      distinct_id: "a1",
      properties: { url: "/p", name: "Pricing", category: "Docs" },
    },
  );
  assert.deepEqual(mapped({ type: "screen", userId: 7, name: "Main" }), {
    event: "Screen View",
    distinct_id: 7,
    properties: { name: "Main" },
  });
});

test("identify: $identify with traits as $set and the anonymousId as $anon_distinct_id when both ids are sent", () => {
  assert.deepEqual(mapped({ type: "identify", userId: "u1", anonymousId: "a1", traits: { email: "e@x" } }), {
    event: "$identify",
    distinct_id: "u1",
    properties: { $set: { email: "e@x" }, $anon_distinct_id: "a1" },
  });
  assert.deepEqual(mapped({ type: "identify", anonymousId: "a1", traits: { plan: "pro" } }), {
    event: "$identify",
    distinct_id: "a1",
    properties: { $set: { plan: "pro" } },
  });
});

test("alias: $create_alias by the userId with alias = previousId; group: $groupidentify", () => {
  assert.deepEqual(mapped({ type: "alias", userId: "u1", previousId: "a1" }), {
    event: "$create_alias",
    distinct_id: "u1",
    properties: { alias: "a1" },
  });
  assert.deepEqual(mapped({ type: "group", userId: "u1", groupId: 42, traits: { name: "Acme" } }), {
    event: "$groupidentify",
    distinct_id: "u1",
    properties: { $group_type: "group", $group_key: "42", $group_set: { name: "Acme" } },
  });
});

test("unmappable messages are refused with the reason, named by the client's field", () => {
  const cases: [unknown, { field: string; message: RegExp }][] = [
    [
      { type: "track", userId: "u" },
      { field: "event", message: /required/ },
    ],
    [
      { type: "track", event: "x" },
      { field: "userId", message: /userId or anonymousId/ },
    ],
    [
      { type: "alias", anonymousId: "a", previousId: "p" },
      { field: "userId", message: /required for an alias/ },
    ],
    [
      { type: "alias", userId: "u" },
      { field: "previousId", message: /required/ },
    ],
    [
      { type: "group", userId: "u" },
      { field: "groupId", message: /required/ },
    ],
    [
      { type: "bogus", userId: "u" },
      { field: "type", message: /not a Segment call/ },
    ],
    [
      { userId: "u", event: "x" },
      { field: "type", message: /required/ },
    ],
    [
      { type: "track", userId: "u", event: "x", extra: 1 },
      { field: "extra", message: /unknown field/ },
    ],
    [
      { type: "identify", userId: "u", event: "x" },
      { field: "event", message: /unknown field for a identify/ },
    ],
    [
      { type: "track", userId: "u", event: "x", properties: [1] },
      { field: "properties", message: /object/ },
    ],
    [
      { type: "track", userId: "u", event: "x", messageId: 5 },
      { field: "messageId", message: /string/ },
    ],
    ["text", { field: "(message)", message: /object/ }],
  ];
  for (const [message, expected] of cases) {
    const item = mapSegmentMessage(message);
    assert.ok("problems" in item, JSON.stringify(message));
    const problem = item.problems.find((p) => p.field === expected.field);
    assert.ok(problem, `${JSON.stringify(message)}: ${JSON.stringify(item.problems)}`);
    assert.match(problem.message, expected.message);
  }
});

test("Tidemark's validation applies to the mapped event, reported in the client's names", () => {
  const who = refused(checkSegmentCall({ userId: { a: 1 }, event: "x" }, "track"));
  assert.equal(who.code, "validation_failed");
  assert.deepEqual(
    who.details?.map((d) => d.field),
    ["userId"],
  );
  const error = refused(
    checkSegmentCall({ anonymousId: "a", event: "x", timestamp: "yesterday", sentAt: "soon" }, "track"),
  );
  const fields = (error.details ?? []).map((d) => d.field).sort();
  assert.deepEqual(fields, ["sentAt", "timestamp"]);
  assert.ok(
    (error.details ?? []).every((d) => d.index === undefined),
    "a single call's problems carry no index",
  );

  const traits = refused(
    checkSegmentCall({ userId: "u", traits: { n: Number.POSITIVE_INFINITY } }, "identify"),
  );
  assert.equal(traits.details?.[0]?.field, "traits.n");
  const context = refused(
    checkSegmentCall({ userId: "u", event: "x", context: { n: Number.POSITIVE_INFINITY } }, "track"),
  );
  assert.equal(context.details?.[0]?.field, "context.n");
  // A single-call endpoint takes its own type only.
  assert.match(
    refused(checkSegmentCall({ type: "identify", userId: "u" }, "track")).details?.[0]?.message ?? "",
    /takes track/,
  );
});

test("a batch: every message mapped, the batch's context merged under each message's, sentAt for all", () => {
  const check = checkSegmentBatch(
    {
      batch: [
        { type: "track", userId: "u", event: "a", context: { page: "p" } },
        { type: "page", anonymousId: "x" },
      ],
      context: { ip: "1.1.1.1", page: "batch" },
      sentAt: "2026-11-28T12:00:00Z",
      writeKey: "wk_dev_x",
      integrations: {},
    },
    10,
  );
  assert.ok(check.value, JSON.stringify(check.error));
  assert.deepEqual(
    check.value.events.map((e) => e.properties?.$context),
    [
      { ip: "1.1.1.1", page: "p" },
      { ip: "1.1.1.1", page: "batch" },
    ],
  );
  assert.equal(check.value.sent_at, "2026-11-28T12:00:00Z");
});

test("a batch is accepted or refused whole, each problem with its index; over the limit is a 413", () => {
  const error = refused(
    checkSegmentBatch(
      {
        batch: [
          { type: "track", userId: "u", event: "ok" },
          { type: "screen" },
          { type: "nope", userId: "u" },
        ],
      },
      10,
    ),
  );
  assert.deepEqual(
    (error.details ?? []).map((d) => [d.index, d.field]),
    [
      [1, "userId"],
      [2, "type"],
    ],
  );
  assert.equal(refused(checkSegmentBatch({ batch: [] }, 10)).code, "validation_failed");
  assert.equal(refused(checkSegmentBatch({ events: [] }, 10)).details?.[0]?.field, "batch");
  assert.equal(refused(checkSegmentBatch({ batch: [], foo: 1 }, 10)).details?.[0]?.field, "foo");
  const many = { batch: Array.from({ length: 11 }, () => ({ type: "track", userId: "u", event: "e" })) };
  assert.equal(refused(checkSegmentBatch(many, 10)).code, "batch_too_large");
});

test("normalised: the sentAt correction applies, and its problems name the client's fields", () => {
  const check = checkSegmentBatch(
    {
      batch: [{ type: "track", userId: "u", event: "a", timestamp: "2026-11-28T10:00:00Z" }],
      sentAt: "2026-11-28T11:00:00Z",
    },
    10,
  );
  assert.ok(check.value, "maps");
  const { events } = normaliseMapped(check.value, project, now, limits);
  // sent an hour after the event, received at noon: the event happened at 11:00 by our clock.
  assert.equal(events[0]!.timestamp, Date.UTC(2026, 10, 28, 11));

  const far = checkSegmentCall(
    { userId: "u", event: "a", timestamp: "2000-01-01T06:00:00Z", sentAt: "2026-11-29T00:00:00Z" },
    "track",
  );
  assert.ok(far.value, "maps");
  try {
    normaliseMapped(far.value, project, now, limits);
    assert.fail("expected a refusal");
  } catch (error) {
    assert.equal((error as AppError).code, "validation_failed");
    assert.deepEqual(
      (error as AppError).details?.map((d) => d.field),
      ["timestamp"],
    );
  }
});

test("the write keys a body names, to check against the route's", () => {
  assert.deepEqual(segmentWriteKeys({ writeKey: "a", batch: [{ writeKey: "a" }, { writeKey: "b" }, {}] }), [
    "a",
    "b",
  ]);
  assert.deepEqual(segmentWriteKeys({ userId: "u" }), []);
  assert.deepEqual(segmentWriteKeys("x"), []);
});

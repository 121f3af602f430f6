import { AppError, type BodyCheck, type Problem } from "../../core/errors.js";
import { UUID_PATTERN } from "../../core/event-schema.js";
import { uuidV5 } from "../../core/uuid-v5.js";
import { checkMapped, type FieldNames, type MappedEvents, type MappedItem } from "./mapped-events.js";

/**
 * Segment's HTTP Tracking API as Tidemark events
 * (https://segment.com/docs/connections/sources/catalog/libraries/server/http-api/).
 *
 * | call | event name | distinct_id | properties |
 * | --- | --- | --- | --- |
 * | track | `event` | userId, else anonymousId | `properties` |
 * | page | `Page View` | userId, else anonymousId | `properties`, plus `name` and `category` |
 * | screen | `Screen View` | userId, else anonymousId | `properties`, plus `name` and `category` |
 * | identify | `$identify` | userId, else anonymousId | `$set` = traits, `$anon_distinct_id` = anonymousId when both ids are sent |
 * | group | `$groupidentify` | userId, else anonymousId | `$group_type` = "group", `$group_key` = groupId, `$group_set` = traits |
 * | alias | `$create_alias` | userId | `alias` = previousId |
 *
 * These are PostHog's own names (src/api/ingest/posthog.mapping.ts stores PostHog's events as
 * sent), so both doors agree on how identity is stored. Every call keeps its `context` (merged
 * over the batch's) under `$context`. `timestamp` (else `originalTimestamp`) is the time and
 * `sentAt` (the message's, else the batch's) corrects the client's clock. `messageId` is the
 * idempotency key: a UUID is used as it is, any other string becomes the UUID v5 of the message
 * id in SEGMENT_MESSAGE_NAMESPACE, so a retry of the same message is stored once.
 */
export const SEGMENT_TYPES = ["track", "identify", "page", "screen", "group", "alias"] as const;
export type SegmentType = (typeof SEGMENT_TYPES)[number];

/** The namespace of the UUIDs derived from Segment message ids (a random UUID, fixed forever). */
export const SEGMENT_MESSAGE_NAMESPACE = "3c5b2a3e-4f0c-4c36-9d5e-7a51f3b8e0d2";

/** The group type every Segment group call is stored with: Segment's groups have no type. */
export const SEGMENT_GROUP_TYPE = "group";

/**
 * Fields any call may carry. `receivedAt`, `integrations` (routing to Segment destinations),
 * `channel`, `version` and the libraries' `_metadata` are accepted and not stored; `writeKey` is
 * the project's key, checked by the route.
 */
const COMMON_FIELDS = [
  "type",
  "userId",
  "anonymousId",
  "messageId",
  "timestamp",
  "originalTimestamp",
  "sentAt",
  "receivedAt",
  "context",
  "integrations",
  "channel",
  "version",
  "_metadata",
  "writeKey",
];
const OWN_FIELDS: Record<SegmentType, readonly string[]> = {
  track: ["event", "properties"],
  page: ["name", "category", "properties"],
  screen: ["name", "category", "properties"],
  identify: ["traits"],
  group: ["groupId", "traits"],
  alias: ["previousId"],
};
/** Every field a call of each type may carry. */
const ALLOWED = Object.fromEntries(
  SEGMENT_TYPES.map((type) => [type, new Set([...COMMON_FIELDS, ...OWN_FIELDS[type]])]),
) as unknown as Record<SegmentType, ReadonlySet<string>>;

/** How each call's Tidemark fields read in Segment's terms (see FieldNames), by call type. */
const CALL_NAMES: Record<SegmentType, Record<string, string>> = {
  track: {},
  page: { "properties.name": "name", "properties.category": "category" },
  screen: { "properties.name": "name", "properties.category": "category" },
  identify: { "properties.$set": "traits", "properties.$anon_distinct_id": "anonymousId" },
  group: { "properties.$group_key": "groupId", "properties.$group_set": "traits" },
  alias: { "properties.alias": "previousId" },
};
const namesFor = (call: SegmentType, distinctField: string, timestampField: string): FieldNames =>
  Object.freeze({
    event: "event",
    "sent_at (batch)": "sentAt (batch)",
    sent_at: "sentAt",
    uuid: "messageId",
    "properties.$context": "context",
    distinct_id: distinctField,
    timestamp: timestampField,
    ...CALL_NAMES[call],
  });
/**
 * The names of a message's fields, made once per combination: by call, then whether the
 * distinct id is the userId (0) or the anonymousId (1), then whether the time is `timestamp` (0)
 * or `originalTimestamp` (1).
 */
const NAMES = Object.fromEntries(
  SEGMENT_TYPES.map((call) => [
    call,
    ["userId", "anonymousId"].map((d) => ["timestamp", "originalTimestamp"].map((t) => namesFor(call, d, t))),
  ]),
) as unknown as Record<SegmentType, FieldNames[][]>;

/** Fields of a batch besides its messages; `context` applies to every message of the batch. */
const BATCH_FIELDS = ["batch", "sentAt", "context", "integrations", "writeKey", "_metadata"];

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value);

/** A field that must be a JSON object when present: the object, or undefined and a problem. */
function objectOf(
  message: Record<string, unknown>,
  field: string,
  problems: Problem[],
): Record<string, unknown> | undefined {
  const value = message[field];
  if (value === undefined || value === null) return undefined;
  if (isObject(value)) return value;
  problems.push({ field, message: "must be a JSON object" });
  return undefined;
}

/** An id as Segment sends one: a non-empty string or a number; null and "" count as absent. */
const present = (value: unknown): boolean => value !== undefined && value !== null && value !== "";

const UUID = new RegExp(UUID_PATTERN);

/** The idempotency uuid of a message id (see the module's comment). */
export function segmentMessageUuid(messageId: string): string {
  return UUID.test(messageId) ? messageId.toLowerCase() : uuidV5(messageId, SEGMENT_MESSAGE_NAMESPACE);
}

/**
 * One Segment message as the Tidemark event it maps to, or every reason it maps to none.
 * `expected` is the type of a single-call endpoint (`/v1/track`), where `type` may be left out.
 */
export function mapSegmentMessage(
  message: unknown,
  options: { expected?: SegmentType; batchContext?: Record<string, unknown> } = {},
): MappedItem {
  if (!isObject(message)) return { problems: [{ field: "(message)", message: "must be a JSON object" }] };
  const problems: Problem[] = [];
  const type = message.type ?? options.expected;
  if (type === undefined) {
    return { problems: [{ field: "type", message: `is required: one of ${SEGMENT_TYPES.join(", ")}` }] };
  }
  if (typeof type !== "string" || !(SEGMENT_TYPES as readonly string[]).includes(type)) {
    return {
      problems: [
        {
          field: "type",
          message: `${JSON.stringify(type).slice(0, 50)} is not a Segment call Tidemark takes: one of ${SEGMENT_TYPES.join(", ")}`,
        },
      ],
    };
  }
  const call = type as SegmentType;
  if (options.expected && call !== options.expected) {
    return {
      problems: [
        { field: "type", message: `is "${call}", but this endpoint takes ${options.expected} calls` },
      ],
    };
  }
  const allowed = ALLOWED[call];
  for (const key in message) {
    if (!allowed.has(key)) problems.push({ field: key, message: `unknown field for a ${call} call` });
  }

  // Who: userId, else anonymousId (alias names the user it links to, so userId is required).
  let distinctField = "userId";
  let distinctId: unknown;
  if (call === "alias") {
    if (!present(message.userId))
      problems.push({ field: "userId", message: "is required for an alias call" });
    if (!present(message.previousId))
      problems.push({ field: "previousId", message: "is required for an alias call" });
    distinctId = message.userId;
  } else if (present(message.userId)) {
    distinctId = message.userId;
  } else if (present(message.anonymousId)) {
    distinctId = message.anonymousId;
    distinctField = "anonymousId";
  } else {
    problems.push({ field: "userId", message: "userId or anonymousId is required" });
  }

  // What: the event name and its properties.
  let event: unknown;
  let properties: Record<string, unknown> = {};
  const objectField = (field: "properties" | "traits" | "context") => objectOf(message, field, problems);
  switch (call) {
    case "track":
      event = message.event;
      if (!present(event)) problems.push({ field: "event", message: "is required for a track call" });
      properties = { ...objectField("properties") };
      break;
    case "page":
    case "screen":
      event = call === "page" ? "Page View" : "Screen View";
      properties = { ...objectField("properties") };
      // The call's own fields say what was viewed, over properties of the same name.
      if (message.name !== undefined) properties.name = message.name;
      if (message.category !== undefined) properties.category = message.category;
      break;
    case "identify": {
      event = "$identify";
      const traits = objectField("traits");
      if (traits !== undefined) properties.$set = traits;
      if (present(message.userId) && present(message.anonymousId))
        properties.$anon_distinct_id = message.anonymousId;
      break;
    }
    case "group": {
      event = "$groupidentify";
      if (!present(message.groupId))
        problems.push({ field: "groupId", message: "is required for a group call" });
      properties = {
        $group_type: SEGMENT_GROUP_TYPE,
        $group_key: typeof message.groupId === "number" ? String(message.groupId) : message.groupId,
        $group_set: objectField("traits") ?? {},
      };
      break;
    }
    case "alias":
      event = "$create_alias";
      properties = {
        alias: typeof message.previousId === "number" ? String(message.previousId) : message.previousId,
      };
      break;
  }
  const own = objectField("context");
  const context =
    options.batchContext && own ? { ...options.batchContext, ...own } : (own ?? options.batchContext);
  if (context !== undefined && Object.keys(context).length > 0) properties.$context = context;

  // When: timestamp, else originalTimestamp; sentAt corrects the clock.
  const timestamp = message.timestamp ?? message.originalTimestamp;
  const timestampField = message.timestamp === undefined ? "originalTimestamp" : "timestamp";

  // Idempotency: messageId.
  let uuid: string | undefined;
  if (message.messageId !== undefined && message.messageId !== null) {
    if (typeof message.messageId === "string" && message.messageId.length > 0)
      uuid = segmentMessageUuid(message.messageId);
    else problems.push({ field: "messageId", message: "must be a non-empty string" });
  }
  if (problems.length > 0) return { problems };

  const mapped: Record<string, unknown> = { event, distinct_id: distinctId, properties };
  if (timestamp !== undefined && timestamp !== null) mapped.timestamp = timestamp;
  if (message.sentAt !== undefined && message.sentAt !== null) mapped.sent_at = message.sentAt;
  if (uuid !== undefined) mapped.uuid = uuid;
  return {
    event: mapped,
    names: NAMES[call][distinctField === "userId" ? 0 : 1]![timestampField === "timestamp" ? 0 : 1]!,
  };
}

/** A single call's body (`POST /v1/track` and the like), checked as Tidemark checks an event. */
export function checkSegmentCall(body: unknown, type: SegmentType): BodyCheck<MappedEvents> {
  return checkMapped([mapSegmentMessage(body, { expected: type })], {
    maxBatchEvents: 1,
    single: true,
    what: "message",
  });
}

/** A `POST /v1/batch` body, checked whole: one unmappable or invalid message refuses the batch. */
export function checkSegmentBatch(body: unknown, maxBatchEvents: number): BodyCheck<MappedEvents> {
  const envelope = (details: Problem[]): BodyCheck<MappedEvents> => ({
    error: new AppError("validation_failed", { message: 'The body must be {"batch": [...]}', details }),
  });
  if (!isObject(body) || !Array.isArray(body.batch)) {
    return envelope([{ field: "batch", message: 'is required: the body is {"batch": [...]}' }]);
  }
  const unknown = Object.keys(body).filter((key) => !BATCH_FIELDS.includes(key));
  if (unknown.length > 0)
    return envelope(unknown.map((field) => ({ field, message: "unknown field of a batch" })));
  if (body.context !== undefined && body.context !== null && !isObject(body.context)) {
    return envelope([{ field: "context", message: "must be a JSON object" }]);
  }
  const batchContext = isObject(body.context) ? body.context : undefined;
  const sentAt = body.sentAt === null ? undefined : body.sentAt;
  return checkMapped(
    body.batch.map((message) => mapSegmentMessage(message, { batchContext })),
    { sentAt, maxBatchEvents, single: false, what: "batch" },
  );
}

/** Every write key a Segment body names (the batch's and its messages'), to check against the route's. */
export function segmentWriteKeys(body: unknown): string[] {
  if (!isObject(body)) return [];
  const keys = new Set<string>();
  if (typeof body.writeKey === "string") keys.add(body.writeKey);
  if (Array.isArray(body.batch))
    for (const message of body.batch)
      if (isObject(message) && typeof message.writeKey === "string") keys.add(message.writeKey);
  return [...keys];
}

import { AppError, type BodyCheck, type Problem } from "../../core/errors.js";
import { EARLIEST_TIMESTAMP_MS } from "../../core/timestamps.js";
import { checkMapped, type FieldNames, type MappedEvents, type MappedItem } from "./mapped-events.js";

/**
 * PostHog's capture API as Tidemark events (https://posthog.com/docs/api/capture). PostHog's
 * events are Tidemark's own shape, so they are stored as sent: `event`, `distinct_id` (or
 * `properties.distinct_id`, where posthog-js puts it), `properties`, `timestamp`, `uuid`.
 * `$identify`, `$create_alias`, `$set` and `$groupidentify` keep their properties
 * (`$anon_distinct_id`, `alias`, `$set`, `$set_once`, `$group_*`): the convention
 * src/api/ingest/segment.mapping.ts maps Segment's calls to. A top-level `$set` or `$set_once`
 * (posthog-js sends them there) is merged over the one in properties, as PostHog does.
 *
 * The project's write key arrives as `api_key` or `token`, of the body or of the events
 * (`properties.token` in posthog-js); it selects the project and is not stored. `offset` (older
 * SDKs: the event happened that many milliseconds before the request) takes the place of
 * `timestamp`. `type`, `library` and `library_version` are accepted and not stored (the SDKs copy
 * the library into `$lib` themselves).
 */
const EVENT_FIELDS = new Set([
  "event",
  "distinct_id",
  "properties",
  "timestamp",
  "offset",
  "uuid",
  "$set",
  "$set_once",
  "api_key",
  "token",
  "sent_at",
  "type",
  "library",
  "library_version",
]);
/** Fields of a batch besides its events; `historical_migration` (a PostHog routing hint) is not stored. */
const BATCH_FIELDS = ["batch", "api_key", "token", "sent_at", "historical_migration"];

/**
 * How an event's Tidemark fields read in its own terms (see FieldNames): whether its distinct id
 * came from its properties (1), its time from `offset` (2), a top-level `$set`/`$set_once` (4).
 */
const NAMES: readonly FieldNames[] = Array.from({ length: 8 }, (_, i) =>
  Object.freeze({
    ...(i & 1 ? { distinct_id: "properties.distinct_id" } : {}),
    ...(i & 2 ? { timestamp: "offset", sent_at: "offset" } : {}),
    ...(i & 4 ? { "properties.$set": "$set", "properties.$set_once": "$set_once" } : {}),
  }),
);

/** Events Tidemark refuses, with the reason. */
const REFUSED_EVENTS: Record<string, string> = {
  $snapshot:
    "is a session recording, which Tidemark does not store; turn recordings off (disable_session_recording: true)",
  $snapshot_items:
    "is a session recording, which Tidemark does not store; turn recordings off (disable_session_recording: true)",
};

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value);

/** A PostHog body's events and envelope, whichever of its shapes it has. */
function shape(
  body: unknown,
): { events: unknown[]; envelope: Record<string, unknown>; single: boolean } | undefined {
  if (Array.isArray(body)) return { events: body, envelope: {}, single: false };
  if (!isObject(body)) return undefined;
  if (Array.isArray(body.batch)) return { events: body.batch, envelope: body, single: false };
  if ("event" in body) return { events: [body], envelope: {}, single: true };
  return undefined;
}

const SHAPES = 'The body must be an event, an array of events, or {"batch": [...]}';

/**
 * The project key a PostHog body names: `api_key` or `token` of the body, else of its events
 * (`properties.token` included). Every key it names must be the same one: a body naming two
 * projects is refused (400), and one naming none is a 401 (undefined here).
 */
export function posthogToken(body: unknown): string | undefined {
  const found = new Set<string>();
  const add = (value: unknown) => {
    if (typeof value === "string" && value.length > 0) found.add(value);
  };
  const shaped = shape(body);
  if (!shaped) {
    if (isObject(body)) {
      add(body.api_key);
      add(body.token);
    }
  } else {
    add(shaped.envelope.api_key);
    add(shaped.envelope.token);
    for (const event of shaped.events) {
      if (!isObject(event)) continue;
      add(event.api_key);
      add(event.token);
      if (isObject(event.properties)) add(event.properties.token);
    }
  }
  if (found.size > 1) {
    throw new AppError("validation_failed", {
      message: "The body names more than one project key (api_key, token)",
      details: [{ field: "api_key", message: "differs between the body and its events" }],
    });
  }
  return found.values().next().value;
}

/** One PostHog event as the Tidemark event it is stored as, or every reason it cannot be. */
export function mapPosthogEvent(raw: unknown): MappedItem {
  if (!isObject(raw)) return { problems: [{ field: "(event)", message: "must be a JSON object" }] };
  const problems: Problem[] = [];
  for (const key in raw) {
    if (!EVENT_FIELDS.has(key)) problems.push({ field: key, message: "unknown field of a PostHog event" });
  }
  if (typeof raw.event === "string" && Object.hasOwn(REFUSED_EVENTS, raw.event))
    problems.push({ field: "event", message: REFUSED_EVENTS[raw.event]! });
  let properties: Record<string, unknown> = {};
  if (raw.properties !== undefined && raw.properties !== null) {
    if (isObject(raw.properties)) properties = raw.properties;
    else problems.push({ field: "properties", message: "must be a JSON object" });
  }
  // The key selects the project; it is never stored beside the events. The properties are
  // copied only when something in them changes.
  if ("token" in properties) {
    const { token: _key, ...rest } = properties;
    properties = rest;
  }
  let merged = false;
  for (const field of ["$set", "$set_once"] as const) {
    const top = raw[field];
    if (top === undefined || top === null) continue;
    if (!isObject(top)) {
      problems.push({ field, message: "must be a JSON object" });
      continue;
    }
    const inner = properties[field];
    properties = { ...properties, [field]: isObject(inner) ? { ...inner, ...top } : top };
    merged = true;
  }

  let distinctId = raw.distinct_id;
  let inProperties = false;
  if (distinctId === undefined || distinctId === null) {
    distinctId = properties.distinct_id;
    inProperties = true;
  }
  if (distinctId === undefined || distinctId === null || distinctId === "") {
    problems.push({
      field: "distinct_id",
      message: "is required (at the top of the event or in its properties)",
    });
  }

  const mapped: Record<string, unknown> = { event: raw.event, distinct_id: distinctId, properties };
  let offset = false;
  if (raw.offset !== undefined && raw.offset !== null) {
    if (typeof raw.offset !== "number" || !Number.isFinite(raw.offset) || raw.offset < 0) {
      problems.push({ field: "offset", message: "must be a number of milliseconds, 0 or more" });
    } else {
      // The event happened `offset` ms before receipt. As a clock correction: a client time T sent
      // at T + offset lands at receipt - offset, whatever T is; T is the earliest accepted time,
      // so any offset too large to be real is a 400 on `offset`, as a time before 2000 would be.
      mapped.timestamp = EARLIEST_TIMESTAMP_MS;
      mapped.sent_at = EARLIEST_TIMESTAMP_MS + Math.round(raw.offset);
      offset = true;
    }
  } else {
    if (raw.timestamp !== undefined && raw.timestamp !== null) mapped.timestamp = raw.timestamp;
    if (raw.sent_at !== undefined && raw.sent_at !== null) mapped.sent_at = raw.sent_at;
  }
  if (raw.uuid !== undefined && raw.uuid !== null) mapped.uuid = raw.uuid;
  if (problems.length > 0) return { problems };
  return { event: mapped, names: NAMES[(inProperties ? 1 : 0) + (offset ? 2 : 0) + (merged ? 4 : 0)]! };
}

/**
 * A PostHog capture body (an event, an array of events, or `{"batch": [...]}`, on any of the
 * capture paths, as PostHog takes them), checked whole: one unmappable or invalid event refuses
 * the body, every problem named with its index.
 */
export function checkPosthogBody(body: unknown, maxBatchEvents: number): BodyCheck<MappedEvents> {
  const shaped = shape(body);
  if (!shaped) {
    return {
      error: new AppError("validation_failed", {
        message: SHAPES,
        details: [{ field: "(body)", message: SHAPES }],
      }),
    };
  }
  const unknown = Object.keys(shaped.envelope).filter((key) => !BATCH_FIELDS.includes(key));
  if (unknown.length > 0) {
    return {
      error: new AppError("validation_failed", {
        message: "The batch is not valid",
        details: unknown.map((field) => ({ field, message: "unknown field of a batch" })),
      }),
    };
  }
  const sentAt = shaped.envelope.sent_at === null ? undefined : shaped.envelope.sent_at;
  return checkMapped(shaped.events.map(mapPosthogEvent), {
    sentAt,
    maxBatchEvents,
    single: shaped.single,
    what: "batch",
  });
}

/** How many events a PostHog body holds, as far as it can be read (for the ledger of a refusal). */
export function posthogSize(body: unknown): number {
  return shape(body)?.events.length ?? 1;
}

import { randomUUID } from "node:crypto";
import { TypeCompiler } from "@sinclair/typebox/compiler";
import { AppError, type BodyCheck, type Problem } from "./errors.js";
import type { StoredEvent } from "./event.js";
import {
  BatchEnvelopeSchema,
  type IncomingBatch,
  type IncomingEvent,
  IncomingEventSchema,
} from "./event-schema.js";
import { parseTimestamp, resolveEventTime } from "./timestamps.js";

const eventChecker = TypeCompiler.Compile(IncomingEventSchema);

/**
 * Text every store can hold. JSON.stringify writes an unpaired UTF-16 surrogate as a `\udXXX`
 * escape, and only those (paired ones are written as characters); stores refuse such text, as
 * Postgres refuses NUL (`\u0000`). Both become U+FFFD, as a browser decoding them would, so every
 * pipeline stores and answers the same. An escape preceded by an odd number of backslashes is
 * literal text, not an escape, and is left alone.
 */
const UNSTORABLE_ESCAPE = /(?<!\\)((?:\\\\)*)\\u(?:d[89a-f][0-9a-f]{2}|0000)/gi;
const storableJson = (json: string) =>
  /\\u(?:d[89a-f]|0000)/i.test(json) ? json.replace(UNSTORABLE_ESCAPE, "$1\\ufffd") : json;
const storable = (text: string) => {
  const wellFormed = text.isWellFormed() ? text : text.toWellFormed();
  return wellFormed.includes("\0") ? wellFormed.replaceAll("\0", "\ufffd") : wellFormed;
};
const envelopeChecker = TypeCompiler.Compile(BatchEnvelopeSchema);

/**
 * How deeply `properties` may nest (the properties object itself is level 1). Analytics payloads
 * are rarely more than 5 levels deep; 32 leaves room for any real one, while every step that
 * walks the value recursively (JSON.stringify here, which overflows the stack at about 4,000
 * levels; Postgres's JSON parser, bounded by max_stack_depth; the dashboard) handles it with a
 * wide margin. The check itself walks with an explicit stack, so no depth can overflow it.
 */
export const MAX_PROPERTY_DEPTH = 32;

/** A value inside `properties`, with the way back to its parent (the path is built only for a problem). */
interface Node {
  value: unknown;
  depth: number;
  parent?: Node;
  key?: string;
}

const pathOf = (node: Node): string => {
  const keys: string[] = [];
  for (let n: Node | undefined = node; n?.key !== undefined; n = n.parent) keys.push(n.key);
  return ["/properties", ...keys.reverse()].join("/");
};

/** A number `properties` cannot hold as sent: beyond a double, or an integer the parse rounded. */
const badNumber = (value: number, roundedIntegers: ReadonlySet<number> | undefined) =>
  !Number.isFinite(value) || (roundedIntegers?.has(value) === true && !Number.isSafeInteger(value));

/**
 * True when `properties` holds nothing propertiesProblem would refuse. The walk every event takes:
 * plain values are checked where they sit and only nested objects and arrays are stacked, with no
 * path kept (a flat object of five properties costs no allocation). propertiesProblem walks again
 * to say where, only for a body that is refused.
 */
function propertiesFine(properties: object, roundedIntegers: ReadonlySet<number> | undefined): boolean {
  const values: object[] = [properties];
  const depths: number[] = [1];
  for (let value = values.pop(); value !== undefined; value = values.pop()) {
    const depth = depths.pop() ?? 1;
    if (depth > MAX_PROPERTY_DEPTH) return false;
    const children: readonly unknown[] = Array.isArray(value) ? value : Object.values(value);
    for (const child of children) {
      if (typeof child === "number") {
        if (badNumber(child, roundedIntegers)) return false;
      } else if (typeof child === "object" && child !== null) {
        values.push(child);
        depths.push(depth + 1);
      }
    }
  }
  return true;
}

/** Where and why `properties` cannot be stored as sent, or undefined. */
function propertiesProblem(
  properties: object,
  roundedIntegers: ReadonlySet<number> | undefined,
): { path: string; message: string } | undefined {
  if (propertiesFine(properties, roundedIntegers)) return undefined;
  const stack: Node[] = [{ value: properties, depth: 1 }];
  for (let node = stack.pop(); node !== undefined; node = stack.pop()) {
    const { value, depth } = node;
    if (typeof value === "number") {
      if (!Number.isFinite(value)) {
        return {
          path: pathOf(node),
          message: "is a number beyond the range of a double; send it as a string",
        };
      }
      if (roundedIntegers?.has(value) && !Number.isSafeInteger(value)) {
        return {
          path: pathOf(node),
          message: `is an integer with more digits than a JSON number keeps (it would be stored as ${value}); send it as a string`,
        };
      }
      continue;
    }
    if (value === null || typeof value !== "object") continue;
    if (depth > MAX_PROPERTY_DEPTH) {
      return { path: "/properties", message: `nests deeper than ${MAX_PROPERTY_DEPTH} levels` };
    }
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) {
        stack.push({ value: value[i], depth: depth + 1, parent: node, key: String(i) });
      }
    } else {
      for (const [key, child] of Object.entries(value)) {
        stack.push({ value: child, depth: depth + 1, parent: node, key });
      }
    }
  }
  return undefined;
}

export interface ValidationLimits {
  maxBatchEvents: number;
  futureToleranceMs: number;
  /**
   * Integers of the request's JSON text that the parse rounded (core/json-numbers.ts): a property
   * holding one is refused rather than stored changed.
   */
  roundedIntegers?: ReadonlySet<number>;
}

export interface ValidatedEvents {
  events: StoredEvent[];
  /** Events whose time was clamped, by uuid: reported back as warnings. */
  warnings: { index: number; field: string; message: string }[];
}

/** TypeBox paths look like `/events/3/distinct_id`; clients want an index and a field. */
function toProblem(path: string, message: string, index: number | undefined): Problem {
  const field = path.replace(/^\//, "").replaceAll("/", ".") || "(body)";
  return index === undefined ? { field, message } : { index, field, message };
}

function schemaProblems(value: unknown, index: number | undefined): Problem[] {
  const problems: Problem[] = [];
  const seenPaths = new Set<string>();
  for (const error of eventChecker.Errors(value)) {
    // A union reports every branch; one message per field is what a person wants to read.
    if (seenPaths.has(error.path)) continue;
    seenPaths.add(error.path);
    let message = error.message;
    if (error.path === "" && error.message.startsWith("Unexpected property")) message = error.message;
    problems.push(toProblem(error.path, message, index));
    if (problems.length >= 20) break;
  }
  if (value !== null && typeof value === "object" && !Array.isArray(value)) {
    for (const key of Object.keys(value)) {
      if (!Object.hasOwn(IncomingEventSchema.properties, key) && !seenPaths.has(`/${key}`)) {
        problems.push(toProblem(`/${key}`, "unknown field", index));
      }
    }
  }
  return problems.length > 0 ? problems : [toProblem("", "is not a valid event", index)];
}

/**
 * Everything one event's body alone can get wrong, beyond its schema: times that cannot be read,
 * a distinct_id a JSON number cannot carry exactly, properties nested too deeply.
 */
function contentProblems(raw: IncomingEvent, index: number | undefined, batchSentAt: unknown): Problem[] {
  const problems: Problem[] = [];
  if (raw.timestamp !== undefined) {
    const parsed = parseTimestamp(raw.timestamp);
    if (!parsed.ok) problems.push(toProblem("/timestamp", parsed.message, index));
  }
  const sentAt = raw.sent_at ?? batchSentAt;
  if (sentAt !== undefined) {
    const parsed = parseTimestamp(sentAt);
    if (!parsed.ok)
      problems.push(
        toProblem(raw.sent_at === undefined ? "/sent_at (batch)" : "/sent_at", parsed.message, index),
      );
  }
  if (typeof raw.distinct_id === "number" && !Number.isSafeInteger(raw.distinct_id)) {
    // A JSON number beyond 2^53 has already lost digits when it reaches us: two users would
    // become one. Their exact text survives only as a string.
    problems.push(
      toProblem(
        "/distinct_id",
        "is an integer outside ±(2^53 - 1), which a JSON number cannot carry exactly; send it as a string",
        index,
      ),
    );
  }
  if (raw.properties !== undefined) {
    const problem = propertiesProblem(raw.properties, undefined);
    if (problem) problems.push(toProblem(problem.path, problem.message, index));
  }
  return problems;
}

/**
 * One event, checked: typed when both its shape and its content are right, else its problems
 * (with `index` when it is part of a batch, and `batchSentAt` the batch's own `sent_at`). The
 * doors that speak other wire formats check the events they map to with it, so every door
 * applies the same rules (src/api/ingest/mapped-events.ts).
 */
export function checkEvent(
  raw: unknown,
  index: number | undefined,
  batchSentAt: unknown,
): { event: IncomingEvent; problems?: undefined } | { event?: undefined; problems: Problem[] } {
  if (!eventChecker.Check(raw)) return { problems: schemaProblems(raw, index) };
  const problems = contentProblems(raw, index, batchSentAt);
  return problems.length === 0 ? { event: raw } : { problems };
}

/**
 * Checks one event body on its own (no project, no clock): the typed event when its shape is
 * right and its times can be read, else a 400 listing every problem. The ingest route uses it as
 * its body validator; `normaliseEvent` then takes the typed event.
 */
export function checkEventBody(body: unknown): BodyCheck<IncomingEvent> {
  const checked = checkEvent(body, undefined, undefined);
  if (checked.event) return { value: checked.event };
  return {
    error: new AppError("validation_failed", {
      message: "The event is not valid",
      details: checked.problems,
    }),
  };
}

/**
 * Checks a batch body on its own, as a whole: the typed batch when it holds 1..maxBatchEvents
 * events, each as checkEventBody wants it; else a 400 listing every problem of every event with
 * its index, or a 413 when it holds too many events.
 */
export function checkBatchBody(body: unknown, maxBatchEvents: number): BodyCheck<IncomingBatch> {
  if (!envelopeChecker.Check(body)) {
    const problems: Problem[] = [];
    for (const error of envelopeChecker.Errors(body)) {
      problems.push(toProblem(error.path, error.message, undefined));
      if (problems.length >= 20) break;
    }
    return {
      error: new AppError("validation_failed", {
        message: 'The body must be {"events": [...]}',
        details: problems,
      }),
    };
  }
  const rawEvents = body.events;
  if (rawEvents.length === 0) {
    return {
      error: new AppError("validation_failed", {
        message: "The batch is empty",
        details: [{ field: "events", message: "is empty" }],
      }),
    };
  }
  if (rawEvents.length > maxBatchEvents) {
    return {
      error: new AppError("batch_too_large", {
        message: `The batch has ${rawEvents.length} events; at most ${maxBatchEvents} are allowed`,
      }),
    };
  }
  const problems: Problem[] = [];
  const events: IncomingEvent[] = [];
  rawEvents.forEach((raw, index) => {
    const checked = checkEvent(raw, index, body.sent_at);
    if (checked.event) events.push(checked.event);
    else problems.push(...checked.problems);
  });
  if (problems.length === 0) {
    return { value: body.sent_at === undefined ? { events } : { events, sent_at: body.sent_at } };
  }
  return {
    error: new AppError("validation_failed", {
      message: `${problems.length} problem(s) in the batch`,
      details: problems.slice(0, 1000),
    }),
  };
}

/** A timestamp that checkEventBody or checkBatchBody has already read successfully. */
function checkedTime(value: string | number | undefined): number | undefined {
  if (value === undefined) return undefined;
  const parsed = parseTimestamp(value);
  if (!parsed.ok) throw new AppError("internal", { message: "an unchecked timestamp reached normalise" });
  return parsed.ms;
}

/**
 * One checked event as stored: its time corrected for clock skew against the receipt time and
 * clamped (a warning), or a problem when the correction moves it out of range, or when a property
 * holds an integer the JSON parse rounded (known only from the request's text, so checked here).
 */
function normalise(
  raw: IncomingEvent,
  index: number | undefined,
  projectId: string,
  receivedAt: number,
  batchSentAt: string | number | undefined,
  limits: ValidationLimits,
  problems: Problem[],
  warnings: ValidatedEvents["warnings"],
): StoredEvent | undefined {
  if (raw.properties !== undefined && limits.roundedIntegers && limits.roundedIntegers.size > 0) {
    const problem = propertiesProblem(raw.properties, limits.roundedIntegers);
    if (problem) {
      problems.push(toProblem(problem.path, problem.message, index));
      return undefined;
    }
  }
  const clientMs = checkedTime(raw.timestamp);
  const sentAtMs = checkedTime(raw.sent_at ?? batchSentAt);
  const time = resolveEventTime(clientMs, sentAtMs, receivedAt, limits.futureToleranceMs);
  if (!time.ok) {
    problems.push(toProblem("/timestamp", time.message, index));
    return undefined;
  }
  if (time.clamped) {
    warnings.push({
      index: index ?? 0,
      field: "timestamp",
      message: "more than the tolerance in the future: stored as the time of receipt",
    });
  }
  return {
    projectId,
    uuid: raw.uuid === undefined ? randomUUID() : raw.uuid.toLowerCase(),
    event: storable(raw.event),
    distinctId: storable(String(raw.distinct_id)),
    timestamp: time.ms,
    properties: raw.properties === undefined ? "{}" : storableJson(JSON.stringify(raw.properties)),
    receivedAt,
  };
}

/** A checked event (checkEventBody) as stored; throws a 400 when its corrected time is out of range. */
export function normaliseEvent(
  body: IncomingEvent,
  projectId: string,
  receivedAt: number,
  limits: ValidationLimits,
): ValidatedEvents {
  const problems: Problem[] = [];
  const warnings: ValidatedEvents["warnings"] = [];
  const event = normalise(body, undefined, projectId, receivedAt, undefined, limits, problems, warnings);
  if (!event)
    throw new AppError("validation_failed", { message: "The event is not valid", details: problems });
  return { events: [event], warnings };
}

/**
 * A checked batch (checkBatchBody) as stored, whole or not at all: throws a 400 listing every
 * event whose corrected time is out of range.
 */
export function normaliseBatch(
  body: IncomingBatch,
  projectId: string,
  receivedAt: number,
  limits: ValidationLimits,
): ValidatedEvents {
  const problems: Problem[] = [];
  const warnings: ValidatedEvents["warnings"] = [];
  const events: StoredEvent[] = [];
  body.events.forEach((raw, index) => {
    const event = normalise(raw, index, projectId, receivedAt, body.sent_at, limits, problems, warnings);
    if (event) events.push(event);
  });
  if (problems.length > 0) {
    throw new AppError("validation_failed", {
      message: `${problems.length} problem(s) in the batch`,
      details: problems.slice(0, 1000),
    });
  }
  return { events, warnings };
}

/** Checks and normalises one event body in one step; throws a 400 listing every problem. */
export function validateEvent(
  body: unknown,
  projectId: string,
  receivedAt: number,
  limits: ValidationLimits,
): ValidatedEvents {
  const checked = checkEventBody(body);
  if (checked.error) throw checked.error;
  return normaliseEvent(checked.value, projectId, receivedAt, limits);
}

/** Checks and normalises a batch in one step: one bad event rejects the batch; every problem is listed. */
export function validateBatch(
  body: unknown,
  projectId: string,
  receivedAt: number,
  limits: ValidationLimits,
): ValidatedEvents {
  const checked = checkBatchBody(body, limits.maxBatchEvents);
  if (checked.error) throw checked.error;
  return normaliseBatch(checked.value, projectId, receivedAt, limits);
}

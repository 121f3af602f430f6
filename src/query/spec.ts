import { type Static, type TSchema, Type } from "@sinclair/typebox";
import { TypeCompiler } from "@sinclair/typebox/compiler";
import { AppError, type BodyCheck, type Problem } from "../core/errors.js";
import { EARLIEST_TIMESTAMP_MS, LATEST_TIMESTAMP_MS, parseTimestamp } from "../core/timestamps.js";

// As ingest reads event times: ISO 8601 (UTC when no offset), or epoch milliseconds as a number or
// a digit string.
const IsoTime = Type.Union([Type.String({ maxLength: 64 }), Type.Number()], {
  description: "ISO 8601 (UTC when no offset) or epoch milliseconds",
});
const PropertyName = Type.String({ minLength: 1, maxLength: 200 });
const EventName = Type.String({ minLength: 1, maxLength: 200 });

const propertyType = (description: string) =>
  Type.Optional(Type.Union([Type.Literal("event"), Type.Literal("person")], { description }));

export const FilterSchema = Type.Object(
  {
    property: PropertyName,
    op: Type.Union(["eq", "neq", "contains", "gt", "lt", "is_set"].map((op) => Type.Literal(op))),
    value: Type.Optional(Type.Union([Type.String({ maxLength: 1000 }), Type.Number(), Type.Boolean()])),
    type: propertyType(
      "`event` (default): a property of the event. `person`: a property of the event's person, its current value from `$set` and `$set_once` (see Identity in the README)",
    ),
  },
  { additionalProperties: false },
);
export type Filter = Static<typeof FilterSchema>;
const Filters = Type.Optional(Type.Array(FilterSchema, { maxItems: 20 }));
const Limit = (max: number) => Type.Optional(Type.Integer({ minimum: 1, maximum: max }));
const Interval = Type.Union([Type.Literal("hour"), Type.Literal("day"), Type.Literal("week")]);

/** Who a user is when counting and following users; see IDENTITIES. */
const Identity = Type.Optional(
  Type.Union([Type.Literal("person"), Type.Literal("distinct_id")], {
    description:
      "`person` (default): distinct ids linked by `$identify` or `$create_alias` count as one user, and funnels and retention follow that person across them. `distinct_id`: every distinct id is a user of its own",
  }),
);

export const TrendsSpecSchema = Type.Object(
  {
    kind: Type.Literal("trends"),
    event: Type.Optional(EventName),
    math: Type.Optional(Type.Union([Type.Literal("total"), Type.Literal("unique_users")])),
    interval: Type.Optional(Interval),
    from: IsoTime,
    to: IsoTime,
    filters: Filters,
    breakdown: Type.Optional(PropertyName),
    breakdown_type: propertyType(
      "`event` (default): `breakdown` names an event property. `person`: a person property",
    ),
    limit: Limit(100),
    identity: Identity,
  },
  { additionalProperties: false },
);
export const FunnelSpecSchema = Type.Object(
  {
    kind: Type.Literal("funnel"),
    steps: Type.Array(EventName, { minItems: 2, maxItems: 10 }),
    window_seconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 90 * 86400 })),
    from: IsoTime,
    to: IsoTime,
    filters: Filters,
    identity: Identity,
  },
  { additionalProperties: false },
);
export const RetentionSpecSchema = Type.Object(
  {
    kind: Type.Literal("retention"),
    start_event: EventName,
    return_event: EventName,
    interval: Type.Optional(Type.Union([Type.Literal("day"), Type.Literal("week")])),
    periods: Type.Optional(Type.Integer({ minimum: 1, maximum: 90 })),
    from: IsoTime,
    to: IsoTime,
    filters: Filters,
    identity: Identity,
  },
  { additionalProperties: false },
);
export const EventsSpecSchema = Type.Object(
  {
    kind: Type.Literal("events"),
    event: Type.Optional(EventName),
    distinct_id: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    from: Type.Optional(IsoTime),
    to: Type.Optional(IsoTime),
    filters: Filters,
    limit: Limit(1000),
    cursor: Type.Optional(Type.String({ maxLength: 500 })),
  },
  { additionalProperties: false },
);
export const TopEventsSpecSchema = Type.Object(
  { kind: Type.Literal("top_events"), from: IsoTime, to: IsoTime, filters: Filters, limit: Limit(1000) },
  { additionalProperties: false },
);
export const TopValuesSpecSchema = Type.Object(
  {
    kind: Type.Literal("top_values"),
    property: PropertyName,
    event: Type.Optional(EventName),
    from: IsoTime,
    to: IsoTime,
    filters: Filters,
    limit: Limit(1000),
  },
  { additionalProperties: false },
);

const SCHEMAS = {
  trends: TrendsSpecSchema,
  funnel: FunnelSpecSchema,
  retention: RetentionSpecSchema,
  events: EventsSpecSchema,
  top_events: TopEventsSpecSchema,
  top_values: TopValuesSpecSchema,
} as const satisfies Record<string, TSchema>;
export type QueryKind = keyof typeof SCHEMAS;
export const QUERY_KINDS = Object.keys(SCHEMAS) as QueryKind[];
const CHECKERS = Object.fromEntries(
  Object.entries(SCHEMAS).map(([kind, schema]) => [kind, TypeCompiler.Compile(schema)]),
) as { [K in QueryKind]: ReturnType<typeof TypeCompiler.Compile<(typeof SCHEMAS)[K]>> };

/** The request body of POST /api/v1/query, as documented in OpenAPI. */
export const QueryBodySchema = Type.Union(
  [
    TrendsSpecSchema,
    FunnelSpecSchema,
    RetentionSpecSchema,
    EventsSpecSchema,
    TopEventsSpecSchema,
    TopValuesSpecSchema,
  ],
  { description: "A query spec; `kind` selects the shape" },
);
export type QueryBody = Static<typeof QueryBodySchema>;
const bodyChecker = TypeCompiler.Compile(QueryBodySchema);

/**
 * Who a user is: `person`, the default (as PostHog counts), makes the distinct ids linked by
 * `$identify` and `$create_alias` one user; `distinct_id` counts every distinct id apart.
 */
export type IdentityMode = "person" | "distinct_id";
export const DEFAULT_IDENTITY: IdentityMode = "person";

// The specs after defaults are applied and times parsed: what the SQL builders receive.
export interface TrendsQuery {
  kind: "trends";
  event?: string;
  math: "total" | "unique_users";
  interval: "hour" | "day" | "week";
  fromMs: number;
  toMs: number;
  filters: Filter[];
  breakdown?: string;
  /** Whether `breakdown` is an event property (the default) or a person property. */
  breakdownType: "event" | "person";
  limit: number;
  identity: IdentityMode;
}
export interface FunnelQuery {
  kind: "funnel";
  steps: string[];
  windowSeconds: number;
  fromMs: number;
  toMs: number;
  filters: Filter[];
  identity: IdentityMode;
}
export interface RetentionQuery {
  kind: "retention";
  startEvent: string;
  returnEvent: string;
  interval: "day" | "week";
  periods: number;
  fromMs: number;
  toMs: number;
  filters: Filter[];
  identity: IdentityMode;
}
export interface EventsCursor {
  timestamp: number;
  uuid: string;
}
export interface EventsQuery {
  kind: "events";
  event?: string;
  distinctId?: string;
  fromMs?: number;
  toMs?: number;
  filters: Filter[];
  limit: number;
  cursor?: EventsCursor;
}
export interface TopEventsQuery {
  kind: "top_events";
  fromMs: number;
  toMs: number;
  filters: Filter[];
  limit: number;
}
export interface TopValuesQuery {
  kind: "top_values";
  property: string;
  event?: string;
  fromMs: number;
  toMs: number;
  filters: Filter[];
  limit: number;
}
export type QuerySpec =
  | TrendsQuery
  | FunnelQuery
  | RetentionQuery
  | EventsQuery
  | TopEventsQuery
  | TopValuesQuery;

/** A filter on a person property rather than on the event's own. */
export const isPersonFilter = (filter: Filter): boolean => filter.type === "person";

/** The event property names a query reads (its filters, breakdown or top-values property). */
export function propertiesReadBy(spec: QuerySpec): Set<string> {
  const names = new Set(
    spec.filters.filter((filter) => !isPersonFilter(filter)).map((filter) => filter.property),
  );
  if (spec.kind === "trends" && spec.breakdown !== undefined && spec.breakdownType === "event")
    names.add(spec.breakdown);
  if (spec.kind === "top_values") names.add(spec.property);
  return names;
}

/** The person property names a query reads (person filters, a person breakdown). */
export function personPropertiesReadBy(spec: QuerySpec): Set<string> {
  const names = new Set(spec.filters.filter(isPersonFilter).map((filter) => filter.property));
  if (spec.kind === "trends" && spec.breakdown !== undefined && spec.breakdownType === "person")
    names.add(spec.breakdown);
  return names;
}

/**
 * Whether the query counts or follows users, so that `identity: "person"` changes its answer:
 * unique users in trends, funnels, retention.
 */
export function countsUsers(spec: QuerySpec): boolean {
  if (spec.kind === "trends") return spec.math === "unique_users" && spec.identity === "person";
  if (spec.kind === "funnel" || spec.kind === "retention") return spec.identity === "person";
  return false;
}

export interface TrendsResult {
  series: { breakdown_value: string | null; total: number; points: { t: string; value: number }[] }[];
}
export interface FunnelResult {
  steps: { event: string; count: number; conversion_rate: number; drop_off: number }[];
}
export interface RetentionResult {
  cohorts: { cohort: string; size: number; values: number[] }[];
}
export interface EventRow {
  uuid: string;
  event: string;
  distinct_id: string;
  timestamp: string;
  properties: Record<string, unknown>;
  received_at: string;
}
export interface EventsResult {
  events: EventRow[];
  next_cursor: string | null;
}
export interface TopEventsResult {
  events: { event: string; count: number }[];
}
export interface TopValuesResult {
  values: { value: string; count: number }[];
}
export type QueryResult =
  | TrendsResult
  | FunnelResult
  | RetentionResult
  | EventsResult
  | TopEventsResult
  | TopValuesResult;

/** Hours, days or weeks in milliseconds. */
export const INTERVAL_MS = { hour: 3_600_000, day: 86_400_000, week: 604_800_000 } as const;
/** Trends answers never hold more points than this per series (zero-filled). */
export const MAX_POINTS = 5000;

function invalid(problems: Problem[]): never {
  throw new AppError("invalid_query", {
    message: `The query spec is not valid: ${problems[0]?.field} ${problems[0]?.message}`,
    details: problems,
  });
}

function time(value: string | number, field: string): number {
  const parsed = parseTimestamp(value);
  if (!parsed.ok) invalid([{ field, message: parsed.message }]);
  return parsed.ms;
}

function range(from: string | number, to: string | number): { fromMs: number; toMs: number } {
  const fromMs = time(from, "from");
  const toMs = time(to, "to");
  if (toMs <= fromMs) invalid([{ field: "to", message: "must be after from" }]);
  return { fromMs, toMs };
}

function checkFilters(filters: Filter[] | undefined): Filter[] {
  const list = filters ?? [];
  list.forEach((filter, index) => {
    if (filter.op !== "is_set" && filter.value === undefined) {
      invalid([{ field: `filters.${index}.value`, message: `is required for op "${filter.op}"` }]);
    }
    if ((filter.op === "gt" || filter.op === "lt") && typeof filter.value !== "number") {
      invalid([{ field: `filters.${index}.value`, message: `must be a number for op "${filter.op}"` }]);
    }
  });
  return list;
}

export function encodeCursor(cursor: EventsCursor): string {
  return Buffer.from(`${cursor.timestamp}:${cursor.uuid}`).toString("base64url");
}

const CURSOR = /^(0|[1-9]\d{0,15}):([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/;

/**
 * Reads a cursor as encodeCursor wrote it, checked in full here so that no forged one reaches a
 * store (where a bad uuid or time is a conversion error): the exact encoding, a canonical uuid
 * and a time within the range any stored event can have.
 */
function decodeCursor(text: string): EventsCursor {
  const refuse = (message: string): never => {
    throw new AppError("invalid_cursor", {
      message: `The cursor is not valid: it ${message}`,
      details: [{ field: "cursor", message }],
    });
  };
  const decoded = Buffer.from(text, "base64url").toString();
  // Base64 decoding skips characters it does not know; encoding again must give the text back.
  if (Buffer.from(decoded).toString("base64url") !== text) refuse("is not a cursor this API returned");
  const match = CURSOR.exec(decoded);
  if (!match) return refuse("is not a cursor this API returned");
  const timestamp = Number(match[1]);
  if (timestamp < EARLIEST_TIMESTAMP_MS || timestamp > LATEST_TIMESTAMP_MS) {
    refuse("holds a time outside the range of stored events");
  }
  return { timestamp, uuid: match[2]! };
}

const isQueryKind = (kind: unknown): kind is QueryKind =>
  typeof kind === "string" && Object.hasOwn(CHECKERS, kind);

function invalidBody(problems: Problem[]): BodyCheck<never> {
  return {
    error: new AppError("invalid_query", {
      message: `The query spec is not valid: ${problems[0]?.field} ${problems[0]?.message}`,
      details: problems,
    }),
  };
}

/**
 * Checks a query body against its kind's schema: the typed spec, or a 400 naming each wrong
 * field. The query route uses it as its body validator; `toQuerySpec` then takes the typed spec.
 */
export function checkQueryBody(body: unknown): BodyCheck<QueryBody> {
  if (bodyChecker.Check(body)) return { value: body };
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    return invalidBody([{ field: "(body)", message: "must be a JSON object" }]);
  }
  const kind = (body as { kind?: unknown }).kind;
  if (!isQueryKind(kind)) {
    return invalidBody([{ field: "kind", message: `must be one of ${QUERY_KINDS.join(", ")}` }]);
  }
  // The union's errors name every branch; the spec's own kind names the fields that are wrong.
  const problems: Problem[] = [];
  const seen = new Set<string>();
  for (const error of CHECKERS[kind].Errors(body)) {
    const field = error.path.replace(/^\//, "").replaceAll("/", ".") || "(body)";
    if (seen.has(field)) continue;
    seen.add(field);
    problems.push({ field, message: error.message });
    if (problems.length >= 20) break;
  }
  return invalidBody(problems.length > 0 ? problems : [{ field: "(body)", message: "is not a valid spec" }]);
}

/** Checks a query body and applies defaults; a bad spec is a 400 naming the field. */
export function parseQuerySpec(body: unknown): QuerySpec {
  const checked = checkQueryBody(body);
  if (checked.error) throw checked.error;
  return toQuerySpec(checked.value);
}

/**
 * A checked spec (checkQueryBody) with its defaults applied, times parsed and cursor decoded; a
 * range, filter or cursor that cannot work is a 400 naming the field.
 */
export function toQuerySpec(spec: QueryBody): QuerySpec {
  switch (spec.kind) {
    case "trends": {
      const interval = spec.interval ?? "day";
      const { fromMs, toMs } = range(spec.from, spec.to);
      if ((toMs - fromMs) / INTERVAL_MS[interval] > MAX_POINTS) {
        invalid([
          {
            field: "interval",
            message: `gives more than ${MAX_POINTS} points for this range; use a wider interval`,
          },
        ]);
      }
      if (spec.breakdown_type !== undefined && spec.breakdown === undefined) {
        invalid([{ field: "breakdown_type", message: "needs a breakdown to apply to" }]);
      }
      return {
        kind: "trends",
        event: spec.event,
        math: spec.math ?? "total",
        interval,
        fromMs,
        toMs,
        filters: checkFilters(spec.filters),
        breakdown: spec.breakdown,
        breakdownType: spec.breakdown_type ?? "event",
        limit: spec.limit ?? 10,
        identity: spec.identity ?? DEFAULT_IDENTITY,
      };
    }
    case "funnel":
      return {
        kind: "funnel",
        steps: spec.steps,
        windowSeconds: spec.window_seconds ?? 86400,
        ...range(spec.from, spec.to),
        filters: checkFilters(spec.filters),
        identity: spec.identity ?? DEFAULT_IDENTITY,
      };
    case "retention": {
      const { fromMs, toMs } = range(spec.from, spec.to);
      const interval = spec.interval ?? "day";
      if ((toMs - fromMs) / INTERVAL_MS[interval] > 1000) {
        invalid([{ field: "interval", message: "gives more than 1000 cohorts for this range" }]);
      }
      return {
        kind: "retention",
        startEvent: spec.start_event,
        returnEvent: spec.return_event,
        interval,
        periods: spec.periods ?? (interval === "day" ? 8 : 5),
        fromMs,
        toMs,
        filters: checkFilters(spec.filters),
        identity: spec.identity ?? DEFAULT_IDENTITY,
      };
    }
    case "events": {
      const fromMs = spec.from === undefined ? undefined : time(spec.from, "from");
      const toMs = spec.to === undefined ? undefined : time(spec.to, "to");
      return {
        kind: "events",
        event: spec.event,
        distinctId: spec.distinct_id,
        fromMs,
        toMs,
        filters: checkFilters(spec.filters),
        limit: spec.limit ?? 100,
        cursor: spec.cursor === undefined ? undefined : decodeCursor(spec.cursor),
      };
    }
    case "top_events":
      return {
        kind: "top_events",
        ...range(spec.from, spec.to),
        filters: checkFilters(spec.filters),
        limit: spec.limit ?? 10,
      };
    case "top_values":
      return {
        kind: "top_values",
        property: spec.property,
        event: spec.event,
        ...range(spec.from, spec.to),
        filters: checkFilters(spec.filters),
        limit: spec.limit ?? 10,
      };
  }
}

import {
  IdentityResolver,
  type IdentitySource,
  type LinkRow,
  type PeopleResolver,
  type PropertyRow,
  type QueryPeople,
} from "./identity.js";
import {
  countsUsers,
  type EventsResult,
  encodeCursor,
  type FunnelResult,
  INTERVAL_MS,
  personPropertiesReadBy,
  type QueryResult,
  type QuerySpec,
  type RetentionResult,
  type TopEventsResult,
  type TopValuesResult,
  type TrendsResult,
} from "./spec.js";
import { type QueryStatements, SqlQueryBuilder, type SqlStatement } from "./sql-builder.js";
import type { SqlDialect } from "./sql-dialect.js";

export type Row = Record<string, unknown>;
/** Runs one statement and returns its rows; column names as written in the SQL. */
export type RunSql = (statement: SqlStatement) => Promise<Row[]>;

const num = (value: unknown): number => (typeof value === "bigint" ? Number(value) : Number(value ?? 0));
const iso = (ms: number): string => new Date(ms).toISOString();
const textOrNull = (value: unknown): string | null =>
  value === null || value === undefined ? null : String(value);

// 1970-01-05 was a Monday: weeks start on Mondays, as in ISO 8601 and date_trunc('week').
const MONDAY_OFFSET_MS = 4 * 86_400_000;

/** The start of the UTC hour, day or ISO week holding `ms`, as the engines' truncation gives. */
export function bucketStart(unit: "hour" | "day" | "week", ms: number): number {
  const size = INTERVAL_MS[unit];
  const offset = unit === "week" ? MONDAY_OFFSET_MS : 0;
  return Math.floor((ms - offset) / size) * size + offset;
}

function bucketsBetween(unit: "hour" | "day" | "week", fromMs: number, toMs: number): number[] {
  const buckets: number[] = [];
  for (let t = bucketStart(unit, fromMs); t < toMs; t += INTERVAL_MS[unit]) buckets.push(t);
  return buckets;
}

const text = (value: unknown): string | null =>
  value === null || value === undefined || value === "" ? null : String(value);

/**
 * Where identity.ts reads a project's links and person properties: the builder's statements, run
 * on the store. `overrides` replace a part (DuckDB keeps its markers in memory and names users by
 * uid).
 */
export function sqlIdentitySource<K extends string | number = string>(
  statements: QueryStatements,
  run: RunSql,
  overrides: Partial<IdentitySource<K>> = {},
): IdentitySource<K> {
  const count = async (statement: SqlStatement) => String(num((await run(statement))[0]?.n));
  return {
    linkMarker: (projectId) => count(statements.linkCount(projectId)),
    propertyMarker: (projectId) => count(statements.propertyEventCount(projectId)),
    readLinks: async (projectId) =>
      (await run(statements.links(projectId))).map(
        (row): LinkRow => ({
          distinctId: String(row.distinct_id),
          event: String(row.event),
          anonId: text(row.anon),
          alias: text(row.alias),
        }),
      ),
    readPropertyEvents: async (projectId, sinceMs) =>
      (await run(statements.propertyEvents(projectId, sinceMs))).map(
        (row): PropertyRow => ({
          distinctId: String(row.distinct_id),
          timestamp: num(row.ts),
          uuid: String(row.uuid),
          receivedAt: num(row.received),
          set: text(row.set),
          setOnce: text(row.set_once),
        }),
      ),
    // Where users are named by their distinct id, every id is its own key.
    userKeys: async (_projectId, ids) => new Map(ids.map((id) => [id, id as K])),
    keysAreIds: overrides.userKeys === undefined,
    ...overrides,
  };
}

/**
 * Runs any query kind on an engine with a SqlDialect (or its own statement builder) and shapes
 * the answer. The shaping lives here once, so DuckDB, Postgres and ClickHouse answer identically.
 * Queries that count persons or read person properties get their people from `identity` (by
 * default, resolved from the builder's statements and cached for the runner's life).
 */
export class SqlQueryRunner {
  private readonly builder: QueryStatements;
  private readonly identity: PeopleResolver;

  constructor(
    dialectOrBuilder: SqlDialect | QueryStatements,
    private readonly run: RunSql,
    identity?: PeopleResolver,
  ) {
    this.builder = "trends" in dialectOrBuilder ? dialectOrBuilder : new SqlQueryBuilder(dialectOrBuilder);
    this.identity = identity ?? new IdentityResolver(sqlIdentitySource(this.builder, run));
  }

  async query(projectId: string, spec: QuerySpec): Promise<QueryResult> {
    const persons = countsUsers(spec);
    const names = personPropertiesReadBy(spec);
    const people =
      persons || names.size > 0 ? await this.identity.people(projectId, persons, names) : undefined;
    switch (spec.kind) {
      case "trends":
        return this.trends(projectId, spec, people);
      case "funnel":
        return this.funnel(projectId, spec, people);
      case "retention":
        return this.retention(projectId, spec, people);
      case "events":
        return this.events(projectId, spec, people);
      case "top_events":
        return this.topEvents(projectId, spec, people);
      case "top_values":
        return this.topValues(projectId, spec, people);
    }
  }

  private async trends(
    projectId: string,
    q: Extract<QuerySpec, { kind: "trends" }>,
    people?: QueryPeople,
  ): Promise<TrendsResult> {
    const rows = await this.run(this.builder.trends(projectId, q, people));
    const buckets = bucketsBetween(q.interval, q.fromMs, q.toMs);
    const bySeries = new Map<string | null, { total: number; values: Map<number, number> }>();
    for (const row of rows) {
      const key = textOrNull(row.bv);
      let series = bySeries.get(key);
      if (!series) {
        series = { total: num(row.total), values: new Map() };
        bySeries.set(key, series);
      }
      series.values.set(num(row.t), num(row.value));
    }
    if (q.breakdown === undefined && bySeries.size === 0) bySeries.set(null, { total: 0, values: new Map() });
    const series = [...bySeries.entries()].map(([breakdownValue, s]) => ({
      breakdown_value: breakdownValue,
      total: s.total,
      points: buckets.map((t) => ({ t: iso(t), value: s.values.get(t) ?? 0 })),
    }));
    series.sort(
      (a, b) =>
        b.total - a.total ||
        (a.breakdown_value === null
          ? 1
          : b.breakdown_value === null
            ? -1
            : compareBytes(a.breakdown_value, b.breakdown_value)),
    );
    return { series };
  }

  private async funnel(
    projectId: string,
    q: Extract<QuerySpec, { kind: "funnel" }>,
    people?: QueryPeople,
  ): Promise<FunnelResult> {
    const [row = {}] = await this.run(this.builder.funnel(projectId, q, people));
    const counts = q.steps.map((_, i) => num(row[`c${i}`]));
    const first = counts[0] ?? 0;
    return {
      steps: q.steps.map((event, i) => {
        const count = counts[i] ?? 0;
        const previous = i === 0 ? count : (counts[i - 1] ?? 0);
        return {
          event,
          count,
          conversion_rate: first === 0 ? 0 : round(count / first),
          drop_off: previous - count,
        };
      }),
    };
  }

  private async retention(
    projectId: string,
    q: Extract<QuerySpec, { kind: "retention" }>,
    people?: QueryPeople,
  ): Promise<RetentionResult> {
    const size = INTERVAL_MS[q.interval];
    const cohortStarts = bucketsBetween(q.interval, q.fromMs, q.toMs);
    const firstCohort = cohortStarts[0] ?? bucketStart(q.interval, q.fromMs);
    const lastCohort = cohortStarts.at(-1) ?? firstCohort;
    const returnsToMs = lastCohort + q.periods * size;
    // One statement: size rows have no period.
    const rows = await this.run(this.builder.retention(projectId, q, firstCohort, returnsToMs, people));
    const sizes = new Map(
      rows.filter((row) => row.period === null).map((row) => [num(row.cohort), num(row.users)]),
    );
    const returnRows = rows.filter((row) => row.period !== null);
    const values = new Map<number, number[]>();
    for (const row of returnRows) {
      const cohort = num(row.cohort);
      const period = Math.round((num(row.period) - cohort) / size);
      if (period < 0 || period >= q.periods) continue;
      let list = values.get(cohort);
      if (!list) {
        list = new Array<number>(q.periods).fill(0);
        values.set(cohort, list);
      }
      list[period] = num(row.users);
    }
    return {
      cohorts: cohortStarts.map((cohort) => ({
        cohort: iso(cohort),
        size: sizes.get(cohort) ?? 0,
        values: values.get(cohort) ?? new Array<number>(q.periods).fill(0),
      })),
    };
  }

  private async events(
    projectId: string,
    q: Extract<QuerySpec, { kind: "events" }>,
    people?: QueryPeople,
  ): Promise<EventsResult> {
    const rows = await this.run(this.builder.events(projectId, q, people));
    const page = rows.slice(0, q.limit);
    const events = page.map((row) => ({
      uuid: String(row.uuid),
      event: String(row.event),
      distinct_id: String(row.distinct_id),
      timestamp: iso(num(row.ts)),
      properties: parseProperties(row.properties),
      received_at: iso(num(row.received)),
    }));
    const last = page.at(-1);
    const nextCursor =
      rows.length > q.limit && last
        ? encodeCursor({ timestamp: num(last.ts), uuid: String(last.uuid) })
        : null;
    return { events, next_cursor: nextCursor };
  }

  private async topEvents(
    projectId: string,
    q: Extract<QuerySpec, { kind: "top_events" }>,
    people?: QueryPeople,
  ): Promise<TopEventsResult> {
    const rows = await this.run(this.builder.topEvents(projectId, q, people));
    return { events: rows.map((row) => ({ event: String(row.event), count: num(row.count) })) };
  }

  private async topValues(
    projectId: string,
    q: Extract<QuerySpec, { kind: "top_values" }>,
    people?: QueryPeople,
  ): Promise<TopValuesResult> {
    const rows = await this.run(this.builder.topValues(projectId, q, people));
    return { values: rows.map((row) => ({ value: String(row.value), count: num(row.count) })) };
  }
}

function parseProperties(value: unknown): Record<string, unknown> {
  if (value !== null && typeof value === "object") return value as Record<string, unknown>;
  try {
    const parsed: unknown = JSON.parse(String(value ?? "{}"));
    return parsed !== null && typeof parsed === "object" ? (parsed as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

const round = (x: number): number => Math.round(x * 10000) / 10000;

/** Byte-order comparison, matching the engines' binary collation. */
export function compareBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

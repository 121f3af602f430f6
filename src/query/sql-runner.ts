import {
  type EventsResult,
  encodeCursor,
  type FunnelResult,
  INTERVAL_MS,
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

/**
 * Runs any query kind on an engine with a SqlDialect (or its own statement builder) and shapes
 * the answer. The shaping lives here once, so DuckDB, Postgres and ClickHouse answer identically.
 */
export class SqlQueryRunner {
  private readonly builder: QueryStatements;

  constructor(
    dialectOrBuilder: SqlDialect | QueryStatements,
    private readonly run: RunSql,
  ) {
    this.builder = "trends" in dialectOrBuilder ? dialectOrBuilder : new SqlQueryBuilder(dialectOrBuilder);
  }

  async query(projectId: string, spec: QuerySpec): Promise<QueryResult> {
    switch (spec.kind) {
      case "trends":
        return this.trends(projectId, spec);
      case "funnel":
        return this.funnel(projectId, spec);
      case "retention":
        return this.retention(projectId, spec);
      case "events":
        return this.events(projectId, spec);
      case "top_events":
        return this.topEvents(projectId, spec);
      case "top_values":
        return this.topValues(projectId, spec);
    }
  }

  private async trends(projectId: string, q: Extract<QuerySpec, { kind: "trends" }>): Promise<TrendsResult> {
    const rows = await this.run(this.builder.trends(projectId, q));
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

  private async funnel(projectId: string, q: Extract<QuerySpec, { kind: "funnel" }>): Promise<FunnelResult> {
    const [row = {}] = await this.run(this.builder.funnel(projectId, q));
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
  ): Promise<RetentionResult> {
    const size = INTERVAL_MS[q.interval];
    const cohortStarts = bucketsBetween(q.interval, q.fromMs, q.toMs);
    const firstCohort = cohortStarts[0] ?? bucketStart(q.interval, q.fromMs);
    const lastCohort = cohortStarts.at(-1) ?? firstCohort;
    const [sizeRows, returnRows] = await Promise.all([
      this.run(this.builder.retentionCohorts(projectId, q)),
      this.run(this.builder.retentionReturns(projectId, q, firstCohort, lastCohort + q.periods * size)),
    ]);
    const sizes = new Map(sizeRows.map((row) => [num(row.cohort), num(row.size)]));
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

  private async events(projectId: string, q: Extract<QuerySpec, { kind: "events" }>): Promise<EventsResult> {
    const rows = await this.run(this.builder.events(projectId, q));
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
  ): Promise<TopEventsResult> {
    const rows = await this.run(this.builder.topEvents(projectId, q));
    return { events: rows.map((row) => ({ event: String(row.event), count: num(row.count) })) };
  }

  private async topValues(
    projectId: string,
    q: Extract<QuerySpec, { kind: "top_values" }>,
  ): Promise<TopValuesResult> {
    const rows = await this.run(this.builder.topValues(projectId, q));
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

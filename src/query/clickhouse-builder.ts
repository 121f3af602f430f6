import { clickhouseLiteral as lit } from "./clickhouse-literal.js";
import {
  type EventsQuery,
  type Filter,
  type FunnelQuery,
  INTERVAL_MS,
  type RetentionQuery,
  type TopEventsQuery,
  type TopValuesQuery,
  type TrendsQuery,
} from "./spec.js";
import type { QueryStatements, SqlStatement } from "./sql-builder.js";

// 1970-01-05 was a Monday: weeks start on Mondays, as date_trunc('week') and bucketStart do.
const MONDAY_OFFSET_MS = 4 * 86_400_000;

/**
 * The SQL of every query kind for ClickHouse, as plain text: it runs unchanged on the 18.16 server
 * (through @clickhouse/client) and on current ClickHouse (through chdb, in the tests), so nothing
 * here depends on a client. Row shapes are those SqlQueryBuilder documents, so SqlQueryRunner
 * shapes the answers exactly as for DuckDB and Postgres.
 *
 * The table (see src/backends/clickhouse/clickhouse.schema.ts) keeps time as epoch milliseconds
 * (`ts Int64`: 18.16 has no DateTime64) and properties unpacked into `prop_keys`/`prop_values`
 * (text) and `num_keys`/`num_values` (JSON numbers). Every user value, property names included, is
 * a literal written by clickhouseLiteral; the only other text spliced in comes from this file and
 * from validated enums and integers.
 *
 * Semantics follow sql-builder.ts exactly (the conformance expectations check it): ClickHouse's
 * windowFunnel and retention functions are not used, because windowFunnel may start a user's chain
 * at any step-1 event and counts the window differently, while Tidemark's funnel enters at the
 * first step-1 event and takes the earliest next step each time.
 */
export class ClickHouseQueryBuilder implements QueryStatements {
  /** @param table the events table, qualified and already validated as an identifier */
  constructor(private readonly table: string) {}

  /** The start of the UTC hour, day or Monday-week holding `expr` (epoch ms), as a floor. */
  static bucket(unit: "hour" | "day" | "week", expr: string): string {
    const size = INTERVAL_MS[unit];
    const offset = unit === "week" ? MONDAY_OFFSET_MS : 0;
    const shifted = offset === 0 ? `(${expr})` : `((${expr}) - ${offset})`;
    // ClickHouse's % keeps the dividend's sign: ((x % s) + s) % s is the floor remainder.
    return `(${shifted} - (((${shifted} % ${size}) + ${size}) % ${size})${offset === 0 ? "" : ` + ${offset}`})`;
  }

  where(
    projectId: string,
    opts: { fromMs?: number; toMs?: number; event?: string; filters: readonly Filter[]; distinctId?: string },
  ): string {
    const clauses = [`project_id = ${lit(projectId.toLowerCase())}`];
    if (opts.fromMs !== undefined) clauses.push(`ts >= ${lit(opts.fromMs)}`);
    if (opts.toMs !== undefined) clauses.push(`ts < ${lit(opts.toMs)}`);
    if (opts.event !== undefined) clauses.push(`event = ${lit(opts.event)}`);
    if (opts.distinctId !== undefined) clauses.push(`distinct_id = ${lit(opts.distinctId)}`);
    for (const filter of opts.filters) clauses.push(filterSql(filter));
    return clauses.join(" AND ");
  }

  /** Rows: t (epoch ms), bv (text or null), value, total. */
  trends(projectId: string, q: TrendsQuery): SqlStatement {
    const where = this.where(projectId, q);
    const bucket = ClickHouseQueryBuilder.bucket(q.interval, "ts");
    if (q.breakdown === undefined) {
      // One series: one pass keeps a partial aggregate per bucket and merges them for the total.
      const [state, merge] =
        q.math === "unique_users"
          ? ["uniqExactState(distinct_id)", "uniqExactMerge(st)"]
          : ["countState()", "countMerge(st)"];
      const sql = `
        SELECT t, NULL AS bv, value, total FROM (
          SELECT groupArray(t) AS tl, groupArray(finalizeAggregation(st)) AS vl, ${merge} AS total
          FROM (SELECT ${bucket} AS t, ${state} AS st FROM ${this.table} WHERE ${where} GROUP BY t)
        ) ARRAY JOIN tl AS t, vl AS value`;
      return { sql, params: [] };
    }
    const [set, text] = [propertySet(q.breakdown), propertyText(q.breakdown)];
    const agg = q.math === "unique_users" ? "uniqExact(distinct_id)" : "count()";
    // NULL never matches in a join, so the breakdown travels as (is set, text) and becomes NULL last.
    const sql = `
      SELECT t, if(bkey_set = 1, bkey, NULL) AS bv, value, total FROM (
        SELECT ${bucket} AS t, ${set} AS bkey_set, ${text} AS bkey, ${agg} AS value
        FROM ${this.table} WHERE ${where}
        GROUP BY t, bkey_set, bkey
      ) AS points ALL INNER JOIN (
        SELECT ${set} AS bkey_set, ${text} AS bkey, ${agg} AS total
        FROM ${this.table} WHERE ${where}
        GROUP BY bkey_set, bkey
        ORDER BY total DESC, bkey_set DESC, bkey ASC LIMIT ${q.limit}
      ) AS top USING (bkey_set, bkey)`;
    return { sql, params: [] };
  }

  /** One row: c0..cN-1, the number of users reaching each step. */
  funnel(projectId: string, q: FunnelQuery): SqlStatement {
    const where = this.where(projectId, q);
    const steps = [...new Set(q.steps)];
    const window = lit(q.windowSeconds * 1000);
    const arrays = q.steps.map((step, i) => `groupArrayIf(ts, event = ${lit(step)}) AS a${i}`);
    // Each step is the earliest matching event at or after the previous one (strictly after when it
    // repeats the previous step's name), no later than the window after the entry.
    const chain = ["arrayReduce('min', a0) AS f0", "(length(a0) > 0) AS r0"];
    for (let i = 1; i < q.steps.length; i++) {
      const after = q.steps[i] === q.steps[i - 1] ? ">" : ">=";
      chain.push(
        `arrayFilter(x -> x ${after} f${i - 1} AND x <= f0 + ${window}, a${i}) AS m${i}`,
        `(r${i - 1} AND length(m${i}) > 0) AS r${i}`,
        `arrayReduce('min', m${i}) AS f${i}`,
      );
    }
    const counts = q.steps.map((_, i) => `countIf(r${i}) AS c${i}`).join(", ");
    const sql = `
      SELECT ${counts} FROM (
        SELECT ${chain.join(", ")} FROM (
          SELECT distinct_id, ${arrays.join(", ")}
          FROM ${this.table}
          WHERE ${where} AND event IN (${steps.map((s) => lit(s)).join(", ")})
          GROUP BY distinct_id
        )
      )`;
    return { sql, params: [] };
  }

  /** Rows: cohort (epoch ms), size. */
  retentionCohorts(projectId: string, q: RetentionQuery): SqlStatement {
    const sql = `SELECT cohort, count() AS size FROM (${this.cohorts(projectId, q)}) GROUP BY cohort`;
    return { sql, params: [] };
  }

  /** Rows: cohort (epoch ms), period (epoch ms), users. */
  retentionReturns(
    projectId: string,
    q: RetentionQuery,
    returnsFromMs: number,
    returnsToMs: number,
  ): SqlStatement {
    const where = this.where(projectId, {
      fromMs: returnsFromMs,
      toMs: returnsToMs,
      event: q.returnEvent,
      filters: q.filters,
    });
    const sql = `
      SELECT cohort, period, count() AS users FROM (${this.cohorts(projectId, q)}) AS cohorts
      ALL INNER JOIN (
        SELECT distinct_id, ${ClickHouseQueryBuilder.bucket(q.interval, "ts")} AS period
        FROM ${this.table} WHERE ${where}
        GROUP BY distinct_id, period
      ) AS returns USING distinct_id
      WHERE period >= cohort
      GROUP BY cohort, period`;
    return { sql, params: [] };
  }

  private cohorts(projectId: string, q: RetentionQuery): string {
    const where = this.where(projectId, { ...q, event: q.startEvent });
    return `SELECT distinct_id, ${ClickHouseQueryBuilder.bucket(q.interval, "min(ts)")} AS cohort
      FROM ${this.table} WHERE ${where} GROUP BY distinct_id`;
  }

  /** Rows: uuid, event, distinct_id, ts (epoch ms), properties (JSON text), received (epoch ms). */
  events(projectId: string, q: EventsQuery): SqlStatement {
    let where = this.where(projectId, q);
    if (q.cursor) {
      const t = lit(q.cursor.timestamp);
      where += ` AND (ts < ${t} OR (ts = ${t} AND uuid < ${lit(q.cursor.uuid.toLowerCase())}))`;
    }
    const limit = q.limit + 1;
    // 18.16 reads every selected column of every matching row before a top-N sort, and cannot
    // read in reverse key order: so the time of the page's last row is found first from the `ts`
    // column alone, and the wide columns are read only at or after it (ties included, so exact).
    const sql = `
      SELECT uuid, event, distinct_id, ts, properties, received_at AS received
      FROM ${this.table}
      WHERE ${where}
        AND ts >= (SELECT min(ts) FROM (SELECT ts FROM ${this.table} WHERE ${where} ORDER BY ts DESC LIMIT ${limit}))
      ORDER BY ts DESC, uuid DESC LIMIT ${limit}`;
    return { sql, params: [] };
  }

  /** Rows: event, count. */
  topEvents(projectId: string, q: TopEventsQuery): SqlStatement {
    const sql = `SELECT event, count() AS count FROM ${this.table} WHERE ${this.where(projectId, q)}
      GROUP BY event ORDER BY count DESC, event ASC LIMIT ${q.limit}`;
    return { sql, params: [] };
  }

  /** Rows: value, count. */
  topValues(projectId: string, q: TopValuesQuery): SqlStatement {
    const sql = `SELECT ${propertyText(q.property)} AS value, count() AS count FROM ${this.table}
      WHERE ${this.where(projectId, q)} AND ${propertySet(q.property)}
      GROUP BY value ORDER BY count DESC, value ASC LIMIT ${q.limit}`;
    return { sql, params: [] };
  }
}

/** 1 when the event has the property with a non-null value. */
function propertySet(name: string): string {
  return `has(prop_keys, ${lit(name)})`;
}

/** The property as text; '' when absent (always paired with propertySet). */
function propertyText(name: string): string {
  return `prop_values[indexOf(prop_keys, ${lit(name)})]`;
}

function filterSql(filter: Filter): string {
  const name = lit(filter.property);
  const text = (test: string) => `arrayExists((k, v) -> k = ${name} AND ${test}, prop_keys, prop_values)`;
  const number = (test: string) => `arrayExists((k, v) -> k = ${name} AND ${test}, num_keys, num_values)`;
  switch (filter.op) {
    case "eq":
      return text(`v = ${lit(String(filter.value))}`);
    case "neq":
      return `(NOT ${text(`v = ${lit(String(filter.value))}`)})`;
    case "contains":
      return text(`position(v, ${lit(String(filter.value))}) > 0`);
    case "gt":
      return number(`v > ${lit(Number(filter.value))}`);
    case "lt":
      return number(`v < ${lit(Number(filter.value))}`);
    case "is_set":
      return propertySet(filter.property);
  }
  throw new Error(`unknown filter op ${String(filter.op)}`);
}

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
import type { SqlDialect } from "./sql-dialect.js";

export interface SqlStatement {
  sql: string;
  params: unknown[];
}

/**
 * The statements SqlQueryRunner runs, one method per query kind, each with the row shape its doc
 * states. SqlQueryBuilder writes them for DuckDB and Postgres; ClickHouseQueryBuilder
 * (clickhouse-builder.ts) writes them for ClickHouse, whose SQL differs too much to be a dialect.
 */
export type QueryStatements = Pick<
  SqlQueryBuilder,
  "trends" | "funnel" | "retentionCohorts" | "retentionReturns" | "events" | "topEvents" | "topValues"
>;

/**
 * The typed columns holding a property of the project queried, if the engine keeps it so (DuckDB's
 * property slots); each holds exactly what the dialect's propertyText and propertyNumber return.
 */
export type PropertyColumns = (name: string) => { text: string; number: string } | undefined;

const NO_PROPERTY_COLUMNS: PropertyColumns = () => undefined;

/** Cheaper forms an engine may have of two operations, given what it knows of the store now. */
export interface UserStrategies {
  /**
   * An exact count of the distinct users in each of about `groups` groups, for aggregating
   * `column`, or undefined to use count(DISTINCT).
   */
  countDistinct?(column: string, groups: number): string | undefined;
  /** The condition that a row is the given user's (`distinctIdRef`, `projectRef`: placeholders). */
  isUser?(alias: string, projectRef: string, distinctIdRef: string): string;
}

/** Collects bound parameters and hands back their placeholders. */
class Params {
  readonly values: unknown[] = [];
  add(value: unknown): string {
    this.values.push(value);
    return `$${this.values.length}`;
  }
}

/**
 * Builds the SQL of every query kind for engines with Postgres-like SQL. User input only ever
 * reaches the statement as a bound parameter; the only text spliced in comes from this file and
 * from validated enums (interval names).
 */
export class SqlQueryBuilder {
  constructor(
    private readonly dialect: SqlDialect,
    private readonly columns: PropertyColumns = NO_PROPERTY_COLUMNS,
    private readonly users: UserStrategies = {},
  ) {}

  /** A property as text: its typed column when there is one, else read from the JSON. */
  private propertyText(params: Params, name: string, alias = ""): string {
    const column = this.columns(name);
    if (column) return `${alias}${column.text}`;
    return this.dialect.propertyText(`${alias}properties`, params.add(this.dialect.propertyPathValue(name)));
  }

  /** A property as a number (NULL unless a JSON number), from its typed column when there is one. */
  private propertyNumber(params: Params, name: string, alias = ""): string {
    const column = this.columns(name);
    if (column) return `${alias}${column.number}`;
    return this.dialect.propertyNumber(
      `${alias}properties`,
      params.add(this.dialect.propertyPathValue(name)),
    );
  }

  private where(
    params: Params,
    projectId: string,
    opts: { fromMs?: number; toMs?: number; event?: string; filters: readonly Filter[]; distinctId?: string },
    alias = "",
  ): string {
    const d = this.dialect;
    const col = (name: string) => `${alias}${name}`;
    const projectRef = params.add(projectId);
    const clauses = [`${col("project_id")} = ${d.uuid(projectRef)}`];
    if (opts.fromMs !== undefined)
      clauses.push(`${col("timestamp")} >= ${d.timestampFromMs(params.add(opts.fromMs))}`);
    if (opts.toMs !== undefined)
      clauses.push(`${col("timestamp")} < ${d.timestampFromMs(params.add(opts.toMs))}`);
    if (opts.event !== undefined) clauses.push(`${col("event")} = ${params.add(opts.event)}`);
    if (opts.distinctId !== undefined) {
      const distinctIdRef = params.add(opts.distinctId);
      clauses.push(
        this.users.isUser?.(alias, projectRef, distinctIdRef) ?? `${col("distinct_id")} = ${distinctIdRef}`,
      );
    }
    for (const filter of opts.filters) clauses.push(this.filter(params, filter, alias));
    return clauses.join(" AND ");
  }

  private filter(params: Params, filter: Filter, alias: string): string {
    const text = () => this.propertyText(params, filter.property, alias);
    const number = () => this.propertyNumber(params, filter.property, alias);
    switch (filter.op) {
      case "eq":
        return `${text()} = ${params.add(String(filter.value))}`;
      case "neq":
        return `${text()} IS DISTINCT FROM ${params.add(String(filter.value))}`;
      case "contains":
        return `strpos(${text()}, ${params.add(String(filter.value))}) > 0`;
      case "gt":
        return `${number()} > ${params.add(Number(filter.value))}`;
      case "lt":
        return `${number()} < ${params.add(Number(filter.value))}`;
      case "is_set":
        return `${text()} IS NOT NULL`;
    }
    throw new Error(`unknown filter op ${String(filter.op)}`);
  }

  /** Rows: t (epoch ms), bv (text or null), value, total. */
  trends(projectId: string, q: TrendsQuery): SqlStatement {
    const d = this.dialect;
    const params = new Params();
    const where = this.where(params, projectId, q);
    const bv = q.breakdown === undefined ? "CAST(NULL AS VARCHAR)" : this.propertyText(params, q.breakdown);
    const user = d.userColumn;
    // With no breakdown, `top` has one group and the result one a bucket.
    const groups =
      q.breakdown === undefined ? Math.ceil((q.toMs - q.fromMs) / INTERVAL_MS[q.interval]) + 2 : undefined;
    const agg = (alias: string) => {
      if (q.math !== "unique_users") return "count(*)";
      const column = `${alias}${user}`;
      return (
        (groups !== undefined && this.users.countDistinct?.(column, groups)) || `count(DISTINCT ${column})`
      );
    };
    const limit = params.add(q.limit);
    const sql = `
      WITH base AS (
        SELECT ${d.truncate(q.interval, "timestamp")} AS bucket, ${bv} AS bv, ${user}
        FROM events WHERE ${where}
      ),
      top AS (
        SELECT bv, ${agg("")} AS total FROM base GROUP BY bv
        ORDER BY total DESC, ${d.binaryOrder("bv")} ASC NULLS LAST LIMIT ${limit}
      )
      SELECT ${d.epochMs("base.bucket")} AS t, base.bv AS bv, ${agg("base.")} AS value, top.total AS total
      FROM base JOIN top ON base.bv IS NOT DISTINCT FROM top.bv
      GROUP BY base.bucket, base.bv, top.total`;
    return { sql, params: params.values };
  }

  /** One row: c1..cN, the number of users reaching each step. */
  funnel(projectId: string, q: FunnelQuery): SqlStatement {
    const d = this.dialect;
    const params = new Params();
    const window = params.add(q.windowSeconds);
    const user = d.userColumn;
    const ctes: string[] = [];
    q.steps.forEach((step, i) => {
      const where = this.where(params, projectId, { ...q, event: step }, "e.");
      if (i === 0) {
        ctes.push(
          `s0 AS (SELECT e.${user}, min(e.timestamp) AS t0, min(e.timestamp) AS t FROM events e WHERE ${where} GROUP BY e.${user})`,
        );
        return;
      }
      // Same name as the previous step: the next occurrence must be strictly later.
      const after = step === q.steps[i - 1] ? ">" : ">=";
      ctes.push(
        `s${i} AS (SELECT p.${user}, p.t0, min(e.timestamp) AS t FROM s${i - 1} p JOIN events e
          ON e.${user} = p.${user} AND e.timestamp ${after} p.t AND e.timestamp <= ${d.addSeconds("p.t0", window)}
          WHERE ${where} GROUP BY p.${user}, p.t0)`,
      );
    });
    const counts = q.steps.map((_, i) => `(SELECT count(*) FROM s${i}) AS c${i}`).join(", ");
    return { sql: `WITH ${ctes.join(",\n")} SELECT ${counts}`, params: params.values };
  }

  /** Rows: cohort (epoch ms), size. */
  retentionCohorts(projectId: string, q: RetentionQuery): SqlStatement {
    const params = new Params();
    const sql = `WITH ${this.retentionFirsts(params, projectId, q)}
      SELECT ${this.dialect.epochMs("cohort")} AS cohort, count(*) AS size FROM cohorts GROUP BY cohort`;
    return { sql, params: params.values };
  }

  /** Rows: cohort (epoch ms), period (epoch ms), users. */
  retentionReturns(
    projectId: string,
    q: RetentionQuery,
    returnsFromMs: number,
    returnsToMs: number,
  ): SqlStatement {
    const d = this.dialect;
    const params = new Params();
    const firsts = this.retentionFirsts(params, projectId, q);
    const where = this.where(params, projectId, {
      fromMs: returnsFromMs,
      toMs: returnsToMs,
      event: q.returnEvent,
      filters: q.filters,
    });
    const user = d.userColumn;
    const sql = `WITH ${firsts},
      returns AS (SELECT DISTINCT ${user}, ${d.truncate(q.interval, "timestamp")} AS period FROM events WHERE ${where})
      SELECT ${d.epochMs("c.cohort")} AS cohort, ${d.epochMs("r.period")} AS period, count(*) AS users
      FROM cohorts c JOIN returns r ON r.${user} = c.${user} AND r.period >= c.cohort
      GROUP BY c.cohort, r.period`;
    return { sql, params: params.values };
  }

  private retentionFirsts(params: Params, projectId: string, q: RetentionQuery): string {
    const d = this.dialect;
    const where = this.where(params, projectId, { ...q, event: q.startEvent });
    const user = d.userColumn;
    return `firsts AS (SELECT ${user}, min(timestamp) AS first_ts FROM events WHERE ${where} GROUP BY ${user}),
      cohorts AS (SELECT ${user}, ${d.truncate(q.interval, "first_ts")} AS cohort FROM firsts)`;
  }

  /** Rows: uuid, event, distinct_id, ts (epoch ms), properties (JSON text), received (epoch ms). */
  events(projectId: string, q: EventsQuery): SqlStatement {
    const d = this.dialect;
    const params = new Params();
    let where = this.where(params, projectId, q);
    if (q.cursor) {
      const t = d.timestampFromMs(params.add(q.cursor.timestamp));
      const u = d.uuid(params.add(q.cursor.uuid));
      where += ` AND (timestamp < ${t} OR (timestamp = ${t} AND uuid < ${u}))`;
    }
    const sql = `SELECT CAST(uuid AS VARCHAR) AS uuid, event, distinct_id, ${d.epochMs("timestamp")} AS ts,
        CAST(properties AS VARCHAR) AS properties, ${d.epochMs("received_at")} AS received
      FROM events WHERE ${where} ORDER BY timestamp DESC, uuid DESC LIMIT ${params.add(q.limit + 1)}`;
    return { sql, params: params.values };
  }

  /** Rows: event, count. */
  topEvents(projectId: string, q: TopEventsQuery): SqlStatement {
    const params = new Params();
    const where = this.where(params, projectId, q);
    const sql = `SELECT event, count(*) AS count FROM events WHERE ${where}
      GROUP BY event ORDER BY count DESC, ${this.dialect.binaryOrder("event")} ASC LIMIT ${params.add(q.limit)}`;
    return { sql, params: params.values };
  }

  /** Rows: value, count. */
  topValues(projectId: string, q: TopValuesQuery): SqlStatement {
    const d = this.dialect;
    const params = new Params();
    const where = this.where(params, projectId, q);
    const text = this.propertyText(params, q.property);
    const sql = `SELECT ${text} AS value, count(*) AS count FROM events WHERE ${where} AND ${text} IS NOT NULL
      GROUP BY 1 ORDER BY count DESC, ${d.binaryOrder("value")} ASC LIMIT ${params.add(q.limit)}`;
    return { sql, params: params.values };
  }
}

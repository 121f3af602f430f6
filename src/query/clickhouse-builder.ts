import { clickhouseLiteral as lit } from "./clickhouse-literal.js";
import { LINK_EVENTS, type QueryPeople } from "./identity.js";
import {
  type EventsQuery,
  type Filter,
  type FunnelQuery,
  INTERVAL_MS,
  isPersonFilter,
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
    people?: QueryPeople,
  ): string {
    const clauses = [`project_id = ${lit(projectId.toLowerCase())}`];
    if (opts.fromMs !== undefined) clauses.push(`ts >= ${lit(opts.fromMs)}`);
    if (opts.toMs !== undefined) clauses.push(`ts < ${lit(opts.toMs)}`);
    if (opts.event !== undefined) clauses.push(`event = ${lit(opts.event)}`);
    if (opts.distinctId !== undefined) clauses.push(`distinct_id = ${lit(opts.distinctId)}`);
    for (const filter of opts.filters)
      clauses.push(isPersonFilter(filter) ? personFilterSql(filter, people) : filterSql(filter));
    return clauses.join(" AND ");
  }

  /** Rows: t (epoch ms), bv (text or null), value, total. */
  trends(projectId: string, q: TrendsQuery, people?: QueryPeople): SqlStatement {
    const where = this.where(projectId, q, people);
    const bucket = ClickHouseQueryBuilder.bucket(q.interval, "ts");
    const user = userSql(people);
    if (q.breakdown === undefined) {
      // One series: one pass keeps a partial aggregate per bucket and merges them for the total.
      const [state, merge] =
        q.math === "unique_users"
          ? [`uniqExactState(${user})`, "uniqExactMerge(st)"]
          : ["countState()", "countMerge(st)"];
      const sql = `
        SELECT t, NULL AS bv, value, total FROM (
          SELECT groupArray(t) AS tl, groupArray(finalizeAggregation(st)) AS vl, ${merge} AS total
          FROM (SELECT ${bucket} AS t, ${state} AS st FROM ${this.table} WHERE ${where} GROUP BY t)
        ) ARRAY JOIN tl AS t, vl AS value`;
      return { sql, params: [] };
    }
    const [set, text] =
      q.breakdownType === "person"
        ? [personSet(q.breakdown, people), personText(q.breakdown, people)]
        : [propertySet(q.breakdown), propertyText(q.breakdown)];
    const agg = q.math === "unique_users" ? `uniqExact(${user})` : "count()";
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
  funnel(projectId: string, q: FunnelQuery, people?: QueryPeople): SqlStatement {
    const where = this.where(projectId, q, people);
    const user = userSql(people);
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
          SELECT ${user === "distinct_id" ? user : `${user} AS user_key`}, ${arrays.join(", ")}
          FROM ${this.table}
          WHERE ${where} AND event IN (${steps.map((s) => lit(s)).join(", ")})
          GROUP BY ${user === "distinct_id" ? user : "user_key"}
        )
      )`;
    return { sql, params: [] };
  }

  /** Rows: cohort (epoch ms), size. */
  retentionCohorts(projectId: string, q: RetentionQuery, people?: QueryPeople): SqlStatement {
    const sql = `SELECT cohort, count() AS size FROM (${this.cohorts(projectId, q, people)}) GROUP BY cohort`;
    return { sql, params: [] };
  }

  /** Rows: cohort (epoch ms), period (epoch ms), users. */
  retentionReturns(
    projectId: string,
    q: RetentionQuery,
    returnsFromMs: number,
    returnsToMs: number,
    people?: QueryPeople,
  ): SqlStatement {
    const where = this.where(
      projectId,
      { fromMs: returnsFromMs, toMs: returnsToMs, event: q.returnEvent, filters: q.filters },
      people,
    );
    const [user, key] = userKey(people);
    const sql = `
      SELECT cohort, period, count() AS users FROM (${this.cohorts(projectId, q, people)}) AS cohorts
      ALL INNER JOIN (
        SELECT ${user}, ${ClickHouseQueryBuilder.bucket(q.interval, "ts")} AS period
        FROM ${this.table} WHERE ${where}
        GROUP BY ${key}, period
      ) AS returns USING ${key}
      WHERE period >= cohort
      GROUP BY cohort, period`;
    return { sql, params: [] };
  }

  private cohorts(projectId: string, q: RetentionQuery, people: QueryPeople | undefined): string {
    const where = this.where(projectId, { ...q, event: q.startEvent }, people);
    const [user, key] = userKey(people);
    return `SELECT ${user}, ${ClickHouseQueryBuilder.bucket(q.interval, "min(ts)")} AS cohort
      FROM ${this.table} WHERE ${where} GROUP BY ${key}`;
  }

  /** Rows: uuid, event, distinct_id, ts (epoch ms), properties (JSON text), received (epoch ms). */
  events(projectId: string, q: EventsQuery, people?: QueryPeople): SqlStatement {
    let where = this.where(projectId, q, people);
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
  topEvents(projectId: string, q: TopEventsQuery, people?: QueryPeople): SqlStatement {
    const sql = `SELECT event, count() AS count FROM ${this.table} WHERE ${this.where(projectId, q, people)}
      GROUP BY event ORDER BY count DESC, event ASC LIMIT ${q.limit}`;
    return { sql, params: [] };
  }

  /** Rows: value, count. */
  topValues(projectId: string, q: TopValuesQuery, people?: QueryPeople): SqlStatement {
    const sql = `SELECT ${propertyText(q.property)} AS value, count() AS count FROM ${this.table}
      WHERE ${this.where(projectId, q, people)} AND ${propertySet(q.property)}
      GROUP BY value ORDER BY count DESC, value ASC LIMIT ${q.limit}`;
    return { sql, params: [] };
  }

  /** One row: n, the project's link events (identity.ts): the marker of its links. */
  linkCount(projectId: string): SqlStatement {
    const sql = `SELECT count() AS n FROM ${this.table}
      WHERE project_id = ${lit(projectId.toLowerCase())} AND event IN (${LINK_EVENTS.map((e) => lit(e)).join(", ")})`;
    return { sql, params: [] };
  }

  /**
   * Rows: distinct_id, event, anon ($anon_distinct_id as text), alias (as text); an absent one is
   * '' (index 0 of an array is its type's default), which names no id.
   */
  links(projectId: string): SqlStatement {
    const sql = `SELECT distinct_id, event, ${propertyText("$anon_distinct_id")} AS anon, ${propertyText("alias")} AS alias
      FROM ${this.table}
      WHERE project_id = ${lit(projectId.toLowerCase())} AND event IN (${LINK_EVENTS.map((e) => lit(e)).join(", ")})`;
    return { sql, params: [] };
  }

  /** One row: n, the project's events carrying `$set` or `$set_once`: the marker of its person properties. */
  propertyEventCount(projectId: string): SqlStatement {
    const sql = `SELECT count() AS n FROM ${this.table}
      WHERE project_id = ${lit(projectId.toLowerCase())} AND (${propertySet("$set")} OR ${propertySet("$set_once")})`;
    return { sql, params: [] };
  }

  /** Rows: distinct_id, ts (epoch ms), uuid, set ($set as JSON text, '' when absent), set_once. */
  propertyEvents(projectId: string): SqlStatement {
    // An object property is kept as its JSON text in prop_values (clickhouse.rows.ts).
    const sql = `SELECT distinct_id, ts, uuid, ${propertyText("$set")} AS set, ${propertyText("$set_once")} AS set_once
      FROM ${this.table}
      WHERE project_id = ${lit(projectId.toLowerCase())} AND (${propertySet("$set")} OR ${propertySet("$set_once")})`;
    return { sql, params: [] };
  }
}

/**
 * The user an event counts as. With persons, an id is mapped to its person by `transform` over
 * constant arrays (a hash lookup per row; 18.16 has no query parameters, so the arrays are
 * literals); every other id is its own person.
 */
function userSql(people: QueryPeople | undefined): string {
  if (!people?.persons) return "distinct_id";
  const mapped = people.rows.filter((row) => row.id !== row.person);
  if (mapped.length === 0) return "distinct_id";
  const ids = mapped.map((row) => lit(String(row.id))).join(", ");
  const persons = mapped.map((row) => lit(String(row.person))).join(", ");
  return `transform(distinct_id, [${ids}], [${persons}], distinct_id)`;
}

/**
 * The user column of a retention subquery and the name joined on: `distinct_id` as it is, or the
 * person as `user_key` (an alias may not repeat the name of a column it reads, on 18.16).
 */
function userKey(people: QueryPeople | undefined): [string, string] {
  const user = userSql(people);
  return user === "distinct_id" ? [user, user] : [`${user} AS user_key`, "user_key"];
}

/** The ids whose person has `name`, with its value as text (as prop_values holds it) and as a number. */
function personValues(name: string, people: QueryPeople | undefined) {
  const ids: string[] = [];
  const texts: string[] = [];
  const numberIds: string[] = [];
  const numbers: number[] = [];
  for (const row of people?.rows ?? []) {
    const value = row.properties?.[name];
    if (value === undefined || value === null) continue;
    ids.push(String(row.id));
    texts.push(typeof value === "string" ? value : JSON.stringify(value));
    if (typeof value === "number" && Number.isFinite(value)) {
      numberIds.push(String(row.id));
      numbers.push(value);
    }
  }
  return { ids, texts, numberIds, numbers };
}

const list = (values: readonly string[]) => values.map((v) => lit(v)).join(", ");
// Every number as toFloat64 of its text: one element type for the whole array on every version.
const floats = (values: readonly number[]) => values.map((v) => `toFloat64('${String(v)}')`).join(", ");

/** 1 when the event's person has the property (with a non-null value). */
function personSet(name: string, people: QueryPeople | undefined): string {
  const { ids } = personValues(name, people);
  return ids.length === 0 ? "0" : `(distinct_id IN (${list(ids)}))`;
}

/** The event's person's property as text; '' when it has none (always paired with personSet). */
function personText(name: string, people: QueryPeople | undefined): string {
  const { ids, texts } = personValues(name, people);
  return ids.length === 0 ? "''" : `transform(distinct_id, [${list(ids)}], [${list(texts)}], '')`;
}

function personFilterSql(filter: Filter, people: QueryPeople | undefined): string {
  const set = personSet(filter.property, people);
  const text = personText(filter.property, people);
  switch (filter.op) {
    case "eq":
      return `(${set} AND ${text} = ${lit(String(filter.value))})`;
    case "neq":
      return `(NOT (${set} AND ${text} = ${lit(String(filter.value))}))`;
    case "contains":
      return `(${set} AND position(${text}, ${lit(String(filter.value))}) > 0)`;
    case "gt":
    case "lt": {
      const { numberIds, numbers } = personValues(filter.property, people);
      if (numberIds.length === 0) return "0";
      const value = `transform(distinct_id, [${list(numberIds)}], [${floats(numbers)}], toFloat64(0))`;
      return `(distinct_id IN (${list(numberIds)}) AND ${value} ${filter.op === "gt" ? ">" : "<"} ${lit(Number(filter.value))})`;
    }
    case "is_set":
      return set;
  }
  throw new Error(`unknown filter op ${String(filter.op)}`);
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

import { createHash } from "node:crypto";
import { clickhouseLiteral as lit, wellFormed } from "./clickhouse-literal.js";
import { LINK_EVENTS, type QueryPeople } from "./identity.js";
import {
  type EventsQuery,
  type Filter,
  type FunnelQuery,
  INTERVAL_MS,
  isPersonFilter,
  personPropertiesReadBy,
  type RetentionQuery,
  type TopEventsQuery,
  type TopValuesQuery,
  type TrendsQuery,
} from "./spec.js";
import type { ExternalTable, QueryStatements, SqlStatement } from "./sql-builder.js";
import { bucketStart } from "./sql-runner.js";

// 1970-01-05 was a Monday: weeks start on Mondays, as date_trunc('week') and bucketStart do.
const MONDAY_OFFSET_MS = 4 * 86_400_000;
const DAY_MS = 86_400_000;

/** The daily users rollups beside the events table (clickhouse.schema.ts), qualified names. */
export interface ClickHouseRollups {
  /** (project, day, user) of every event. */
  userDays: string;
  /** (project, event, day, user). */
  userEventDays: string;
}

/** A project id as Tidemark writes it (a lower-case UUID): the only kind the daily users rollups hold. */
export const UUID_TEXT = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

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
  private readonly props: ClickHouseProperties;

  /**
   * @param table the events table, qualified and already validated as an identifier
   * @param rollups the daily users rollups beside it (clickhouse.schema.ts), complete for every
   *   stored event; without them every query reads the events
   * @param propertyColumns the properties the table keeps as columns of their own (propertyColumn)
   */
  constructor(
    private readonly table: string,
    private readonly rollups?: ClickHouseRollups,
    propertyColumns: readonly string[] = [],
  ) {
    this.props = new ClickHouseProperties(propertyColumns);
  }

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
    people: ClickHousePeople = NO_PEOPLE,
  ): string {
    const clauses = [`project_id = ${lit(projectId.toLowerCase())}`];
    if (opts.fromMs !== undefined) clauses.push(`ts >= ${lit(opts.fromMs)}`);
    if (opts.toMs !== undefined) clauses.push(`ts < ${lit(opts.toMs)}`);
    if (opts.event !== undefined) clauses.push(`event = ${lit(opts.event)}`);
    if (opts.distinctId !== undefined) clauses.push(`distinct_id = ${lit(opts.distinctId)}`);
    for (const filter of opts.filters)
      clauses.push(isPersonFilter(filter) ? personFilterSql(filter, people) : this.props.filter(filter));
    return clauses.join(" AND ");
  }

  /** Rows: t (epoch ms), bv (text or null), value, total. */
  trends(projectId: string, q: TrendsQuery, queryPeople?: QueryPeople): SqlStatement {
    const people = new ClickHousePeople(queryPeople, personPropertiesReadBy(q));
    const where = this.where(projectId, q, people);
    const bucket = ClickHouseQueryBuilder.bucket(q.interval, "ts");
    const from = people.from(this.table);
    const user = people.user;
    if (q.breakdown === undefined && q.math === "unique_users") {
      // Who was seen on each day, when that answers the query; else the events.
      const rows = this.trendsRollup(projectId, q, people) ?? { from, where, time: "ts" };
      const rowBucket = ClickHouseQueryBuilder.bucket(q.interval, rows.time);
      const first = bucketStart(q.interval, q.fromMs);
      const size = INTERVAL_MS[q.interval];
      const buckets = Math.ceil((q.toMs - first) / size);
      if (buckets <= 64) {
        // Users grouped once, the buckets each was seen in as the bits of one integer; a bucket's
        // users are a sum over users, the total their count. One hash table of users instead of one
        // set a bucket merged across threads: 10M events, unique users per day over 30 days
        // 325-383 -> 252-261 ms at P50 (benchmarks/README.md).
        const [userSelect, key] = people.userKey;
        const mask = bucketMask(rowBucket, first, size, buckets);
        const sql = `
          SELECT t, NULL AS bv, value, total FROM (
            SELECT count() AS total, ${mask.sums}
            FROM (SELECT ${userSelect}, groupBitOr(${mask.bit}) AS mask FROM ${rows.from} WHERE ${rows.where} GROUP BY ${key})
          ) ARRAY JOIN [${mask.starts}] AS t, [${mask.columns}] AS value`;
        return { sql, params: [], tables: people.tables() };
      }
      return this.oneSeries(rows.from, rows.where, rowBucket, `uniqExactState(${user})`, people);
    }
    if (q.breakdown === undefined) return this.oneSeries(from, where, bucket, "countState()", people);
    const person = q.breakdownType === "person" ? people.columns(q.breakdown) : undefined;
    const [set, text] = person
      ? [person.set, person.text]
      : [this.props.set(q.breakdown), this.props.text(q.breakdown)];
    const [state, merge] =
      q.math === "unique_users"
        ? [`uniqExactState(${user})`, "uniqExactMerge(st)"]
        : ["countState()", "countMerge(st)"];
    // One pass: a partial aggregate per (bucket, value), merged per value for its total, which
    // picks the top values; their points travel as arrays (10M events, the breakdown by plan per
    // day 163-169 -> 88-105 ms at P50 against two passes joined). The breakdown travels as (is
    // set, text) and becomes NULL last.
    const sql = `
      SELECT t, if(bkey_set = 1, bkey, NULL) AS bv, value, total FROM (
        SELECT bkey_set, bkey, groupArray(t) AS tl, groupArray(finalizeAggregation(st)) AS vl, ${merge} AS total
        FROM (
          SELECT ${bucket} AS t, ${set} AS bkey_set, ${text} AS bkey, ${state} AS st
          FROM ${from} WHERE ${where}
          GROUP BY t, bkey_set, bkey
        )
        GROUP BY bkey_set, bkey
        ORDER BY total DESC, bkey_set DESC, bkey ASC LIMIT ${q.limit}
      ) ARRAY JOIN tl AS t, vl AS value`;
    return { sql, params: [], tables: people.tables() };
  }

  /**
   * A series without breakdown in one pass: a partial aggregate (`state`, by its -State
   * combinator) per bucket, merged for the total.
   */
  private oneSeries(from: string, where: string, bucket: string, state: string, people: ClickHousePeople) {
    const merge = state.startsWith("uniqExact") ? "uniqExactMerge(st)" : "countMerge(st)";
    const sql = `
      SELECT t, NULL AS bv, value, total FROM (
        SELECT groupArray(t) AS tl, groupArray(finalizeAggregation(st)) AS vl, ${merge} AS total
        FROM (SELECT ${bucket} AS t, ${state} AS st FROM ${from} WHERE ${where} GROUP BY t)
      ) ARRAY JOIN tl AS t, vl AS value`;
    return { sql, params: [], tables: people.tables() };
  }

  /**
   * The daily users rollups as the rows of a unique-users trend, when they answer it exactly: of
   * every event (`user_days`) or of one (`user_event_days`), with no filter and no people joined,
   * day or week buckets over whole UTC days. Their users are `user_hash`, as the events'. 10M
   * events of 100K users, unique users per day over 30 days: 1.9M rows of `user_days` for 3.3M
   * events, 232-267 -> 143-146 ms at P50 (benchmarks/README.md); fewer events a user a day, fewer
   * rows.
   */
  private trendsRollup(
    projectId: string,
    q: TrendsQuery,
    people: ClickHousePeople,
  ): { from: string; where: string; time: string } | undefined {
    if (q.interval === "hour" || q.fromMs % DAY_MS !== 0 || q.toMs % DAY_MS !== 0) return undefined;
    const project = this.rollupProject(projectId, q.filters, people);
    if (project === undefined || this.rollups === undefined) return undefined;
    const days = `day >= ${lit(q.fromMs)} AND day < ${lit(q.toMs)}`;
    return q.event === undefined
      ? { from: this.rollups.userDays, where: `${project} AND ${days}`, time: "day" }
      : {
          from: this.rollups.userEventDays,
          where: `${project} AND event = ${lit(q.event)} AND ${days}`,
          time: "day",
        };
  }

  /**
   * The rollups' condition on the project, when they can answer a query: they exist, it reads no
   * filter and joins no people, and the project id is a UUID (the rollups hold no other).
   */
  private rollupProject(projectId: string, filters: readonly Filter[], people: ClickHousePeople) {
    const project = projectId.toLowerCase();
    if (this.rollups === undefined || filters.length > 0 || people.joined || !UUID_TEXT.test(project))
      return undefined;
    return `project = toUUID(${lit(project)})`;
  }

  /**
   * One row: c0..cN-1, the number of users reaching each step. A user enters at their first step-1
   * event; each later step is the earliest matching event at or after the previous one (strictly
   * after when it repeats the previous step's name), no later than the window after the entry.
   *
   * Two passes joined by user: the entries (the first step-1 event of each user), then the later
   * steps' events, kept per user only inside the window after the entry, so the arrays a user
   * carries are short. 10M events, 3 steps over 30 days: 171-176 -> 155 ms median against one pass
   * that kept every later-step time of each user (benchmarks/README.md). 18.16 cannot read a
   * subquery's column inside a lambda, so the bounds travel into arrayFilter as arrays of their
   * own (`replicate`).
   */
  funnel(projectId: string, q: FunnelQuery, queryPeople?: QueryPeople): SqlStatement {
    const people = new ClickHousePeople(queryPeople, personPropertiesReadBy(q));
    const where = this.where(projectId, q, people);
    const [user, key] = people.userKey;
    const window = lit(q.windowSeconds * 1000);
    const later = [...new Set(q.steps.slice(1))];
    const inWindow = `ts >= entry AND ts <= entry + ${window}`;
    const arrays = q.steps
      .slice(1)
      .map((step, i) => `groupArrayIf(ts, event = ${lit(step)} AND ${inWindow}) AS a${i + 1}`);
    const chain = ["1 AS r0"];
    for (let i = 1; i < q.steps.length; i++) {
      const after = q.steps[i] === q.steps[i - 1] ? ">" : ">=";
      const previous = i === 1 ? "first" : `f${i - 1}`;
      chain.push(
        `arrayFilter((x, lo) -> x ${after} lo, a${i}, replicate(${previous}, a${i})) AS m${i}`,
        `(r${i - 1} AND length(m${i}) > 0) AS r${i}`,
        `arrayReduce('min', m${i}) AS f${i}`,
      );
    }
    const counts = q.steps.map((_, i) => `countIf(r${i}) AS c${i}`).join(", ");
    // The entries are the right side: a user with no later-step event still has their row (the
    // left side's columns at their defaults, which no condition above matches). ALL, not ANY:
    // current ClickHouse's ANY RIGHT JOIN keeps one left row a key.
    const sql = `
      SELECT ${counts} FROM (
        SELECT ${chain.join(", ")} FROM (
          SELECT ${key}, any(entry) AS first, ${arrays.join(", ")}
          FROM (
            SELECT ${user}, ts, event FROM ${people.from(this.table)}
            WHERE ${where} AND event IN (${later.map((s) => lit(s)).join(", ")})
          ) AS steps ALL RIGHT JOIN (
            SELECT ${user}, min(ts) AS entry FROM ${people.from(this.table)}
            WHERE ${where} AND event = ${lit(q.steps[0]!)}
            GROUP BY ${key}
          ) AS entries USING ${key}
          GROUP BY ${key}
        )
      )`;
    return { sql, params: [], tables: people.tables() };
  }

  /**
   * Cohort sizes and returns in one statement and one pass over the events, grouped by user: each
   * user's first start event (their cohort) and the periods they returned in. Rows: cohort (epoch
   * ms), period (epoch ms; NULL on a cohort's size row), users. Up to 64 periods from the first
   * cohort, a user's periods are the bits of one integer and each period's users a sum over the
   * users of a cohort; beyond, an array of periods a user, one row each. 10M events, weekly over 90
   * days: 825-892 ms at P50 as two statements (two passes grouped by user, and a join), 232-278 as
   * one (benchmarks/README.md).
   */
  retention(
    projectId: string,
    q: RetentionQuery,
    returnsFromMs: number,
    returnsToMs: number,
    queryPeople?: QueryPeople,
  ): SqlStatement {
    const people = new ClickHousePeople(queryPeople, personPropertiesReadBy(q));
    const range = { fromMs: Math.min(q.fromMs, returnsFromMs), toMs: Math.max(q.toMs, returnsToMs) };
    // Each user's days of the two events, when the rollup answers exactly (whole UTC days, day or
    // week periods, no filter or people); else the events. 10M events, weekly over 90 days: 1.87M
    // rows for 2M events here (a user's events of one kind in a day are one row), 202-209 -> 148-155
    // ms at P50 (benchmarks/README.md).
    const project = [q.fromMs, q.toMs, returnsFromMs, returnsToMs].every((ms) => ms % DAY_MS === 0)
      ? this.rollupProject(projectId, q.filters, people)
      : undefined;
    const [from, where, time] =
      project !== undefined && this.rollups !== undefined
        ? [
            this.rollups.userEventDays,
            `${project} AND day >= ${lit(range.fromMs)} AND day < ${lit(range.toMs)}`,
            "day",
          ]
        : [people.from(this.table), this.where(projectId, { ...range, filters: q.filters }, people), "ts"];
    const [user, key] = people.userKey;
    const size = INTERVAL_MS[q.interval];
    const bucket = (expr: string) => ClickHouseQueryBuilder.bucket(q.interval, expr);
    const starts = `event = ${lit(q.startEvent)} AND ${time} >= ${lit(q.fromMs)} AND ${time} < ${lit(q.toMs)}`;
    const returns = `event = ${lit(q.returnEvent)} AND ${time} >= ${lit(returnsFromMs)} AND ${time} < ${lit(returnsToMs)}`;
    const events = [...new Set([q.startEvent, q.returnEvent])].map((e) => lit(e)).join(", ");
    // Users without a start event have `first` 0, which no stored time is (as in the funnel): 10M
    // events, alternating 10 and 16 times, medians 240-278 -> 211-247 ms against counting them.
    const byUser = (periods: string) => `
      SELECT ${user}, minIf(${time}, ${starts}) AS first, ${periods}
      FROM ${from} WHERE ${where} AND event IN (${events})
      GROUP BY ${key} HAVING first != 0`;
    const buckets = Math.round((returnsToMs - returnsFromMs) / size);
    if (buckets <= 64) {
      const mask = bucketMask(bucket(time), returnsFromMs, size, buckets);
      const sql = `
        SELECT cohort, period, users FROM (
          SELECT cohort, count() AS size, ${mask.sums}
          FROM (SELECT ${bucket("first")} AS cohort, mask FROM (${byUser(`groupBitOrIf(${mask.bit}, ${returns}) AS mask`)}))
          GROUP BY cohort
        ) ARRAY JOIN [NULL, ${mask.starts}] AS period, [size, ${mask.columns}] AS users
        WHERE period IS NULL OR period >= cohort`;
      return { sql, params: [], tables: people.tables() };
    }
    // -1 marks a cohort's size row: no hour, day or week starts a millisecond before 1970.
    const sql = `
      SELECT cohort, if(p = -1, NULL, p) AS period, count() AS users FROM (
        SELECT ${bucket("first")} AS cohort, arrayJoin(arrayConcat([toInt64(-1)], periods)) AS p
        FROM (${byUser(`groupUniqArrayIf(${bucket(time)}, ${returns}) AS periods`)})
      ) WHERE p = -1 OR p >= cohort
      GROUP BY cohort, p`;
    return { sql, params: [], tables: people.tables() };
  }

  /** Rows: uuid, event, distinct_id, ts (epoch ms), properties (JSON text), received (epoch ms). */
  events(projectId: string, q: EventsQuery, queryPeople?: QueryPeople): SqlStatement {
    const people = new ClickHousePeople(queryPeople, personPropertiesReadBy(q));
    let where = this.where(projectId, q, people);
    if (q.cursor) {
      const t = lit(q.cursor.timestamp);
      where += ` AND (ts < ${t} OR (ts = ${t} AND uuid < ${lit(q.cursor.uuid.toLowerCase())}))`;
    }
    const limit = q.limit + 1;
    // One user's events: their hash first, as PREWHERE, so that the text columns (the project's,
    // the user's) are read only in the granules holding the user (10M events, 220 -> 159 ms).
    const from =
      people.from(this.table) +
      (q.distinctId === undefined ? "" : ` PREWHERE user_hash = cityHash64(${lit(q.distinctId)})`);
    // 18.16 reads every selected column of every matching row before a top-N sort, and cannot
    // read in reverse key order: so the time of the page's last row is found first from the `ts`
    // column alone, and the wide columns are read only at or after it (ties included, so exact).
    // That time is looked for in the day before the project's newest event (or the cursor, or the
    // range's end) when that day holds a page, else in all the project's events: 10M events, the
    // newest 100 in 438 ms scanning every time, ~70 ms in the day. One user's events rarely fill a
    // page in a day, so they skip the day's count (~26 ms) and scan.
    const candidates =
      q.distinctId === undefined
        ? `${where} AND ts >= ${this.pageFloor(projectId, q, from, where, limit)}`
        : where;
    const sql = `
      SELECT uuid, event, distinct_id, ts, properties, received_at AS received
      FROM ${from}
      WHERE ${where}
        AND ts >= (SELECT min(ts) FROM (SELECT ts FROM ${from} WHERE ${candidates} ORDER BY ts DESC LIMIT ${limit}))
      ORDER BY ts DESC, uuid DESC LIMIT ${limit}`;
    return { sql, params: [], tables: people.tables() };
  }

  /**
   * A time the newest `limit` events matching `where` are all at or after: the start of the day
   * before the newest event the project may hold when that day holds at least `limit` of them, else
   * the earliest time there is. `events_newest` (clickhouse.schema.ts) is a lower bound of the
   * project's newest time; from a lower bound the day holds at least the events it would from the
   * true one, so a view that missed rows, or still counts deleted ones, can only send the search
   * to every event, never change the page.
   */
  private pageFloor(projectId: string, q: EventsQuery, from: string, where: string, limit: number): string {
    let anchor = `(SELECT maxMerge(newest) FROM ${this.table}_newest WHERE project_id = ${lit(projectId.toLowerCase())})`;
    if (q.toMs !== undefined) anchor = `least(${anchor}, toInt64(${lit(q.toMs)}))`;
    if (q.cursor) anchor = `least(${anchor}, toInt64(${lit(q.cursor.timestamp)}))`;
    const start = `(${anchor} - 86400000)`;
    return `(SELECT if(count() >= ${limit}, ${start}, toInt64(-9223372036854775808)) FROM ${from} WHERE ${where} AND ts >= ${start})`;
  }

  /** Rows: event, count. */
  topEvents(projectId: string, q: TopEventsQuery, queryPeople?: QueryPeople): SqlStatement {
    const people = new ClickHousePeople(queryPeople, personPropertiesReadBy(q));
    const sql = `SELECT event, count() AS count FROM ${people.from(this.table)} WHERE ${this.where(projectId, q, people)}
      GROUP BY event ORDER BY count DESC, event ASC LIMIT ${q.limit}`;
    return { sql, params: [], tables: people.tables() };
  }

  /** Rows: value, count. */
  topValues(projectId: string, q: TopValuesQuery, queryPeople?: QueryPeople): SqlStatement {
    const people = new ClickHousePeople(queryPeople, personPropertiesReadBy(q));
    const sql = `SELECT ${this.props.text(q.property)} AS value, count() AS count FROM ${people.from(this.table)}
      WHERE ${this.where(projectId, q, people)} AND ${this.props.set(q.property)}
      GROUP BY value ORDER BY count DESC, value ASC LIMIT ${q.limit}`;
    return { sql, params: [], tables: people.tables() };
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

  /**
   * Rows: distinct_id, ts (epoch ms), uuid, received (epoch ms), set ($set as JSON text, '' when
   * absent), set_once: the project's property candidates, those received at or after `sinceMs`.
   */
  propertyEvents(projectId: string, sinceMs?: number): SqlStatement {
    // An object property is kept as its JSON text in prop_values (clickhouse.rows.ts).
    const since = sinceMs === undefined ? "" : ` AND received_at >= ${lit(Math.floor(sinceMs))}`;
    const sql = `SELECT distinct_id, ts, uuid, received_at AS received, ${propertyText("$set")} AS set, ${propertyText("$set_once")} AS set_once
      FROM ${this.table}
      WHERE project_id = ${lit(projectId.toLowerCase())} AND (${propertySet("$set")} OR ${propertySet("$set_once")})${since}`;
    return { sql, params: [] };
  }
}

/**
 * Up to 64 buckets from `firstMs` as the bits of one integer, for a query that groups by user
 * first: `bit` is the bit of the bucket `bucketExpr` (an event's) falls in, to OR into `mask`;
 * `sums` counts, for each bucket i, the rows whose mask has its bit (as u0, u1, ...); `starts` and
 * `columns` list the buckets' starts and those counts, in order, for an ARRAY JOIN. 18.16's shifts
 * wrap at 64 bits, so the caller keeps to 64 buckets.
 */
function bucketMask(bucketExpr: string, firstMs: number, size: number, count: number) {
  const indexes = Array.from({ length: count }, (_, i) => i);
  return {
    bit: `bitShiftLeft(toUInt64(1), toUInt8(intDiv(${bucketExpr} - ${lit(firstMs)}, ${size})))`,
    sums: indexes.map((i) => `sum(bitTest(mask, ${i})) AS u${i}`).join(", "),
    starts: indexes.map((i) => `toInt64(${lit(firstMs + i * size)})`).join(", "),
    columns: indexes.map((i) => `u${i}`).join(", "),
  };
}

/** The name of the people table a query with people joins (clickhouse.database.ts sends it). */
export const PEOPLE_TABLE = "tm_people";

/**
 * A query's people for ClickHouse: a table sent with the query as external data, joined with
 * `ANY LEFT JOIN ... USING distinct_id`, where an id missing from it gets the columns' defaults
 * ('' and 0: its own person, no person property). Measured on 18.16 (100K events, 6,373 mapped
 * ids, unique users per day): 30 ms joined against 15 ms plain, where the same mapping as literal
 * arrays in `transform` cost 105-200 ms and an `IN` list of them 300-500 ms, nearly all of it
 * spent analysing the literals (the same statement on an empty project took as long).
 */
class ClickHousePeople {
  /** The person properties the query reads, in column order (tm_p0_..., tm_p1_...). */
  private readonly names: string[];
  /** The events are joined to people (some id is mapped to a person, or has properties). */
  readonly joined: boolean;

  constructor(
    private readonly people: QueryPeople | undefined,
    names: ReadonlySet<string>,
  ) {
    this.names = [...names];
    this.joined = people !== undefined && people.rows.length > 0;
  }

  /** The events as FROM reads them: the table, joined to the people when there are any. */
  from(table: string): string {
    return this.joined ? `${table} ANY LEFT JOIN ${PEOPLE_TABLE} USING distinct_id` : table;
  }

  /**
   * The user an event counts as: its person when the query counts persons, else its distinct id's
   * hash (clickhouse.schema.ts, ADDED_COLUMNS).
   */
  get user(): string {
    return this.joined && this.people?.persons ? "if(tm_person = '', distinct_id, tm_person)" : "user_hash";
  }

  /** The SELECT of a user column to GROUP BY and join on: [expression, its name]. */
  get userKey(): [string, string] {
    const user = this.user;
    // An alias may not repeat the name of a column it reads, on 18.16.
    return user === "user_hash" ? [user, user] : [`${user} AS user_key`, "user_key"];
  }

  /** The columns of person property `name`: set (0/1), text, is a number (0/1), number. */
  columns(name: string): { set: string; text: string; isNumber: string; number: string } {
    const i = this.names.indexOf(name);
    if (!this.joined || i < 0) return { set: "0", text: "''", isNumber: "0", number: "toFloat64(0)" };
    return { set: `tm_p${i}_set`, text: `tm_p${i}_text`, isNumber: `tm_p${i}_isnum`, number: `tm_p${i}_num` };
  }

  /** The external table to send, or none. */
  tables(): ExternalTable[] | undefined {
    if (!this.joined || !this.people) return undefined;
    const structure = ["distinct_id String", "tm_person String"];
    for (let i = 0; i < this.names.length; i++)
      structure.push(
        `tm_p${i}_set UInt8`,
        `tm_p${i}_text String`,
        `tm_p${i}_isnum UInt8`,
        `tm_p${i}_num Float64`,
      );
    const rows = this.people.rows.map((row) => {
      const out: Record<string, unknown> = {
        distinct_id: wellFormed(String(row.id)),
        tm_person: wellFormed(String(row.person)),
      };
      this.names.forEach((name, i) => {
        const value = row.properties?.[name];
        const set = value !== undefined && value !== null;
        const isNumber = typeof value === "number" && Number.isFinite(value);
        // As prop_values holds a property (clickhouse.rows.ts): a string as is, else its JSON.
        out[`tm_p${i}_set`] = set ? 1 : 0;
        out[`tm_p${i}_text`] = set
          ? wellFormed(typeof value === "string" ? value : JSON.stringify(value))
          : "";
        out[`tm_p${i}_isnum`] = isNumber ? 1 : 0;
        out[`tm_p${i}_num`] = isNumber ? value : 0;
      });
      return out;
    });
    return [{ name: PEOPLE_TABLE, structure: structure.join(", "), rows }];
  }
}

const NO_PEOPLE = new ClickHousePeople(undefined, new Set());

function personFilterSql(filter: Filter, people: ClickHousePeople): string {
  const { set, text, isNumber, number } = people.columns(filter.property);
  switch (filter.op) {
    case "eq":
      return `(${set} = 1 AND ${text} = ${lit(String(filter.value))})`;
    case "neq":
      return `(NOT (${set} = 1 AND ${text} = ${lit(String(filter.value))}))`;
    case "contains":
      return `(${set} = 1 AND position(${text}, ${lit(String(filter.value))}) > 0)`;
    case "gt":
      return `(${isNumber} = 1 AND ${number} > ${lit(Number(filter.value))})`;
    case "lt":
      return `(${isNumber} = 1 AND ${number} < ${lit(Number(filter.value))})`;
    case "is_set":
      return `(${set} = 1)`;
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

/**
 * The column a property is kept in when configured (clickhouse.schema.ts adds it): its text, NULL
 * where the event does not have it. Computed by ClickHouse from the arrays, as `propertyText` reads
 * them (the first key of that name). The name is a hash of the property's, so any property name
 * makes a plain identifier.
 */
export function propertyColumn(name: string): { name: string; definition: string } {
  const hash = createHash("sha256").update(wellFormed(name)).digest("hex").slice(0, 16);
  const key = lit(name);
  return {
    name: `prop_${hash}`,
    definition: `Nullable(String) MATERIALIZED if(has(prop_keys, ${key}), prop_values[indexOf(prop_keys, ${key})], NULL)`,
  };
}

/**
 * Where a query reads an event property: its column when the table keeps one, else the key and
 * value arrays of every row. 10M events, top values of a property over 30 days: 263-277 ms from the
 * arrays, 110-120 from its column (benchmarks/README.md).
 */
class ClickHouseProperties {
  private readonly columns: ReadonlyMap<string, string>;

  constructor(names: readonly string[]) {
    this.columns = new Map(names.map((name) => [wellFormed(name), propertyColumn(name).name]));
  }

  private column(name: string): string | undefined {
    return this.columns.get(wellFormed(name));
  }

  /** Whether the event has the property (0/1). */
  set(name: string): string {
    const column = this.column(name);
    return column ? `isNotNull(${column})` : propertySet(name);
  }

  /** The property as text; '' when absent (always paired with `set`). */
  text(name: string): string {
    const column = this.column(name);
    return column ? `ifNull(${column}, '')` : propertyText(name);
  }

  filter(filter: Filter): string {
    const column = this.column(filter.property);
    const name = lit(filter.property);
    const text = (test: (v: string) => string) =>
      column
        ? `ifNull(${test(column)}, 0)`
        : `arrayExists((k, v) -> k = ${name} AND ${test("v")}, prop_keys, prop_values)`;
    const number = (test: string) => `arrayExists((k, v) -> k = ${name} AND ${test}, num_keys, num_values)`;
    switch (filter.op) {
      case "eq":
        return text((v) => `${v} = ${lit(String(filter.value))}`);
      case "neq":
        return `(NOT ${text((v) => `${v} = ${lit(String(filter.value))}`)})`;
      case "contains":
        return text((v) => `position(${v}, ${lit(String(filter.value))}) > 0`);
      case "gt":
        return number(`v > ${lit(Number(filter.value))}`);
      case "lt":
        return number(`v < ${lit(Number(filter.value))}`);
      case "is_set":
        return this.set(filter.property);
    }
    throw new Error(`unknown filter op ${String(filter.op)}`);
  }
}

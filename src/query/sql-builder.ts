import { LINK_EVENTS, type QueryPeople, SET_MARK } from "./identity.js";
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
import type { SqlDialect } from "./sql-dialect.js";

export interface SqlStatement {
  sql: string;
  params: unknown[];
  /**
   * The statement joins a query's people (the `people` CTE): Postgres runs it with JIT off (see
   * postgres.event-store.ts).
   */
  people?: boolean;
  /**
   * ClickHouse only: tables sent with the query as external data (the HTTP interface's bound
   * tables, which 18.16 has where it has no query parameters), read in the SQL by `name`.
   */
  tables?: ExternalTable[];
  /**
   * The statement groups the project's `event` events in [fromMs, toMs) by user, table by table or
   * all together (a funnel's first step, SqlQueryBuilder.firstByUser). DuckDB groups them faster in
   * a perfect hash table when they outnumber the user keys (duckdb.event-store.ts); other engines
   * ignore it.
   */
  userGroups?: { projectId: string; event: string; fromMs: number; toMs: number };
}

/** A table that travels with a query: its name, its columns (`name Type, ...`) and its rows. */
export interface ExternalTable {
  name: string;
  structure: string;
  rows: Record<string, unknown>[];
}

/**
 * The statements SqlQueryRunner runs, one method per query kind, each with the row shape its doc
 * states, and those that read a project's identity (identity.ts). SqlQueryBuilder writes them for
 * DuckDB and Postgres; ClickHouseQueryBuilder (clickhouse-builder.ts) writes them for ClickHouse,
 * whose SQL differs too much to be a dialect. `people`, when given, is the query's people: the
 * statement counts persons and reads person properties from it; without it (no links, no person
 * property read) the statement reads the events table alone.
 */
export type QueryStatements = Pick<
  SqlQueryBuilder,
  | "trends"
  | "funnel"
  | "retention"
  | "events"
  | "topEvents"
  | "topValues"
  | "linkCount"
  | "links"
  | "propertyEventCount"
  | "propertyEvents"
>;

/**
 * The typed columns holding a property of the project queried, if the engine keeps it so (DuckDB's
 * property slots); each holds exactly what the dialect's propertyText and propertyNumber return.
 */
export type PropertyColumns = (name: string) => { text: string; number: string } | undefined;

const NO_PROPERTY_COLUMNS: PropertyColumns = () => undefined;

/**
 * The integer a project's events of a name carry in their `eid` column, when the engine keeps one
 * (DuckDB, schema 9) and every stored event of the name has it; undefined: filter by the name.
 */
export type EventIdOf = (event: string) => number | undefined;

const NO_EVENT_IDS: EventIdOf = () => undefined;

/** Cheaper forms an engine may have of two operations, given what it knows of the store now. */
export interface UserStrategies {
  /**
   * An exact count of the distinct users in each of about `groups` groups, for aggregating
   * `column`, or undefined to use count(DISTINCT).
   */
  countDistinct?(column: string, groups: number): string | undefined;
  /**
   * The condition that a row is the given user's (`projectRef`: a placeholder; `bind` adds a
   * parameter and returns its placeholder, so that every parameter bound is one the SQL reads).
   */
  isUser?(alias: string, projectRef: string, distinctId: string, bind: (value: unknown) => string): string;
  /**
   * Exact sets of users that can be united, for about `groups` groups of `column`: `aggregate`
   * makes a group's set, `size` counts a set, `union` is the aggregate uniting sets. A trend counts
   * each bucket's users once and the range's users by uniting the buckets' sets, instead of a
   * second distinct count over every row. Undefined: count(DISTINCT) twice.
   */
  userSets?(
    column: string,
    groups: number,
  ): { aggregate: string; size: (set: string) => string; union: (set: string) => string } | undefined;
  /**
   * Where the dialect keeps events in several tables, how a funnel's first step groups them by
   * user: the first table on its own, the users of the others joined to it ("apart", the default),
   * or their union at once ("together"). See SqlQueryBuilder.firstByUser.
   */
  firstStepTables?: "apart" | "together";
}

/**
 * Tables an engine keeps beside the events for queries to read instead of them.
 * - `eventCounts`: events counted by (project_id, event, hour): `hour` the UTC hour's start, `n`
 *   the count, several rows of one hour summed. A count of events with no filter, over a range of
 *   whole hours, reads it.
 */
export interface Rollups {
  eventCounts?: string;
  userDays?: UserDayRollup;
}

/**
 * Each (project, event, UTC day)'s users as exact sets, split into chunks of users: `relation` is
 * SQL for a relation of (project_id, event, day, chunk, users), `day` the day's start and `users` a
 * set of the users in `chunk`, several rows of one key to be united. The rest are the set
 * operations on `users`: `union` an aggregate, the others scalar. Unique users per day or week and
 * retention read it when they read no filter, breakdown or people, over whole days.
 */
export interface UserDayRollup {
  relation: string;
  union(set: string): string;
  size(set: string): string;
  intersect(a: string, b: string): string;
  minus(a: string, b: string): string;
}

const HOUR_MS = 3_600_000;
const DAY_MS = 86_400_000;

/** Collects bound parameters and hands back their placeholders. */
class Params {
  readonly values: unknown[] = [];
  /** A parameter holds the query's people. */
  people = false;
  add(value: unknown): string {
    this.values.push(value);
    return `$${this.values.length}`;
  }
  statement(sql: string): SqlStatement {
    return this.people ? { sql, params: this.values, people: true } : { sql, params: this.values };
  }
}

/**
 * How a statement reads events: the table alone, or, for a query with people, the table (alias
 * `e`) left-joined to the people relation (alias `m`, a CTE named `people`) on the user column.
 * Ids missing from the people are their own person with no person properties.
 */
interface Source {
  /** The events as FROM names them. */
  from: string;
  /** The prefix of the events' columns: "" or "e.". */
  alias: string;
  /** The user a row counts as: its person when the query counts persons, else its id. */
  user: string;
  /** The people rows are joined (false: no person has a property the query reads). */
  joined: boolean;
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
    private readonly rollups: Rollups = {},
    private readonly eventIds: EventIdOf = NO_EVENT_IDS,
  ) {}

  /**
   * The rollup of event counts when it answers a query exactly: no filters, and a range of whole
   * hours (every bucket a union of hours). Undefined: read the events.
   */
  private eventCounts(q: { fromMs: number; toMs: number; filters: readonly Filter[] }): string | undefined {
    const table = this.rollups.eventCounts;
    if (table === undefined || q.filters.length > 0) return undefined;
    return q.fromMs % HOUR_MS === 0 && q.toMs % HOUR_MS === 0 ? table : undefined;
  }

  /**
   * The rollup of daily users when it answers a query exactly: no filters, no people (no person is
   * merged and no person property read), and a range of whole days. Undefined: read the events.
   */
  private userDays(
    q: { fromMs: number; toMs: number; filters: readonly Filter[] },
    people: QueryPeople | undefined,
  ): UserDayRollup | undefined {
    const rollup = this.rollups.userDays;
    if (rollup === undefined || q.filters.length > 0 || (people !== undefined && people.rows.length > 0))
      return undefined;
    return q.fromMs % DAY_MS === 0 && q.toMs % DAY_MS === 0 ? rollup : undefined;
  }

  /**
   * `project_id`, range and optional event conditions on a rollup whose rows start at `time`
   * (`hour` for the counts, `day` for the daily users).
   */
  private rollupWhere(
    params: Params,
    projectId: string,
    q: { fromMs: number; toMs: number; event?: string },
    time: "hour" | "day",
  ) {
    const d = this.dialect;
    const clauses = [
      `project_id = ${d.uuid(params.add(projectId))}`,
      `${time} >= ${d.timestampFromMs(params.add(q.fromMs))}`,
      `${time} < ${d.timestampFromMs(params.add(q.toMs))}`,
    ];
    if (q.event !== undefined) clauses.push(`event = ${params.add(q.event)}`);
    return clauses.join(" AND ");
  }

  /**
   * Where a statement reads events: the table alone for a query without people (exactly as before
   * identity existed), else the table joined to the `people` CTE (peopleCte).
   */
  private source(people: QueryPeople | undefined, alias: "" | "e." = "", table = "events"): Source {
    const user = this.dialect.userColumn;
    if (!people || people.rows.length === 0)
      return { from: alias === "" ? table : `${table} e`, alias, user: `${alias}${user}`, joined: false };
    return {
      from: `${table} e LEFT JOIN people m ON m.id = e.${user}`,
      alias: "e.",
      user: people.persons ? `coalesce(m.person, e.${user})` : `e.${user}`,
      joined: true,
    };
  }

  /** The `people` CTE of a query with people (its rows bound as one parameter), or "". */
  private peopleCte(params: Params, people: QueryPeople | undefined): string {
    if (!people || people.rows.length === 0) return "";
    const ref = params.add(this.dialect.encodePeople(people.rows));
    params.people = true;
    // Not marked MATERIALIZED: Postgres materializes a CTE read more than once by itself, and
    // DuckDB was faster inlining it (1M events, 15K mapped ids: funnel 69 against 75 ms, retention
    // returns 82 against 96 ms, best of 9).
    return `people AS (${this.dialect.peopleRelation(ref)})`;
  }

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

  /** A person property as text: NULL for an id with no people row (its person has none). */
  private personText(params: Params, name: string, source: Source): string {
    if (!source.joined) return "CAST(NULL AS VARCHAR)";
    return this.dialect.propertyText("m.properties", params.add(this.dialect.propertyPathValue(name)));
  }

  private personNumber(params: Params, name: string, source: Source): string {
    if (!source.joined) return "CAST(NULL AS DOUBLE PRECISION)";
    return this.dialect.propertyNumber("m.properties", params.add(this.dialect.propertyPathValue(name)));
  }

  /** A breakdown's value: the event's property, or its person's. */
  private breakdownText(params: Params, q: TrendsQuery, source: Source): string {
    if (q.breakdown === undefined) return "CAST(NULL AS VARCHAR)";
    return q.breakdownType === "person"
      ? this.personText(params, q.breakdown, source)
      : this.propertyText(params, q.breakdown, source.alias);
  }

  private where(
    params: Params,
    projectId: string,
    opts: { fromMs?: number; toMs?: number; event?: string; filters: readonly Filter[]; distinctId?: string },
    source: Source,
  ): string {
    const alias = source.alias;
    const d = this.dialect;
    const col = (name: string) => `${alias}${name}`;
    const projectRef = params.add(projectId);
    const clauses = [`${col("project_id")} = ${d.uuid(projectRef)}`];
    if (opts.fromMs !== undefined)
      clauses.push(`${col("timestamp")} >= ${d.timestampFromMs(params.add(opts.fromMs))}`);
    if (opts.toMs !== undefined)
      clauses.push(`${col("timestamp")} < ${d.timestampFromMs(params.add(opts.toMs))}`);
    if (opts.event !== undefined) {
      const id = this.eventIds(opts.event);
      clauses.push(
        id === undefined
          ? `${col("event")} = ${params.add(opts.event)}`
          : `${col("eid")} = CAST(${params.add(id)} AS INTEGER)`,
      );
    }
    if (opts.distinctId !== undefined) {
      const bind = (value: unknown) => params.add(value);
      clauses.push(
        this.users.isUser?.(alias, projectRef, opts.distinctId, bind) ??
          `${col("distinct_id")} = ${params.add(opts.distinctId)}`,
      );
    }
    for (const filter of opts.filters) clauses.push(this.filter(params, filter, source));
    return clauses.join(" AND ");
  }

  private filter(params: Params, filter: Filter, source: Source): string {
    const person = isPersonFilter(filter);
    const text = () =>
      person
        ? this.personText(params, filter.property, source)
        : this.propertyText(params, filter.property, source.alias);
    const number = () =>
      person
        ? this.personNumber(params, filter.property, source)
        : this.propertyNumber(params, filter.property, source.alias);
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
  trends(projectId: string, q: TrendsQuery, people?: QueryPeople): SqlStatement {
    const d = this.dialect;
    const params = new Params();
    const counts = q.math === "total" && q.breakdown === undefined ? this.eventCounts(q) : undefined;
    if (counts) {
      // Hourly counts summed into buckets: people change no count, and with no breakdown there is
      // one series (10M events, total per day over 30 days: 77 ms from the events).
      const sql = `
        WITH g AS (
          SELECT ${d.truncate(q.interval, "hour")} AS bucket, CAST(sum(n) AS BIGINT) AS value
          FROM ${counts} WHERE ${this.rollupWhere(params, projectId, q, "hour")} GROUP BY 1
        )
        SELECT ${d.epochMs("bucket")} AS t, CAST(NULL AS VARCHAR) AS bv, value, CAST((SELECT sum(value) FROM g) AS BIGINT) AS total
        FROM g`;
      return params.statement(sql);
    }
    const userDays =
      q.math === "unique_users" && q.breakdown === undefined && q.interval !== "hour"
        ? this.userDays(q, people)
        : undefined;
    if (userDays) {
      // Each bucket's users united from its days, chunk by chunk; the range's users from the
      // buckets' (10M events, unique users per day over 30 days: 180 -> 9 ms in process).
      const { union, size } = userDays;
      const sql = `
        WITH b AS MATERIALIZED (
          SELECT ${d.truncate(q.interval, "day")} AS bucket, chunk, ${union("users")} AS users
          FROM ${userDays.relation} r WHERE ${this.rollupWhere(params, projectId, q, "day")} GROUP BY 1, 2
        ),
        g AS (SELECT bucket, CAST(sum(${size("users")}) AS BIGINT) AS value FROM b GROUP BY bucket),
        whole AS (SELECT CAST(sum(${size("users")}) AS BIGINT) AS total FROM (SELECT chunk, ${union("users")} AS users FROM b GROUP BY chunk) c)
        SELECT ${d.epochMs("bucket")} AS t, CAST(NULL AS VARCHAR) AS bv, value, (SELECT total FROM whole) AS total
        FROM g`;
      return params.statement(sql);
    }
    const cte = this.peopleCte(params, people);
    const source = this.source(people);
    const a = source.alias;
    const where = this.where(params, projectId, q, source);
    const bv = this.breakdownText(params, q, source);
    const user = d.userColumn;
    const selectUser = as(source.user, user);
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
    const base = `${cte === "" ? "" : `${cte},\n`}base AS (
        SELECT ${d.truncate(q.interval, `${a}timestamp`)} AS bucket, ${bv} AS bv, ${selectUser}
        FROM ${source.from} WHERE ${where}
      )`;
    const result = `SELECT ${d.epochMs("g.bucket")} AS t, g.bv AS bv, g.value AS value, top.total AS total`;
    const sets =
      q.math === "unique_users" && groups !== undefined ? this.users.userSets?.(user, groups) : undefined;
    if (sets) {
      // Each bucket's set of users, once; the range's users are the union of its buckets' sets
      // (10M events, unique users per day over 30 days: 303 -> 180 ms against a second count).
      const sql = `
      WITH ${base},
      s AS MATERIALIZED (SELECT bucket, bv, ${sets.aggregate} AS users FROM base GROUP BY bucket, bv),
      g AS (SELECT bucket, bv, ${sets.size("users")} AS value FROM s),
      top AS (
        SELECT bv, ${sets.size(sets.union("users"))} AS total FROM s GROUP BY bv
        ORDER BY total DESC, ${d.binaryOrder("bv")} ASC NULLS LAST LIMIT ${limit}
      )
      ${result} FROM g JOIN top ON g.bv IS NOT DISTINCT FROM top.bv`;
      return params.statement(sql);
    }
    const sql = `
      WITH ${base},
      -- One pass gives each (bucket, series) and each series' total over the range; the totals
      -- pick the top series. (A CTE read twice and joined back cost 2-5x this on 10M events.)
      g AS (
        SELECT bucket, bv, ${agg("")} AS value, GROUPING(bucket) AS is_total
        FROM base GROUP BY GROUPING SETS ((bucket, bv), (bv))
      ),
      top AS (
        SELECT bv, value AS total FROM g WHERE is_total = 1
        ORDER BY total DESC, ${d.binaryOrder("bv")} ASC NULLS LAST LIMIT ${limit}
      )
      ${result} FROM g JOIN top ON g.bv IS NOT DISTINCT FROM top.bv
      WHERE g.is_total = 0`;
    return params.statement(sql);
  }

  /** One row: c1..cN, the number of users reaching each step. */
  funnel(projectId: string, q: FunnelQuery, people?: QueryPeople): SqlStatement {
    const d = this.dialect;
    const params = new Params();
    const window = params.add(q.windowSeconds);
    const user = d.userColumn;
    const cte = this.peopleCte(params, people);
    const source = this.source(people, "e.");
    const ctes: string[] = cte === "" ? [] : [cte];
    let userGroups: SqlStatement["userGroups"];
    q.steps.forEach((step, i) => {
      const where = this.where(params, projectId, { ...q, event: step }, source);
      if (i === 0) {
        // Each user's first event of the step, and the end of its window, computed once.
        const first = this.firstByUser(where, source);
        if (first.byUser) userGroups = { projectId, event: step, fromMs: q.fromMs, toMs: q.toMs };
        ctes.push(
          `s0 AS MATERIALIZED (SELECT ${user}, t, ${d.addSeconds("t", window)} AS ends_at FROM (${first.sql}) f)`,
        );
        return;
      }
      // Same name as the previous step: the next occurrence must be strictly later.
      const after = step === q.steps[i - 1] ? ">" : ">=";
      const inWindow = `e.timestamp ${after} p.t AND e.timestamp <= p.ends_at`;
      // The window as a condition of the join on the user, or as a filter above it (windowFilter).
      const within = d.windowFilter ? "" : ` AND ${inWindow}`;
      const filtered = d.windowFilter ? ` AND ${d.windowFilter(inWindow)}` : "";
      const previous = `s${i - 1}`;
      if (!source.joined) {
        ctes.push(
          `s${i} AS MATERIALIZED (SELECT p.${user}, p.ends_at, min(e.timestamp) AS t FROM ${previous} p JOIN events e
            ON e.${user} = p.${user}${within}
            WHERE ${where}${filtered} GROUP BY p.${user}, p.ends_at)`,
        );
        return;
      }
      // A person's events are found by its ids: the person's own key and the ids mapped to it.
      // Events join on their own user column, never on an expression: Postgres has no statistics
      // for an expression, and a join on coalesce(...) made it sort both sides to disk (1M
      // events: 372 -> 1,290 ms; this form keeps its hash joins).
      const ids = people?.persons
        ? `(SELECT person, id FROM people WHERE id <> person UNION ALL SELECT ${user}, ${user} FROM ${previous}) x`
        : undefined;
      ctes.push(
        `s${i} AS MATERIALIZED (SELECT p.${user}, p.ends_at, min(e.timestamp) AS t FROM ${previous} p
          ${ids ? `JOIN ${ids} ON x.person = p.${user} JOIN events e ON e.${user} = x.id` : `JOIN events e ON e.${user} = p.${user}`}${within}
          LEFT JOIN people m ON m.id = e.${user}
          WHERE ${where}${filtered} GROUP BY p.${user}, p.ends_at)`,
      );
    });
    // Each step is read by the next and by its count: materialized, it runs once (DuckDB inlined it,
    // 10M events: 173 -> 151 ms; Postgres materializes such a CTE by itself).
    const counts = q.steps.map((_, i) => `(SELECT count(*) FROM s${i}) AS c${i}`).join(", ");
    const statement = params.statement(`WITH ${ctes.join(",\n")} SELECT ${counts}`);
    return userGroups ? { ...statement, userGroups } : statement;
  }

  /**
   * Rows (user column, t): each user's first event matching `where` (written for alias `e`), and
   * whether the dialect's event tables are grouped by the user key itself, so that
   * SqlStatement.userGroups applies (`byUser`; not when persons are counted).
   *
   * Where the engine keeps events in several tables (DuckDB: in order and late), the first holds
   * nearly all of them. DuckDB groups by a perfect hash table, an array indexed by the user key,
   * when its connection allows one as wide as the keys (SqlStatement.userGroups) and it knows
   * their range from the tables' statistics. An empty table has none, and a union with one loses
   * the range: 10M events, a funnel's first step of 1M events over 100K users, 41-46 ms through
   * the union view, 23-24 ms with the first table grouped on its own, below the union, and the
   * few users of the others joined to it, in process. The join rather than a second grouping of
   * the union: 5 ms less (84.6 -> 79.0 ms, whole funnel). When the others hold events, though,
   * the union keeps the range and grouping it at once spares that join: the whole funnel 69.7 ->
   * 60.9 ms (medians of 21 interleaved runs) on 10M events loaded in arrival order, 92K of them
   * late. The caller says which (UserStrategies.firstStepTables).
   */
  private firstByUser(where: string, source: Source): { sql: string; byUser: boolean } {
    const user = this.dialect.userColumn;
    const [main, ...others] = this.dialect.eventTables ?? [];
    const first = (from: string) =>
      `SELECT ${user}, min(timestamp) AS t FROM ${from} WHERE ${where} GROUP BY ${user}`;
    const together = {
      sql: `SELECT ${as(source.user, user)}, min(e.timestamp) AS t FROM ${source.from} WHERE ${where} GROUP BY ${source.user}`,
      byUser: true,
    };
    if (main === undefined || others.length === 0 || source.joined) return { ...together, byUser: false };
    if (this.users.firstStepTables === "together") return together;
    const rest = others.map((table) => `SELECT * FROM ${table}`).join(" UNION ALL ");
    return {
      sql: `SELECT coalesce(m.${user}, o.${user}) AS ${user}, least(m.t, o.t) AS t
        FROM (${first(`${main} e`)}) m FULL JOIN (${first(others.length === 1 ? `${others[0]} e` : `(${rest}) e`)}) o ON o.${user} = m.${user}`,
      byUser: true,
    };
  }

  /**
   * Cohort sizes and returns in one statement, the cohorts computed once. Rows: cohort (epoch ms),
   * period (epoch ms; NULL on a cohort's size row), users (the size, or the users returning).
   * 10M events, weekly over 90 days: 440 ms as two statements, 308 as one.
   */
  retention(
    projectId: string,
    q: RetentionQuery,
    returnsFromMs: number,
    returnsToMs: number,
    people?: QueryPeople,
  ): SqlStatement {
    const d = this.dialect;
    const params = new Params();
    const userDays = this.userDays(q, people);
    if (userDays)
      return this.retentionFromUserDays(params, userDays, projectId, q, returnsFromMs, returnsToMs);
    const { ctes, returnsByCohort } = this.retentionParts(
      params,
      projectId,
      q,
      returnsFromMs,
      returnsToMs,
      people,
      true,
    );
    const sql = `WITH ${ctes}
      SELECT ${d.epochMs("cohort")} AS cohort, CAST(NULL AS BIGINT) AS period, count(*) AS users FROM cohorts GROUP BY cohort
      UNION ALL
      ${returnsByCohort}`;
    return params.statement(sql);
  }

  /**
   * `retention` from the daily users: a user's cohort is the first period whose start-event set
   * holds it (the period's set less the union of the periods before it), and a cohort's returns in
   * a period are its set intersected with that period's return-event set. Chunk by chunk; 10M
   * events, weekly over 90 days: 218 -> 14 ms in process.
   */
  private retentionFromUserDays(
    params: Params,
    userDays: UserDayRollup,
    projectId: string,
    q: RetentionQuery,
    returnsFromMs: number,
    returnsToMs: number,
  ): SqlStatement {
    const d = this.dialect;
    const { union, size, intersect, minus } = userDays;
    const period = d.truncate(q.interval, "day");
    const starts = this.rollupWhere(params, projectId, { ...q, event: q.startEvent }, "day");
    const returns = this.rollupWhere(
      params,
      projectId,
      { fromMs: returnsFromMs, toMs: returnsToMs, event: q.returnEvent },
      "day",
    );
    const sql = `
      WITH starts AS (
        SELECT ${period} AS cohort, chunk, ${union("users")} AS users FROM ${userDays.relation} r WHERE ${starts} GROUP BY 1, 2
      ),
      cohorts AS MATERIALIZED (
        SELECT cohort, chunk, CASE WHEN earlier IS NULL THEN users ELSE ${minus("users", "earlier")} END AS users
        FROM (
          SELECT cohort, chunk, users,
            ${union("users")} OVER (PARTITION BY chunk ORDER BY cohort ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS earlier
          FROM starts
        ) s
      ),
      returns AS (
        SELECT ${period} AS period, chunk, ${union("users")} AS users FROM ${userDays.relation} r WHERE ${returns} GROUP BY 1, 2
      )
      SELECT ${d.epochMs("cohort")} AS cohort, CAST(NULL AS BIGINT) AS period, CAST(sum(${size("users")}) AS BIGINT) AS users
      FROM cohorts GROUP BY cohort
      UNION ALL
      SELECT ${d.epochMs("c.cohort")} AS cohort, ${d.epochMs("r.period")} AS period, CAST(sum(${size(intersect("c.users", "r.users"))}) AS BIGINT) AS users
      FROM cohorts c JOIN returns r ON r.chunk = c.chunk AND r.period >= c.cohort
      GROUP BY c.cohort, r.period`;
    return params.statement(sql);
  }

  /** Rows: cohort (epoch ms), size. */
  retentionCohorts(projectId: string, q: RetentionQuery, people?: QueryPeople): SqlStatement {
    const params = new Params();
    const sql = `WITH ${this.retentionFirsts(params, projectId, q, people)}
      SELECT ${this.dialect.epochMs("cohort")} AS cohort, count(*) AS size FROM cohorts GROUP BY cohort`;
    return params.statement(sql);
  }

  /** Rows: cohort (epoch ms), period (epoch ms), users. */
  retentionReturns(
    projectId: string,
    q: RetentionQuery,
    returnsFromMs: number,
    returnsToMs: number,
    people?: QueryPeople,
  ): SqlStatement {
    const params = new Params();
    const { ctes, returnsByCohort } = this.retentionParts(
      params,
      projectId,
      q,
      returnsFromMs,
      returnsToMs,
      people,
    );
    return params.statement(`WITH ${ctes} ${returnsByCohort}`);
  }

  /**
   * The CTEs `firsts`, `cohorts` and `returns` (each user's periods with a return event), and the
   * SELECT of the users returning by (cohort, period).
   */
  private retentionParts(
    params: Params,
    projectId: string,
    q: RetentionQuery,
    returnsFromMs: number,
    returnsToMs: number,
    people: QueryPeople | undefined,
    readTwice = false,
  ): { ctes: string; returnsByCohort: string } {
    const d = this.dialect;
    const firsts = this.retentionFirsts(params, projectId, q, people, readTwice);
    const source = this.source(people);
    const where = this.where(
      params,
      projectId,
      { fromMs: returnsFromMs, toMs: returnsToMs, event: q.returnEvent, filters: q.filters },
      source,
    );
    const user = d.userColumn;
    return {
      ctes: `${firsts},
      returns AS (SELECT DISTINCT ${as(source.user, user)}, ${d.truncate(q.interval, `${source.alias}timestamp`)} AS period FROM ${source.from} WHERE ${where})`,
      returnsByCohort: `SELECT ${d.epochMs("c.cohort")} AS cohort, ${d.epochMs("r.period")} AS period, count(*) AS users
      FROM cohorts c JOIN returns r ON r.${user} = c.${user} AND r.period >= c.cohort
      GROUP BY c.cohort, r.period`,
    };
  }

  /**
   * The CTEs `firsts` and `cohorts`, after the `people` CTE when the query has people; `cohorts`
   * materialized when the statement reads it twice.
   */
  private retentionFirsts(
    params: Params,
    projectId: string,
    q: RetentionQuery,
    people: QueryPeople | undefined,
    readTwice = false,
  ): string {
    const d = this.dialect;
    const cte = this.peopleCte(params, people);
    const source = this.source(people);
    const a = source.alias;
    const where = this.where(params, projectId, { ...q, event: q.startEvent }, source);
    const user = d.userColumn;
    const selectUser = as(source.user, user);
    return `${cte === "" ? "" : `${cte},\n`}firsts AS (SELECT ${selectUser}, min(${a}timestamp) AS first_ts FROM ${source.from} WHERE ${where} GROUP BY ${source.user}),
      cohorts AS ${readTwice ? "MATERIALIZED " : ""}(SELECT ${user}, ${d.truncate(q.interval, "first_ts")} AS cohort FROM firsts)`;
  }

  /** Rows: uuid, event, distinct_id, ts (epoch ms), properties (JSON text), received (epoch ms). */
  events(projectId: string, q: EventsQuery, people?: QueryPeople): SqlStatement {
    const d = this.dialect;
    const params = new Params();
    const cte = this.peopleCte(params, people);
    const source = this.source(people);
    const a = source.alias;
    let where = this.where(params, projectId, q, source);
    if (q.cursor) {
      const t = d.timestampFromMs(params.add(q.cursor.timestamp));
      const u = d.uuid(params.add(q.cursor.uuid));
      where += ` AND (${a}timestamp < ${t} OR (${a}timestamp = ${t} AND ${a}uuid < ${u}))`;
    }
    const limit = params.add(q.limit + 1);
    const page = (from: string, extra = "") =>
      `SELECT CAST(${a}uuid AS VARCHAR) AS uuid, ${as(`${a}event`, "event")}, ${as(`${a}distinct_id`, "distinct_id")}, ${d.epochMs(`${a}timestamp`)} AS ts,
        CAST(${a}properties AS VARCHAR) AS properties, ${d.epochMs(`${a}received_at`)} AS received${extra}
      FROM ${from} WHERE ${where} ORDER BY ${a}timestamp DESC, ${a}uuid DESC LIMIT ${limit}`;
    const parts = d.eventTables;
    if (parts === undefined) return params.statement(`${with_(cte)}${page(source.from)}`);
    // Each table's newest page, then the newest of those: a top-N over the union view read every
    // row (10M events: 24 -> 1,040 ms), a top-N over one table skips what cannot be in the page.
    const pages = parts
      .map(
        (table) =>
          `(${page(this.source(people, "", table).from, `, ${a}timestamp AS sort_ts, ${a}uuid AS sort_uuid`)})`,
      )
      .join(" UNION ALL ");
    const sql = `${with_(cte)}SELECT uuid, event, distinct_id, ts, properties, received FROM (${pages}) p
      ORDER BY sort_ts DESC, sort_uuid DESC LIMIT ${limit}`;
    return params.statement(sql);
  }

  /** Rows: event, count. */
  topEvents(projectId: string, q: TopEventsQuery, people?: QueryPeople): SqlStatement {
    const params = new Params();
    const counts = this.eventCounts(q);
    if (counts) {
      const sql = `SELECT event, CAST(sum(n) AS BIGINT) AS count FROM ${counts} WHERE ${this.rollupWhere(params, projectId, q, "hour")}
        GROUP BY event ORDER BY count DESC, ${this.dialect.binaryOrder("event")} ASC LIMIT ${params.add(q.limit)}`;
      return params.statement(sql);
    }
    const cte = this.peopleCte(params, people);
    const source = this.source(people);
    const where = this.where(params, projectId, q, source);
    const sql = `${with_(cte)}SELECT ${as(`${source.alias}event`, "event")}, count(*) AS count FROM ${source.from} WHERE ${where}
      GROUP BY ${source.alias}event ORDER BY count DESC, ${this.dialect.binaryOrder("event")} ASC LIMIT ${params.add(q.limit)}`;
    return params.statement(sql);
  }

  /** Rows: value, count. */
  topValues(projectId: string, q: TopValuesQuery, people?: QueryPeople): SqlStatement {
    const d = this.dialect;
    const params = new Params();
    const cte = this.peopleCte(params, people);
    const source = this.source(people);
    const where = this.where(params, projectId, q, source);
    const text = this.propertyText(params, q.property, source.alias);
    const sql = `${with_(cte)}SELECT ${text} AS value, count(*) AS count FROM ${source.from} WHERE ${where} AND ${text} IS NOT NULL
      GROUP BY 1 ORDER BY count DESC, ${d.binaryOrder("value")} ASC LIMIT ${params.add(q.limit)}`;
    return params.statement(sql);
  }

  /** One row: n, the project's link events (identity.ts): the marker of its links. */
  linkCount(projectId: string): SqlStatement {
    const params = new Params();
    const sql = `SELECT count(*) AS n FROM events
      WHERE project_id = ${this.dialect.uuid(params.add(projectId))} AND event IN (${LINK_EVENTS.map((e) => params.add(e)).join(", ")})`;
    return params.statement(sql);
  }

  /** Rows: distinct_id, event, anon ($anon_distinct_id as text), alias (as text). */
  links(projectId: string): SqlStatement {
    const d = this.dialect;
    const params = new Params();
    const anon = d.propertyText("properties", params.add(d.propertyPathValue("$anon_distinct_id")));
    const alias = d.propertyText("properties", params.add(d.propertyPathValue("alias")));
    const sql = `SELECT distinct_id, event, ${anon} AS anon, ${alias} AS alias FROM events
      WHERE project_id = ${d.uuid(params.add(projectId))} AND event IN (${LINK_EVENTS.map((e) => params.add(e)).join(", ")})`;
    return params.statement(sql);
  }

  /**
   * One row: n, the project's events whose JSON text holds `"$set` (every event carrying `$set` or
   * `$set_once`, and rarely another): the marker of its person properties.
   */
  propertyEventCount(projectId: string): SqlStatement {
    const params = new Params();
    const sql = `SELECT count(*) AS n FROM events
      WHERE project_id = ${this.dialect.uuid(params.add(projectId))} AND strpos(CAST(properties AS VARCHAR), ${params.add(SET_MARK)}) > 0`;
    return params.statement(sql);
  }

  /**
   * Rows: distinct_id, ts (epoch ms), uuid, received (epoch ms), set ($set as JSON text), set_once:
   * the project's property candidates, those received at or after `sinceMs` when given.
   */
  propertyEvents(projectId: string, sinceMs?: number): SqlStatement {
    const d = this.dialect;
    const params = new Params();
    // The text test first: a substring search is far cheaper than reading the JSON of every event.
    let where = `project_id = ${d.uuid(params.add(projectId))} AND strpos(CAST(properties AS VARCHAR), ${params.add(SET_MARK)}) > 0`;
    if (sinceMs !== undefined)
      where += ` AND received_at >= ${d.timestampFromMs(params.add(Math.floor(sinceMs)))}`;
    const set = d.propertyJson("properties", params.add(d.propertyPathValue("$set")));
    const setOnce = d.propertyJson("properties", params.add(d.propertyPathValue("$set_once")));
    const sql = `SELECT distinct_id, ${d.epochMs("timestamp")} AS ts, CAST(uuid AS VARCHAR) AS uuid,
        ${d.epochMs("received_at")} AS received, ${set} AS set, ${setOnce} AS set_once
      FROM events WHERE ${where}`;
    return params.statement(sql);
  }
}

const with_ = (cte: string): string => (cte === "" ? "" : `WITH ${cte} `);

/** `expr AS name`, or the column alone when it already has that name (the SQL of before identity). */
const as = (expr: string, name: string): string =>
  expr === name || expr.endsWith(`.${name}`) ? expr : `${expr} AS ${name}`;

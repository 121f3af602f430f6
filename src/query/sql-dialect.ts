import type { PeopleRow } from "./identity.js";

/**
 * What differs between the SQL engines that share src/query/sql-builder.ts (DuckDB, Postgres).
 * Every method returns SQL text around a placeholder reference such as `$3`; values are always
 * bound as parameters, never spliced.
 *
 * The events table both dialects read has these columns: project_id (uuid), uuid (uuid),
 * event (text), distinct_id (text), timestamp (UTC timestamp), properties (JSON), received_at.
 */
export interface SqlDialect {
  /**
   * The column that identifies a user in distinct counts and in the joins of funnels and
   * retention: `distinct_id`, or an integer standing for it one to one (DuckDB's `uid`).
   */
  userColumn: string;
  /** The value to bind for a property name (a JSON pointer for DuckDB, the key for Postgres). */
  propertyPathValue(name: string): string;
  /** The property of the JSON column as text, NULL when absent or JSON null. */
  propertyText(column: string, pathRef: string): string;
  /** The property as a double when it is a JSON number, else NULL. */
  propertyNumber(column: string, pathRef: string): string;
  /** A timestamp from a bound epoch-millisecond number. */
  timestampFromMs(ref: string): string;
  /** Epoch milliseconds (bigint) of a timestamp expression. */
  epochMs(expr: string): string;
  /** The start of the UTC hour, day or ISO week (Monday) holding the timestamp. */
  truncate(unit: "hour" | "day" | "week", expr: string): string;
  /** A timestamp expression plus a bound number of seconds. */
  addSeconds(expr: string, secondsRef: string): string;
  /** A bound uuid string as the engine's uuid type. */
  uuid(ref: string): string;
  /** A text expression in byte order, for deterministic ties across engines. */
  binaryOrder(expr: string): string;
  /** The property of the JSON column as JSON text (an object stays an object), NULL when absent. */
  propertyJson(column: string, pathRef: string): string;
  /**
   * A query's people (identity.ts) as one bound text: `encodePeople` writes it, `peopleRelation`
   * reads it back as a relation of (id, person, properties JSON), id and person in the type of
   * `userColumn`.
   */
  encodePeople(rows: readonly PeopleRow[]): string;
  peopleRelation(ref: string): string;
  /**
   * A funnel step's time window (comparisons of the step's events with the previous step's
   * times), written so that it is checked as a filter above the join on the user rather than as
   * a condition of the join; absent, it is a condition of the join.
   */
  windowFilter?(condition: string): string;
  /**
   * The tables whose union `events` is, when the engine keeps events in several (DuckDB keeps
   * late events apart), the first holding nearly all of them: a page of newest events is read
   * from each and the pages merged, and a funnel's first step groups the first on its own.
   */
  eventTables?: readonly string[];
}

import type { SqlDialect } from "../../query/sql-dialect.js";

/**
 * Postgres for the shared SQL builder. Timestamps are timestamptz; truncation names UTC
 * explicitly (and sessions run in UTC too), so buckets match DuckDB's. Text is compared in the "C"
 * collation (byte order), as DuckDB's default binary collation does. Properties are `json`:
 * `->>` gives a value as text (NULL for absent or JSON null), and a number is only a number when
 * json_typeof says so, as DuckDB's json_type does.
 */
export const postgresDialect: SqlDialect = {
  userColumn: "distinct_id",
  propertyPathValue: (name) => name,
  propertyText: (column, path) => `((${column} ->> ${path}::text) COLLATE "C")`,
  propertyNumber: (column, path) =>
    `(CASE WHEN json_typeof(${column} -> ${path}::text) = 'number' THEN (${column} ->> ${path}::text)::double precision END)`,
  timestampFromMs: (ref) =>
    `(timestamptz '1970-01-01 00:00:00+00' + (${ref})::bigint * interval '1 millisecond')`,
  epochMs: (expr) => `floor(extract(epoch from ${expr}) * 1000)::bigint`,
  truncate: (unit, expr) => `date_trunc('${unit}', ${expr}, 'UTC')`,
  addSeconds: (expr, ref) => `(${expr} + (${ref})::bigint * interval '1 second')`,
  uuid: (ref) => `(${ref})::uuid`,
  // Every text that is ordered (event, property values) is already in the "C" collation, byte
  // order: the events columns are declared so and propertyText says so. Adding COLLATE here would
  // break ORDER BY on an output alias, which Postgres allows only bare.
  binaryOrder: (expr) => expr,
  propertyJson: (column, path) => `(${column} -> ${path}::text)::text`,
  // One JSON array; ids compare in "C", as the events columns do.
  encodePeople: (rows) =>
    JSON.stringify(rows.map((row) => ({ i: row.id, p: row.person, props: row.properties }))),
  peopleRelation: (ref) =>
    `SELECT j.i COLLATE "C" AS id, j.p COLLATE "C" AS person, j.props AS properties
     FROM json_to_recordset(${ref}::json) AS j(i text, p text, props json)`,
};

import type { SqlDialect } from "../../query/sql-dialect.js";

/** JSON pointer (RFC 6901) for a top-level key: no name can escape into another path. */
export function jsonPointer(name: string): string {
  return `/${name.replaceAll("~", "~0").replaceAll("/", "~1")}`;
}

export const duckDbDialect: SqlDialect = {
  // Integers from the distinct_ids dictionary: distinct counts and joins on them cost about half
  // of those on the strings (duckdb.schema.ts).
  userColumn: "uid",
  propertyPathValue: jsonPointer,
  propertyText: (column, path) => `json_extract_string(${column}, ${path})`,
  propertyNumber: (column, path) =>
    `(CASE WHEN json_type(${column}, ${path}) IN ('BIGINT', 'UBIGINT', 'DOUBLE', 'HUGEINT')
      THEN CAST(json_extract_string(${column}, ${path}) AS DOUBLE) END)`,
  timestampFromMs: (ref) => `epoch_ms(CAST(${ref} AS BIGINT))`,
  epochMs: (expr) => `epoch_ms(${expr})`,
  truncate: (unit, expr) => `date_trunc('${unit}', ${expr})`,
  addSeconds: (expr, ref) => `(${expr} + to_seconds(CAST(${ref} AS BIGINT)))`,
  uuid: (ref) => `CAST(${ref} AS UUID)`,
  binaryOrder: (expr) => expr,
};

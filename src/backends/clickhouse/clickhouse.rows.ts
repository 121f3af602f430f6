import type { StoredEvent } from "../../core/event.js";
import { wellFormed } from "../../query/clickhouse-literal.js";

/** One row of the ClickHouse `events` table, as JSONEachRow sends it. */
export interface ClickHouseEventRow {
  project_id: string;
  uuid: string;
  event: string;
  distinct_id: string;
  ts: number;
  received_at: number;
  properties: string;
  prop_keys: string[];
  prop_values: string[];
  num_keys: string[];
  num_values: number[];
}

/**
 * Properties are unpacked at write time into parallel arrays, because ClickHouse 18.16 has no
 * JSONExtract and its visitParam* functions match a key at any nesting level and only when the key
 * is written without escapes. The arrays give every query the semantics of the other stores:
 * - `prop_values[i]` is the property as text, as DuckDB's json_extract_string and Postgres `->>`
 *   give it: a string as is, anything else as its JSON text. A JSON null is absent, as there.
 * - `num_values[i]` holds the properties whose JSON type is number (for `gt`/`lt`).
 * Lone surrogates become U+FFFD, as clickhouseLiteral writes them, so filters match.
 */
export function toClickHouseRow(e: StoredEvent): ClickHouseEventRow {
  const propKeys: string[] = [];
  const propValues: string[] = [];
  const numKeys: string[] = [];
  const numValues: number[] = [];
  let parsed: unknown;
  try {
    parsed = JSON.parse(e.properties);
  } catch {
    parsed = {};
  }
  if (parsed !== null && typeof parsed === "object" && !Array.isArray(parsed)) {
    for (const [key, value] of Object.entries(parsed)) {
      if (value === null || value === undefined) continue;
      const name = wellFormed(key);
      propKeys.push(name);
      propValues.push(typeof value === "string" ? wellFormed(value) : wellFormed(JSON.stringify(value)));
      if (typeof value === "number" && Number.isFinite(value)) {
        numKeys.push(name);
        numValues.push(value);
      }
    }
  }
  return {
    project_id: e.projectId.toLowerCase(),
    uuid: e.uuid.toLowerCase(),
    event: wellFormed(e.event),
    distinct_id: wellFormed(e.distinctId),
    ts: e.timestamp,
    received_at: e.receivedAt,
    properties: wellFormed(e.properties),
    prop_keys: propKeys,
    prop_values: propValues,
    num_keys: numKeys,
    num_values: numValues,
  };
}

import type { EventSink } from "../../pipeline/event-sink.js";
import type { AnalyticsStore } from "../../pipeline/event-store.js";
import { ClickHouseAnalyticsStore } from "./clickhouse.analytics-store.js";
import { ClickHouseDatabase, type ClickHouseOptions } from "./clickhouse.database.js";
import { ClickHouseEventSink } from "./clickhouse.event-sink.js";

export interface ClickHouseParts {
  /** The sink role's writer. */
  sink: EventSink;
  /** What the query API reads in the cdc pipeline. */
  analytics: AnalyticsStore;
}

/**
 * The ClickHouse parts of the cdc pipeline over one shared connection. Each part has the usual
 * lifecycle; start either or both (the first start connects and applies the schema, the last
 * close releases the connection), so a process running only the api role or only the sink role
 * starts just the part it uses.
 */
export function createClickHouseParts(options: ClickHouseOptions): ClickHouseParts {
  const db = new ClickHouseDatabase(options);
  return { sink: new ClickHouseEventSink(db), analytics: new ClickHouseAnalyticsStore(db) };
}

/** The property names of TIDEMARK_CLICKHOUSE_PROPERTY_COLUMNS (comma-separated; blanks ignored). */
export function propertyColumnNames(setting: string): string[] {
  return setting
    .split(",")
    .map((name) => name.trim())
    .filter((name) => name !== "");
}

/**
 * The ClickHouse schema. Every statement is idempotent (`IF NOT EXISTS`) and runs at each start, so
 * concurrent starts cannot race. A change to a released table is a new statement appended here
 * (an `ALTER TABLE ... ADD COLUMN IF NOT EXISTS`), never an edit of one below.
 *
 * `events`, one row per stored event (see README.md beside this file for the measurements):
 * - ReplacingMergeTree ORDER BY (project_id, event, ts, uuid): a replayed event has the same key
 *   (its row comes from the store of record), so background merges fold any copy that slipped past
 *   the sink's insert-time check (two sinks on one Kafka partition during a rebalance). Answers
 *   never rely on merges: the sink does not write a (project, uuid) the table already holds.
 * - The key leads with project and event because every query is per project and most name an
 *   event; ts after it lets ClickHouse skip granules outside the time range for each event name.
 * - index_granularity 1024 (default 8192): the sink's duplicate lookup reads whole granules around
 *   each time range it names, so smaller granules read fewer rows; a 30-day trends scan on 1M rows
 *   was no slower than with 8192 (A/B on the same machine, same data).
 * - PARTITION BY month of the event time: old months can be dropped whole; a project delete is a
 *   mutation (ALTER DELETE), which rewrites only the parts holding the project.
 * - `ts`/`received_at` are epoch milliseconds (Int64): 18.16 has no DateTime64, and integer
 *   buckets are what the builder computes anyway.
 * - Properties are kept as JSON text for the events query and unpacked into key/value arrays for
 *   filters, breakdowns and top values (see clickhouse.rows.ts).
 */
export function schemaStatements(database: string): string[] {
  return [
    `CREATE DATABASE IF NOT EXISTS ${database}`,
    `CREATE TABLE IF NOT EXISTS ${database}.events (
      project_id String,
      uuid String,
      event String,
      distinct_id String,
      ts Int64,
      received_at Int64,
      properties String,
      prop_keys Array(String),
      prop_values Array(String),
      num_keys Array(String),
      num_values Array(Float64)
    ) ENGINE = ReplacingMergeTree
    PARTITION BY toYYYYMM(toDateTime(intDiv(ts, 1000), 'UTC'))
    ORDER BY (project_id, event, ts, uuid)
    SETTINGS index_granularity = 1024`,
  ];
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

/** A database name is an identifier, written into DDL: only plain names are accepted. */
export function checkDatabaseName(name: string): string {
  if (!IDENTIFIER.test(name)) {
    throw new Error(`ClickHouse database name "${name}" must match ${IDENTIFIER.source}`);
  }
  return name;
}

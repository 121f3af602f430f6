import {
  ClickHouseQueryBuilder,
  type ClickHouseRollups,
  propertyColumn,
  UUID_TEXT,
} from "../../query/clickhouse-builder.js";

/**
 * The ClickHouse schema, applied at each start by `applySchema`. Statements are idempotent (`IF NOT
 * EXISTS`), so concurrent starts cannot race. A change to a released table is never an edit of a
 * statement below: a new column goes in ADDED_COLUMNS (18.16 has no `ADD COLUMN IF NOT EXISTS`, so
 * `applySchema` adds the columns `system.columns` does not list), a new table after the others.
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
    PARTITION BY ${EVENTS_PARTITION}
    ORDER BY (project_id, event, ts, uuid)
    SETTINGS index_granularity = 1024`,
    // Each project's newest event time, kept by ClickHouse as events are inserted: where the newest
    // events are, without scanning the project's times (clickhouse-builder.ts, events). A lower
    // bound is enough there, so rows the view missed (written before it existed, and filled in by
    // applySchema) and rows deleted since never change an answer.
    `CREATE TABLE IF NOT EXISTS ${database}.events_newest (
      project_id String,
      newest AggregateFunction(max, Int64)
    ) ENGINE = AggregatingMergeTree ORDER BY project_id`,
    `CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.events_newest_view TO ${database}.events_newest
      AS SELECT project_id, maxState(ts) AS newest FROM ${database}.events GROUP BY project_id`,
    // Who was seen on each UTC day (`day` its start, epoch ms), of every event (`user_days`) and
    // of each event (`user_event_days`), kept by ClickHouse as events are inserted: unique users
    // per day or week and retention, with no filter or people, read them instead of the events
    // (clickhouse-builder.ts). The project is a UUID, 16 bytes, where `events` compares 36 bytes of
    // text on every row it reads. A row may appear more than once (each insert's block is grouped
    // alone, and the sink re-derives rows on a replay; see clickhouse.event-sink.ts): queries count
    // distinct users, and merges fold the copies.
    ...USER_ROLLUPS.flatMap((rollup) => [
      `CREATE TABLE IF NOT EXISTS ${database}.${rollup.table} (
      project UUID,${rollup.byEvent ? "\n      event String," : ""}
      day Int64,
      user_hash UInt64
    ) ENGINE = ReplacingMergeTree
    PARTITION BY toYYYYMM(toDateTime(intDiv(day, 1000), 'UTC'))
    ORDER BY (project, ${rollup.byEvent ? "event, " : ""}day, user_hash)`,
      `CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.${rollup.table}_view TO ${database}.${rollup.table}
      AS ${rollupSelect(rollup, `${database}.events`, "1")}`,
    ]),
    // One-time steps done on this database, by name (fillRollups records each rollup's fill).
    `CREATE TABLE IF NOT EXISTS ${database}.schema_steps (step String) ENGINE = MergeTree ORDER BY step`,
  ];
}

/** The daily users rollups (the builder's ClickHouseRollups names them). */
export const USER_ROLLUPS: readonly { table: string; byEvent: boolean }[] = [
  { table: "user_days", byEvent: false },
  { table: "user_event_days", byEvent: true },
];

/** The rollups' tables in `database`, as the builder reads them. */
export function rollupsOf(database: string): ClickHouseRollups {
  return { userDays: `${database}.user_days`, userEventDays: `${database}.user_event_days` };
}

/**
 * The rows of a daily users rollup for the events of `table` matching `where`. Project ids are
 * UUIDs everywhere Tidemark creates them; an id that is not one (written by hand) gets no rows,
 * rather than failing the insert, and the builder never reads the rollups for it.
 */
export function rollupSelect(rollup: { byEvent: boolean }, table: string, where: string): string {
  const event = rollup.byEvent ? "event, " : "";
  return `SELECT toUUID(project_id) AS project, ${event}${ClickHouseQueryBuilder.bucket("day", "ts")} AS day,
        cityHash64(distinct_id) AS user_hash
      FROM ${table} WHERE match(project_id, '${UUID_TEXT.source}') AND (${where})
      GROUP BY project_id, ${event}day, user_hash`;
}

/** The month of an event's time, `events`' partition key. */
const EVENTS_PARTITION = "toYYYYMM(toDateTime(intDiv(ts, 1000), 'UTC'))";

/**
 * Columns added to `events` after its first release, in order. MATERIALIZED: ClickHouse computes
 * them at insert, so nothing that writes events names them; in parts written before the column
 * existed it computes them when read, until a merge writes them.
 */
export const ADDED_COLUMNS: readonly { name: string; type: string }[] = [
  // The user as a 64-bit hash: grouping and exact distinct counts on an integer instead of text.
  // 10M events, 30 days, P50: unique users per day 496-539 -> 347-399 ms (benchmarks/README.md).
  // Two ids of one project with the same hash would count as one user: with a million users in a
  // project, the chance that any two share one is 3 in 100 million (ClickHouse's own uniqExact of
  // text keeps 128-bit hashes of it). Queries that read persons still group the text.
  { name: "user_hash", type: "UInt64 MATERIALIZED cityHash64(distinct_id)" },
];

/** What applySchema needs of a ClickHouse: the server's client, or chdb in the tests. */
export interface SchemaTarget {
  command(sql: string): Promise<void>;
  query(sql: string): Promise<Record<string, unknown>[]>;
}

/**
 * Creates what is missing and adds the missing columns (ADDED_COLUMNS, then one per name of
 * `propertyColumns`, TIDEMARK_CLICKHOUSE_PROPERTY_COLUMNS), then fills `events_newest` when this
 * start created it (the daily users rollups are filled apart: fillRollups). Two processes starting
 * at once may both add a column: the second's "already exists" is success. A property column is
 * never dropped (a name left out of the setting keeps its column, unread).
 */
export async function applySchema(
  target: SchemaTarget,
  database: string,
  propertyColumns: readonly string[] = [],
): Promise<void> {
  const [before] = await target.query(
    `SELECT count() AS n FROM system.tables WHERE database = '${database}' AND name = 'events_newest'`,
  );
  for (const statement of schemaStatements(database)) await target.command(statement);
  const present = new Set(
    (
      await target.query(
        `SELECT name FROM system.columns WHERE database = '${database}' AND table = 'events'`,
      )
    ).map((row) => String(row.name)),
  );
  const properties = propertyColumns.map((name) => {
    const column = propertyColumn(name);
    return { name: column.name, type: column.definition };
  });
  for (const column of [...ADDED_COLUMNS, ...properties]) {
    if (present.has(column.name)) continue;
    try {
      await target.command(`ALTER TABLE ${database}.events ADD COLUMN ${column.name} ${column.type}`);
    } catch (error) {
      if (!/already exists/i.test(String((error as Error).message))) throw error;
    }
  }
  if (Number(before?.n) === 0)
    await target.command(
      `INSERT INTO ${database}.events_newest SELECT project_id, maxState(ts) FROM ${database}.events GROUP BY project_id`,
    );
}

/**
 * Writes the daily users rollups' rows for the events stored before their views existed, unless a
 * start did so already (`schema_steps` holds "<table> filled"); resolves once both are complete.
 * Run after applySchema (the views must exist before the fill reads the events, so no event is
 * missed between them). Every process that finds a step unrecorded fills (one that died half way,
 * or several at once, leave copies, which count once). One month at a time, bounding the GROUP
 * BY's memory: on the 18.16 server here, 10M events over 90 days in 10.9 s (`user_days`) and 15.6
 * s (`user_event_days`). `progress` hears of each rollup's start and end.
 */
export async function fillRollups(
  target: SchemaTarget,
  database: string,
  progress: (message: string, fields: Record<string, unknown>) => void = () => {},
): Promise<void> {
  for (const rollup of USER_ROLLUPS) {
    const step = `${rollup.table} filled`;
    const [done] = await target.query(
      `SELECT count() AS n FROM ${database}.schema_steps WHERE step = '${step}'`,
    );
    if (Number(done?.n) > 0) continue;
    const partitions = await target.query(
      `SELECT DISTINCT partition FROM system.parts WHERE database = '${database}' AND table = 'events' AND active ORDER BY partition`,
    );
    const started = Date.now();
    progress("filling a ClickHouse rollup from the stored events", {
      table: rollup.table,
      months: partitions.length,
    });
    for (const { partition } of partitions) {
      if (!/^\d+$/.test(String(partition)))
        throw new Error(`unexpected events partition ${String(partition)}`);
      await target.command(
        `INSERT INTO ${database}.${rollup.table} ${rollupSelect(rollup, `${database}.events`, `${EVENTS_PARTITION} = ${String(partition)}`)}`,
      );
    }
    await target.command(`INSERT INTO ${database}.schema_steps (step) VALUES ('${step}')`);
    progress("ClickHouse rollup filled", { table: rollup.table, ms: Date.now() - started });
  }
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

/** A database name is an identifier, written into DDL: only plain names are accepted. */
export function checkDatabaseName(name: string): string {
  if (!IDENTIFIER.test(name)) {
    throw new Error(`ClickHouse database name "${name}" must match ${IDENTIFIER.source}`);
  }
  return name;
}

import type { DuckDBConnection } from "@duckdb/node-api";
import { fillUserDays, USER_DAYS_TABLES } from "./duckdb.user-days.js";

/**
 * Properties a project may have as typed columns beside the JSON (duckdb.property-columns.ts).
 * Reading a key from JSON text costs ~75 ns a row, a typed column ~25× less. Beyond PRESET_SLOTS,
 * the columns are added to the event tables only when a project first needs slot N: every column,
 * even one left NULL, costs each commit (1,000-row commits: 40–50K rows/s with no slot columns,
 * 13–16K with 32).
 */
export const PROPERTY_SLOTS = 16;

/**
 * Slots whose columns the event tables have from the start (schema 11), so that the first
 * properties every project queries need no ALTER. Adding a column to a large table is cheap for the
 * commits (duckdb.property-columns.ts), but the checkpoint after it writes the new column for every
 * row, and DuckDB 1.5 makes commits wait for it: 1.1-2.8 s on 20M rows. On 100M events, single
 * events waited up to 16.0 s while three columns were added, 4.5 s with these made up front
 * (benchmarks/README.md). Empty columns cost each commit: a 760-event commit 1.0-2.7 ms more CPU
 * (4-12 %), batched ingest over HTTP 4-7 %. Two slots cost about half as much, but the bench's
 * three properties would then need an ALTER.
 */
export const PRESET_SLOTS = 4;

/** The text and number columns of property slot `slot`. */
export const slotColumns = (slot: number) => ({ text: `p${slot}_text`, number: `p${slot}_num` });

/** The newest schema version; a store at an older one is migrated forward when it opens. */
export const SCHEMA_VERSION = 11;

/**
 * The tables events are written to (schema 4): those within LATE_MS of their project's newest
 * and those older, kept apart until their day is sorted (schema 7, duckdb.day-order.ts). Every
 * reader reads the view `events`, their union.
 */
export const EVENT_TABLES = ["events_in_order", "events_late"] as const;
export type EventTable = (typeof EVENT_TABLES)[number];

/** The ALTERs that give `table` slot columns 0..PRESET_SLOTS-1 it lacks. */
function presetSlotColumns(table: EventTable): string {
  const alters: string[] = [];
  for (let slot = 0; slot < PRESET_SLOTS; slot++) {
    const { text, number } = slotColumns(slot);
    alters.push(
      `ALTER TABLE ${table} ADD COLUMN IF NOT EXISTS ${text} VARCHAR;`,
      `ALTER TABLE ${table} ADD COLUMN IF NOT EXISTS ${number} DOUBLE;`,
    );
  }
  return alters.join("\n");
}

/**
 * How far behind its project's newest event an event may be and still be written in order.
 * Backfills and clients that flush days later would otherwise widen the time range of every row
 * group they land in, and a range query reads every row group whose range overlaps it: with 1 %
 * of batches from anywhere in 90 days, a 30-day query read them all. Kept apart, 10M events in
 * arrival order answer a breakdown in 78.8 ms rather than 137.5, a numeric filter in 44.4 rather
 * than 159.4, a funnel in 182 rather than 250 (P99 over HTTP, benchmarks/README.md). A day keeps
 * mobile clients that flush hours later in order, and a row group of in-order events spans about
 * a day more than its arrival.
 */
export const LATE_MS = 86_400_000;

/**
 * The view every reader reads the events through. By name (schema 10): a property column is added
 * to `events_late` first and to `events_in_order` later, while commits go on into `events_late`
 * (duckdb.property-columns.ts), and in between the view gives NULL for the in-order rows. Its plans
 * are those of the view by position: on 20M rows, four queries' medians within 2 % of theirs.
 */
const EVENTS_VIEW = `CREATE OR REPLACE VIEW events AS
  SELECT * FROM events_in_order UNION ALL BY NAME SELECT * FROM events_late`;

const BASE = `
  CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMP NOT NULL);
  CREATE TABLE IF NOT EXISTS projects (
    id UUID PRIMARY KEY,
    name VARCHAR NOT NULL,
    plan VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL
  );
  CREATE TABLE IF NOT EXISTS project_keys (
    key_hash VARCHAR PRIMARY KEY,
    project_id UUID NOT NULL,
    kind VARCHAR NOT NULL
  );
  -- Append-only: an upsert costs several times a plain insert on every commit; readers sum,
  -- and compaction folds the rows now and then.
  CREATE TABLE IF NOT EXISTS ledger_entries (
    project_id UUID NOT NULL,
    outcome VARCHAR NOT NULL,
    n BIGINT NOT NULL
  );
`;

/**
 * Version 2: users as integers and the most-queried properties as typed columns.
 * - `distinct_ids` gives every (project, distinct_id) an integer `uid`; events carry it, so exact
 *   distinct counts and the joins of funnels and retention work on integers (measured on 10M
 *   events: unique users per day 396 → 267 ms, with everything else equal).
 * - `property_columns` says which property of a project lives in which slot, and whether the slot
 *   is filled for every stored event (`ready`); until then queries read the JSON.
 */
const V2_TABLES = `
  CREATE TABLE distinct_ids (
    project_id UUID NOT NULL,
    distinct_id VARCHAR NOT NULL,
    uid BIGINT NOT NULL,
    PRIMARY KEY (project_id, distinct_id)
  );
  CREATE TABLE property_columns (
    project_id UUID NOT NULL,
    name VARCHAR NOT NULL,
    slot INTEGER NOT NULL,
    ready BOOLEAN NOT NULL,
    PRIMARY KEY (project_id, name)
  );
`;

/** Version 2's events table, as that release created it: keyed by (project_id, uuid). */
const eventsV2 = (table: string) => `
  CREATE TABLE ${table} (
    project_id UUID NOT NULL,
    uuid UUID NOT NULL,
    event VARCHAR NOT NULL,
    distinct_id VARCHAR NOT NULL,
    uid BIGINT NOT NULL,
    timestamp TIMESTAMP NOT NULL,
    properties JSON NOT NULL,
    received_at TIMESTAMP NOT NULL,
    PRIMARY KEY (project_id, uuid)
  );
`;

/**
 * Version 3's events table: no key. A PRIMARY KEY made DuckDB hold an index of every key in memory
 * (about 45 bytes an event, never evicted), so RSS grew with the store and commits failed once the
 * index filled the memory cap; exactly-once is kept by duckdb.key-filter.ts instead.
 */
const eventsV3 = (table: string) => `
  CREATE TABLE ${table} (
    project_id UUID NOT NULL,
    uuid UUID NOT NULL,
    event VARCHAR NOT NULL,
    distinct_id VARCHAR NOT NULL,
    uid BIGINT NOT NULL,
    timestamp TIMESTAMP NOT NULL,
    properties JSON NOT NULL,
    received_at TIMESTAMP NOT NULL
  );
`;

/**
 * Version 3's rollup: events counted by (project, event, UTC hour), written in the transaction of
 * the events they count. Append-only like the ledger (a commit adds its own counts; compaction
 * folds the rows): trends of counts and top events read it instead of every event.
 */
const EVENT_COUNTS = `
  CREATE TABLE event_counts (
    project_id UUID NOT NULL,
    event VARCHAR NOT NULL,
    hour TIMESTAMP NOT NULL,
    n BIGINT NOT NULL
  );
`;

/** The counts of every stored event, for a store that had none. */
const FILL_EVENT_COUNTS = `INSERT INTO event_counts
  SELECT project_id, event, date_trunc('hour', timestamp), count(*) FROM events GROUP BY ALL`;

/** What a migration logs while it runs: a store of 10M events takes tens of seconds to migrate. */
export type MigrationProgress = (message: string, details: Record<string, unknown>) => void;

async function count(connection: DuckDBConnection, sql: string): Promise<number> {
  const reader = await connection.runAndReadAll(sql);
  const [[n = 0n] = []] = reader.getRowsJS() as [bigint][];
  return Number(n);
}

/**
 * From version 1: numbers every (project, distinct_id), then rewrites the events with their uid,
 * sorted by (project, time) so that time ranges skip row groups. DuckDB
 * does not let one transaction both alter a table and write to it, so the table is rebuilt rather
 * than altered. All in one transaction: a crash leaves version 1 intact.
 */
async function migrateToV2(connection: DuckDBConnection, progress: MigrationProgress): Promise<void> {
  const events = await count(connection, "SELECT count(*) FROM events");
  progress("migrating the store to schema 2 (integer user ids, property columns)", { events });
  const started = performance.now();
  await connection.run(V2_TABLES);
  await connection.run(`INSERT INTO distinct_ids
    SELECT project_id, distinct_id, row_number() OVER (ORDER BY project_id, distinct_id)
    FROM (SELECT DISTINCT project_id, distinct_id FROM events)`);
  await connection.run(eventsV2("events_v2"));
  await connection.run(`INSERT INTO events_v2 (project_id, uuid, event, distinct_id, uid, timestamp, properties, received_at)
    SELECT e.project_id, e.uuid, e.event, e.distinct_id, d.uid, e.timestamp, e.properties, e.received_at
    FROM events e JOIN distinct_ids d ON d.project_id = e.project_id AND d.distinct_id = e.distinct_id
    ORDER BY e.project_id, e.timestamp`);
  await connection.run("DROP TABLE events");
  await connection.run("ALTER TABLE events_v2 RENAME TO events");
  progress("store migrated to schema 2", {
    events,
    users: await count(connection, "SELECT count(*) FROM distinct_ids"),
    took_ms: Math.round(performance.now() - started),
  });
}

/**
 * From version 2: rebuilds the events table without its (project_id, uuid) key, keeping every
 * column (the property slots too) and sorting by (project, time) (DuckDB cannot drop a key in
 * place); then counts the events by hour into `event_counts`.
 */
async function migrateToV3(connection: DuckDBConnection, progress: MigrationProgress): Promise<void> {
  const events = await count(connection, "SELECT count(*) FROM events");
  progress("migrating the store to schema 3 (events without a key index, hourly counts)", { events });
  const started = performance.now();
  const columns = await columnDefinitions(connection, "events");
  await connection.run(`CREATE TABLE events_v3 (${columns})`);
  await connection.run("INSERT INTO events_v3 SELECT * FROM events ORDER BY project_id, timestamp");
  await connection.run("DROP TABLE events");
  await connection.run("ALTER TABLE events_v3 RENAME TO events");
  await connection.run(EVENT_COUNTS);
  await connection.run(FILL_EVENT_COUNTS);
  progress("store migrated to schema 3", { events, took_ms: Math.round(performance.now() - started) });
}

/**
 * From version 3: adds the users of each (project, event, day) as bitmaps (duckdb.user-days.ts),
 * and keeps late events apart: the events table becomes `events_in_order`, beside an empty
 * `events_late` with the same columns, and `events` the view of both. The stored events are sorted
 * since version 3, so they all stay in order.
 */
async function migrateToV4(connection: DuckDBConnection, progress: MigrationProgress): Promise<void> {
  const events = await count(connection, "SELECT count(*) FROM events");
  progress("migrating the store to schema 4 (daily users as bitmaps, late events apart)", { events });
  const started = performance.now();
  await connection.run(USER_DAYS_TABLES);
  await fillUserDays(connection);
  const columns = await columnDefinitions(connection, "events");
  await connection.run("ALTER TABLE events RENAME TO events_in_order");
  await connection.run(`CREATE TABLE events_late (${columns})`);
  await connection.run(EVENTS_VIEW);
  progress("store migrated to schema 4", { events, took_ms: Math.round(performance.now() - started) });
}

/**
 * Version 5: where each project's days of in-order events sorted by event end
 * (duckdb.day-order.ts): every day before `until` is sorted, or too small to gain from it.
 */
const SORTED_UNTIL = `CREATE TABLE sorted_until (
  project_id UUID PRIMARY KEY,
  until TIMESTAMP NOT NULL
)`;

/**
 * From version 4: adds `sorted_until`, empty. The stored days are sorted in the background after
 * the store opens, as days that become final are.
 */
async function migrateToV5(connection: DuckDBConnection, progress: MigrationProgress): Promise<void> {
  progress("migrating the store to schema 5 (days sorted by event)", {});
  await connection.run(SORTED_UNTIL);
}

/**
 * Schema 6 writes row groups of ROW_GROUP_ROWS rows (duckdb.database.ts), but the rows already
 * stored keep theirs until they are rewritten: the watermarks are forgotten, so the background
 * sorts every project's final days again, into the smaller groups (about 5 µs an event, once).
 */
async function migrateToV6(connection: DuckDBConnection, progress: MigrationProgress): Promise<void> {
  progress(
    "migrating the store to schema 6 (smaller row groups; final days rewritten in the background)",
    {},
  );
  await connection.run("DELETE FROM sorted_until");
}

/** A table's column definitions, as CREATE TABLE takes them (names, types, NOT NULL). */
async function columnDefinitions(connection: DuckDBConnection, table: string): Promise<string> {
  const reader = await connection.runAndReadAll(
    `SELECT column_name, data_type, is_nullable FROM duckdb_columns()
     WHERE schema_name = 'main' AND table_name = $1 ORDER BY column_index`,
    [table],
  );
  return (reader.getRowsJS() as [string, string, boolean][])
    .map(([name, type, nullable]) => `"${name.replaceAll('"', '""')}" ${type}${nullable ? "" : " NOT NULL"}`)
    .join(", ");
}

/**
 * Schema 7 folds a day's late events into it when the day is sorted (duckdb.day-order.ts), but
 * the days sorted before kept theirs apart: the watermarks are forgotten again, so the background
 * sorts every final day once more, with its late events.
 */
async function migrateToV7(connection: DuckDBConnection, progress: MigrationProgress): Promise<void> {
  progress("migrating the store to schema 7 (late events folded into their days in the background)", {});
  await connection.run("DELETE FROM sorted_until");
}

/**
 * Schema 8 reads a project's accepted events from its hourly counts, which every commit writes
 * with its events, instead of a ledger row each commit also wrote: the ledger's `accepted` rows
 * go (the counts already hold every stored event, since schema 3).
 */
async function migrateToV8(connection: DuckDBConnection, progress: MigrationProgress): Promise<void> {
  progress("migrating the store to schema 8 (accepted events counted from the hourly counts)", {});
  await connection.run("DELETE FROM ledger_entries WHERE outcome = 'accepted'");
}

/**
 * Schema 9: event names as integers. `event_names` numbers every (project, event) with an `eid`,
 * which each commit writes beside the name (duckdb.dictionary.ts), and queries filter by it: DuckDB
 * compares an integer column faster than text, whose statistics keep only a prefix (a funnel's
 * first step on 10M events: its scan 13.6 → 8.9 ms, its grouping 16.0 → 10.5 ms, in process).
 * `event_ids_pending` lists the projects whose stored events may still lack their `eid`; queries
 * of those filter by name until the background fill (duckdb.event-ids.ts) has written every one.
 */
const EVENT_IDS = `
  CREATE TABLE event_names (
    project_id UUID NOT NULL,
    event VARCHAR NOT NULL,
    eid INTEGER NOT NULL,
    PRIMARY KEY (project_id, event)
  );
  CREATE TABLE event_ids_pending (project_id UUID PRIMARY KEY);
  ${EVENT_TABLES.map((table) => `ALTER TABLE ${table} ADD COLUMN eid INTEGER;`).join("\n  ")}
`;

/**
 * From version 8: numbers the stored event names and adds the `eid` column, empty; every project
 * with events is pending, and its events are filled in the background after the store opens: a
 * start waits for the numbering (587 ms on a store of 10M events) but not for a rewrite of every
 * event (1.9 s for those 10M, and it grows with the store).
 */
async function migrateToV9(connection: DuckDBConnection, progress: MigrationProgress): Promise<void> {
  progress("migrating the store to schema 9 (event names as integers; filled in the background)", {});
  const started = performance.now();
  await connection.run(EVENT_IDS);
  await connection.run(`INSERT INTO event_names
    SELECT project_id, event, row_number() OVER (ORDER BY project_id, event)
    FROM (SELECT DISTINCT project_id, event FROM events)`);
  await connection.run("INSERT INTO event_ids_pending SELECT DISTINCT project_id FROM event_names");
  progress("store migrated to schema 9", {
    event_names: await count(connection, "SELECT count(*) FROM event_names"),
    took_ms: Math.round(performance.now() - started),
  });
}

/**
 * Schema 10: the view `events` unites its tables by name, so that a property column may be added to
 * one table while the other does not have it yet (EVENTS_VIEW).
 */
async function migrateToV10(connection: DuckDBConnection, progress: MigrationProgress): Promise<void> {
  progress("migrating the store to schema 10 (the events view by column name)", {});
  await connection.run(EVENTS_VIEW);
}

/**
 * From version 10: gives both event tables the columns of the PRESET_SLOTS first slots (a store
 * whose properties were queried has some already). The ALTER of a large table takes seconds, once,
 * at the start (a slot's two columns took 0.5-0.8 s on 10M events, 8.6-13.2 s on 100M), and the
 * CHECKPOINT after the migrations writes them.
 */
async function migrateToV11(connection: DuckDBConnection, progress: MigrationProgress): Promise<void> {
  const events = await count(connection, "SELECT count(*) FROM events");
  progress("migrating the store to schema 11 (the first property columns made up front)", {
    events,
    slots: PRESET_SLOTS,
  });
  const started = performance.now();
  for (const table of EVENT_TABLES) await connection.run(presetSlotColumns(table));
  progress("store migrated to schema 11", { events, took_ms: Math.round(performance.now() - started) });
}

const MIGRATIONS: {
  version: number;
  up(connection: DuckDBConnection, progress: MigrationProgress): Promise<void>;
}[] = [
  { version: 2, up: migrateToV2 },
  { version: 3, up: migrateToV3 },
  { version: 4, up: migrateToV4 },
  { version: 5, up: migrateToV5 },
  { version: 6, up: migrateToV6 },
  { version: 7, up: migrateToV7 },
  { version: 8, up: migrateToV8 },
  { version: 9, up: migrateToV9 },
  { version: 10, up: migrateToV10 },
  { version: 11, up: migrateToV11 },
];

/**
 * Creates the schema in a new store, or brings an older store forward one version at a time, each
 * in its own transaction. A store newer than this build is refused rather than misread.
 */
export async function migrate(connection: DuckDBConnection, progress: MigrationProgress): Promise<void> {
  await connection.run(BASE);
  const hasEvents =
    (await count(
      connection,
      "SELECT count(*) FROM duckdb_tables() WHERE table_name IN ('events', 'events_in_order') AND schema_name = 'main'",
    )) > 0;
  if (!hasEvents) {
    await connection.run("BEGIN TRANSACTION");
    for (const table of EVENT_TABLES) await connection.run(eventsV3(table));
    await connection.run(EVENTS_VIEW);
    await connection.run(V2_TABLES);
    await connection.run(EVENT_COUNTS);
    await connection.run(USER_DAYS_TABLES);
    await connection.run(SORTED_UNTIL);
    await connection.run(EVENT_IDS);
    for (const table of EVENT_TABLES) await connection.run(presetSlotColumns(table));
    for (let version = 1; version <= SCHEMA_VERSION; version++)
      await connection.run(`INSERT OR IGNORE INTO schema_migrations VALUES (${version}, now())`);
    await connection.run("COMMIT");
    return;
  }
  // Stores written before the table existed are version 1.
  await connection.run("INSERT OR IGNORE INTO schema_migrations VALUES (1, now())");
  const current = await count(connection, "SELECT max(version) FROM schema_migrations");
  if (current > SCHEMA_VERSION)
    throw new Error(
      `the store is at schema version ${current}, newer than this Tidemark (${SCHEMA_VERSION}): run the newer version`,
    );
  let migrated = false;
  for (const migration of MIGRATIONS) {
    if (migration.version <= current) continue;
    await connection.run("BEGIN TRANSACTION");
    try {
      await migration.up(connection, progress);
      await connection.run(`INSERT INTO schema_migrations VALUES (${migration.version}, now())`);
      await connection.run("COMMIT");
      migrated = true;
    } catch (error) {
      await connection.run("ROLLBACK").catch(() => undefined);
      throw error;
    }
  }
  // A column added to a table whose last row group is larger than ROW_GROUP_ROWS (stores before
  // schema 6 wrote DuckDB's default groups) must be checkpointed before rows are appended: DuckDB
  // 1.5 otherwise fails the append with "Could not find node in column segment tree" and
  // invalidates the database. Nothing else runs while the store opens.
  if (migrated) await connection.run("CHECKPOINT");
}

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import {
  copyFileSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { type DuckDBConnection, DuckDBInstance, type DuckDBValue } from "@duckdb/node-api";
import {
  DuckDbDatabase,
  hasOversizedRowGroups,
  ROW_GROUP_ROWS,
} from "../../src/backends/embedded/duckdb.database.js";
import { DAY_MS, DayOrder, sortedDaysEnd } from "../../src/backends/embedded/duckdb.day-order.js";
import { duckDbDialect } from "../../src/backends/embedded/duckdb.dialect.js";
import { DuckDbEventStore } from "../../src/backends/embedded/duckdb.event-store.js";
import type { KeyFilterOptions } from "../../src/backends/embedded/duckdb.key-filter.js";
import { LATE_MS, PRESET_SLOTS, SCHEMA_VERSION } from "../../src/backends/embedded/duckdb.schema.js";
import { CHUNK_BITS, USER_DAYS_ROLLUP } from "../../src/backends/embedded/duckdb.user-days.js";
import type { WritePriority } from "../../src/backends/embedded/duckdb.write-queue.js";
import type { StoredEvent } from "../../src/core/event.js";
import type { Log } from "../../src/core/log.js";
import { type FunnelQuery, parseQuerySpec } from "../../src/query/spec.js";
import { SqlQueryBuilder, type SqlStatement } from "../../src/query/sql-builder.js";
import { type DataEvent, makeDataset, storedEvent } from "../conformance/dataset.js";
import { checkEventsQueries, queryCases } from "../conformance/query-cases.js";

/** One page of the events query, as checkEventsQueries reads it. */
interface EventsPage {
  events: { uuid: string; properties: unknown; timestamp: string; distinct_id: string }[];
  next_cursor: string | null;
}

/**
 * The embedded store's layout: users as integers, properties as typed columns once queried, and
 * stores written by the previous version migrated forward. Every answer is checked against the
 * conformance suite's independently computed ones, before and after the columns are filled.
 */

/** Version 1's tables, frozen exactly as that release created them (do not edit). */
const SCHEMA_V1 = `
  CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMP NOT NULL);
  CREATE TABLE IF NOT EXISTS projects (id UUID PRIMARY KEY, name VARCHAR NOT NULL, plan VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL);
  CREATE TABLE IF NOT EXISTS project_keys (key_hash VARCHAR PRIMARY KEY, project_id UUID NOT NULL, kind VARCHAR NOT NULL);
  CREATE TABLE IF NOT EXISTS events (
    project_id UUID NOT NULL,
    uuid UUID NOT NULL,
    event VARCHAR NOT NULL,
    distinct_id VARCHAR NOT NULL,
    timestamp TIMESTAMP NOT NULL,
    properties JSON NOT NULL,
    received_at TIMESTAMP NOT NULL,
    PRIMARY KEY (project_id, uuid)
  );
  CREATE TABLE IF NOT EXISTS ledger_entries (project_id UUID NOT NULL, outcome VARCHAR NOT NULL, n BIGINT NOT NULL);
  INSERT OR IGNORE INTO schema_migrations VALUES (1, now());
`;

const stored = (projectId: string, e: DataEvent): StoredEvent => storedEvent(projectId, e, 0);

/** `n` new events of one project, one user, sent now: what the key tests need and no more. */
const plainEvents = (projectId: string, n: number): StoredEvent[] =>
  Array.from({ length: n }, () => ({
    projectId,
    uuid: randomUUID(),
    event: "e",
    distinctId: "u",
    timestamp: Date.now(),
    properties: "{}",
    receivedAt: Date.now(),
  }));

async function withStore(
  work: (store: DuckDbEventStore, db: DuckDbDatabase, dataDir: string) => Promise<void>,
  prepare?: (dataDir: string) => Promise<void>,
  options: {
    bitstringMargin?: number;
    keyFilter?: KeyFilterOptions;
    propertyFillSliceEvents?: number;
    eventIdFillSliceEvents?: number;
    log?: Log;
    sortedDayMinEvents?: number;
    whileCommitsDiverted?: () => Promise<void>;
    userDaysFoldRows?: number;
  } = {},
  openDatabase = (dataDir: string) => new DuckDbDatabase(dataDir, { memoryLimit: "256MB", threads: 1 }),
): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), "tidemark-layout-"));
  try {
    await prepare?.(dataDir);
    const db = openDatabase(dataDir);
    const store = new DuckDbEventStore(db, options);
    await store.start();
    try {
      await work(store, db, dataDir);
    } finally {
      await store.close();
    }
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/** Takes a store this build wrote back to schema 8: no event ids (schema 9 added them). */
async function withoutEventIds(connection: DuckDBConnection): Promise<void> {
  await connection.run("DROP TABLE event_names");
  await connection.run("DROP TABLE event_ids_pending");
  for (const table of ["events_in_order", "events_late"])
    await connection.run(`ALTER TABLE ${table} DROP COLUMN eid`);
}

/** The view `events` as schemas 4 to 9 created it: its tables united by position. */
const VIEW_BY_POSITION =
  "CREATE OR REPLACE VIEW events AS SELECT * FROM events_in_order UNION ALL SELECT * FROM events_late";

/**
 * Takes a store this build wrote back to before schema 11: slot columns only for the slots some
 * project took (earlier versions added them when first needed).
 */
async function withoutPresetSlots(connection: DuckDBConnection): Promise<void> {
  const [[taken = 0]] = (
    await connection.runAndReadAll("SELECT coalesce(max(slot) + 1, 0)::INTEGER FROM property_columns")
  ).getRowsJS() as [[number]];
  for (const table of ["events_in_order", "events_late"])
    for (let slot = taken; slot < PRESET_SLOTS; slot++) {
      await connection.run(`ALTER TABLE ${table} DROP COLUMN p${slot}_text`);
      await connection.run(`ALTER TABLE ${table} DROP COLUMN p${slot}_num`);
    }
}

/** Takes a closed store this build wrote back to schema `version` (8 to 10), as it would have left it. */
async function backToSchema(dataDir: string, version: 8 | 9 | 10): Promise<void> {
  const instance = await DuckDBInstance.create(join(dataDir, "tidemark.duckdb"));
  const connection = await instance.connect();
  await withoutPresetSlots(connection);
  if (version === 8) await withoutEventIds(connection);
  if (version < 10) await connection.run(VIEW_BY_POSITION);
  await connection.run(`DELETE FROM schema_migrations WHERE version > ${version}`);
  await connection.run("CHECKPOINT");
  connection.closeSync();
  instance.closeSync();
}
const backToSchema8 = (dataDir: string) => backToSchema(dataDir, 8);

/** Gives the project every preset slot, and returns the first slot whose columns a query adds. */
async function takePresetSlots(store: DuckDbEventStore, projectId: string): Promise<number> {
  for (let slot = 0; slot < PRESET_SLOTS; slot++)
    await store.query(
      projectId,
      parseQuerySpec({ kind: "top_values", property: `preset${slot}`, from: "2000-01-01", to: "2100-01-01" }),
    );
  await store.propertyColumnsSettled();
  return PRESET_SLOTS;
}

async function assertConformance(store: DuckDbEventStore, projectId: string, data: readonly DataEvent[]) {
  for (const c of queryCases(data))
    assert.deepEqual(await store.query(projectId, parseQuerySpec(c.spec)), c.expected, c.name);
}

async function rows(db: DuckDbDatabase, sql: string): Promise<unknown[][]> {
  return (await db.readConnection().runAndReadAll(sql)).getRowsJS();
}

/** The first row of a query that returns one. */
async function row(db: DuckDbDatabase, sql: string): Promise<unknown[]> {
  const [first] = await rows(db, sql);
  assert.ok(first, `no row from ${sql}`);
  return first;
}

test("answers are the same from the JSON and from the typed property columns once filled", async () => {
  const data = makeDataset();
  const projectId = randomUUID();
  await withStore(async (store, db) => {
    for (let i = 0; i < data.length; i += 100)
      await store.insert(data.slice(i, i + 100).map((e) => stored(projectId, e)));
    // First pass: the columns are requested and filled in the background while queries read JSON.
    await assertConformance(store, projectId, data);
    await store.propertyColumnsSettled();
    const ready = await rows(db, "SELECT name, ready FROM property_columns ORDER BY slot");
    assert.ok(ready.length >= 4, `the queried properties have columns: ${JSON.stringify(ready)}`);
    assert.ok(
      ready.every(([, isReady]) => isReady === true),
      "every column is filled",
    );
    // Second pass: every property the cases read now comes from its column.
    await assertConformance(store, projectId, data);
  });
});

test("properties are stored as the JSON they were sent, in order or late, with or without their column", async () => {
  const projectId = randomUUID();
  const tricky = (i: number) => ({
    s: `é "q" \\ / \n\t\u2028 😀 \u0000 ${i}`,
    big: 2 ** 60,
    exponent: 1e21,
    fraction: -0.1,
    nested: { list: [1, { none: null }], yes: true },
    ключ: "значение",
  });
  const now = Date.now();
  const event = (i: number, timestamp: number): StoredEvent => ({
    projectId,
    uuid: randomUUID(),
    event: "e",
    distinctId: `u${i}`,
    timestamp,
    properties: JSON.stringify(tricky(i)),
    receivedAt: now,
  });
  await withStore(async (store, db) => {
    // Late against the project's newest event before the commit.
    await store.insert([event(0, now)]);
    await store.insert([event(1, now - 3 * LATE_MS)]);
    // The property gets a column: the next commit fills it from the same text.
    await store.query(
      projectId,
      parseQuerySpec({ kind: "top_values", property: "s", from: "2000-01-01", to: "2100-01-01" }),
    );
    await store.propertyColumnsSettled();
    await store.insert([event(2, now), event(3, now - 3 * LATE_MS)]);
    const [[slot]] = (await rows(db, "SELECT slot FROM property_columns")) as [[number]];
    const read = (await rows(
      db,
      `SELECT distinct_id, properties::VARCHAR, p${slot}_text, tableoid FROM (
         SELECT *, 'in order' AS tableoid FROM events_in_order UNION ALL SELECT *, 'late' FROM events_late)
       ORDER BY distinct_id`,
    )) as [string, string, string, string][];
    assert.deepEqual(
      read.map(([user, , , table]) => `${user} ${table}`),
      ["u0 in order", "u1 late", "u2 in order", "u3 late"],
    );
    for (const [i, [, text, column]] of read.entries()) {
      assert.deepEqual(JSON.parse(text), tricky(i), "the stored text parses to what was sent");
      assert.equal(column, tricky(i).s);
    }
  });
});

test("late events are kept apart, and every answer is the same, from the JSON and from the property columns", async () => {
  const data = makeDataset(21);
  const projectId = randomUUID();
  // The newest third first, then the rest in time order: most of it lands a day or more behind.
  const byTime = [...data].sort((a, b) => a.timestamp - b.timestamp);
  const newest = byTime.slice(Math.floor((byTime.length * 2) / 3));
  const older = byTime.slice(0, Math.floor((byTime.length * 2) / 3));
  const tableCounts = async (db: DuckDbDatabase) =>
    (await row(
      db,
      `SELECT (SELECT count(*) FROM events_in_order WHERE project_id = '${projectId}'),
              (SELECT count(*) FROM events_late WHERE project_id = '${projectId}')`,
    )) as bigint[];
  const dataDir = mkdtempSync(join(tmpdir(), "tidemark-layout-"));
  const open = async () => {
    const db = new DuckDbDatabase(dataDir, { memoryLimit: "256MB", threads: 1 });
    // No day is sorted here: sorting a day folds its late events into it (the next test), and this
    // one reads where the commits put them.
    const store = new DuckDbEventStore(db, { sortedDayMinEvents: Number.MAX_SAFE_INTEGER });
    await store.start();
    return { db, store };
  };
  try {
    let { db, store } = await open();
    for (const part of [newest, older])
      for (let i = 0; i < part.length; i += 100)
        await store.insert(part.slice(i, i + 100).map((e) => stored(projectId, e)));
    const frontier = newest.at(-1)!.timestamp;
    const lateExpected = older.filter((e) => e.timestamp < frontier - LATE_MS).length;
    assert.ok(lateExpected > 100, "the dataset has late events");
    assert.deepEqual(await tableCounts(db), [BigInt(data.length - lateExpected), BigInt(lateExpected)]);
    // Retries of late and in-order events alike are found.
    assert.equal((await store.insert(byTime.slice(0, 200).map((e) => stored(projectId, e)))).inserted, 0);
    await assertConformance(store, projectId, data);
    // Pages of newest events are merged from both tables: every event once, newest first.
    const ask = async (spec: Record<string, unknown>) =>
      (await store.query(projectId, parseQuerySpec(spec))) as unknown as EventsPage;
    await checkEventsQueries(data, ask);
    const paged: string[] = [];
    for (let cursor: string | undefined, page = 0; page < 100; page++) {
      const answer = await ask({ kind: "events", limit: 37, ...(cursor ? { cursor } : {}) });
      paged.push(...answer.events.map((e) => e.uuid));
      cursor = answer.next_cursor ?? undefined;
      if (!cursor) break;
    }
    const newestFirst = [...data].sort((x, y) => y.timestamp - x.timestamp || (x.uuid < y.uuid ? 1 : -1));
    assert.deepEqual(
      paged,
      newestFirst.map((e) => e.uuid),
    );
    await store.propertyColumnsSettled();
    const [filled] = await row(db, "SELECT count(*) FROM events_late WHERE p0_text IS NOT NULL");
    assert.ok(Number(filled) > 0, "the late table's property columns are filled too");
    await assertConformance(store, projectId, data);

    // After a restart the frontier is read back. A clock years ahead moves it only a day past
    // the event's arrival, so the events after it are still in order.
    await store.close();
    ({ db, store } = await open());
    const extra = (timestamp: number, receivedAt = timestamp): StoredEvent => ({
      ...stored(projectId, data[0]!),
      uuid: randomUUID(),
      timestamp,
      receivedAt,
    });
    await store.insert([extra(frontier - LATE_MS - 60_000)]);
    await store.insert([extra(frontier + 10 * 365 * 86_400_000, frontier)]);
    await store.insert([extra(frontier)]);
    assert.deepEqual(await tableCounts(db), [
      BigInt(data.length - lateExpected + 2),
      BigInt(lateExpected + 1),
    ]);
    await store.deleteProject(projectId);
    assert.deepEqual(await tableCounts(db), [0n, 0n]);
    await store.close();
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test("a day's late events are folded into it when it is sorted, and those of an import once they are many", async () => {
  const data = makeDataset(23);
  const projectId = randomUUID();
  const dayOf = (e: DataEvent) => Math.floor(e.timestamp / DAY_MS) * DAY_MS;
  const byDay = new Map<number, DataEvent[]>();
  for (const e of [...data].sort((a, b) => (a.uuid < b.uuid ? -1 : 1)))
    byDay.set(dayOf(e), [...(byDay.get(dayOf(e)) ?? []), e]);
  const days = [...byDay.keys()].sort((a, b) => a - b);
  // Of each day of 10 events or more: 2 held back and sent two days later (stragglers, late when
  // they arrive, before their day is sorted), and a quarter sent after every day (an import).
  const stragglers = new Map<number, DataEvent[]>();
  const imported = new Map<number, DataEvent[]>();
  const onTime = new Map<number, DataEvent[]>();
  for (const [day, events] of byDay) {
    const held = events.length >= 10 ? 2 : 0;
    const importedEnd = held + (held > 0 ? Math.ceil(events.length / 4) : 0);
    stragglers.set(day, events.slice(0, held));
    imported.set(day, events.slice(held, importedEnd));
    onTime.set(day, events.slice(importedEnd));
  }
  const allImported = [...imported.values()].flat();
  assert.ok(allImported.length >= 20, `${allImported.length} events imported`);
  const messages: string[] = [];
  const log = { info: (_: object, msg?: string) => messages.push(msg ?? ""), warn() {}, error() {} };
  const folds = () => messages.filter((m) => m === "late events folded into their days").length;
  const dataDir = mkdtempSync(join(tmpdir(), "tidemark-fold-"));
  const open = async () => {
    const db = new DuckDbDatabase(dataDir, { memoryLimit: "256MB", threads: 1 });
    // In parts of a few events: the late events of each part are moved with it.
    const store = new DuckDbEventStore(db, { sortedDayMinEvents: 2, sortedDayMaxEvents: 3, log });
    await store.start();
    return { db, store };
  };
  const lateRows = async (db: DuckDbDatabase) =>
    (await rows(
      db,
      `SELECT epoch_ms(date_trunc('day', timestamp)), count(*) FROM events_late
       WHERE project_id = '${projectId}' GROUP BY ALL ORDER BY 1`,
    )) as [bigint, bigint][];
  const watermark = async (db: DuckDbDatabase) =>
    Number((await row(db, `SELECT epoch_ms(until) FROM sorted_until WHERE project_id = '${projectId}'`))[0]);
  try {
    let { db, store } = await open();
    for (const [i, day] of days.entries()) {
      await store.insert(onTime.get(day)!.map((e) => stored(projectId, e)));
      // Whatever this day made final is sorted before the stragglers of two days before arrive.
      await store.daysSortedSettled();
      const twoDaysBefore = days[i - 2] === day - 2 * DAY_MS ? stragglers.get(day - 2 * DAY_MS)! : [];
      await store.insert(twoDaysBefore.map((e) => stored(projectId, e)));
    }
    for (const day of days) {
      // Sent in the loop above with the day two days later, when that day came two after it.
      const sent = days.indexOf(day + 2 * DAY_MS) === days.indexOf(day) + 2;
      if (!sent) await store.insert(stragglers.get(day)!.map((e) => stored(projectId, e)));
    }
    await store.daysSortedSettled();
    const sortedEnd = await watermark(db);
    assert.equal(sortedEnd, sortedDaysEnd(Math.max(...data.map((e) => e.timestamp))));
    // The stragglers went into their days' first sort: none is left in a sorted day, and no day
    // was rewritten a second time for them.
    assert.deepEqual(
      (await lateRows(db)).filter(([day]) => Number(day) < sortedEnd),
      [],
    );
    assert.equal(folds(), 0);
    // Those of the days not yet sorted wait in `events_late` for their day's sort.
    const waiting = (await lateRows(db)).filter(([day]) => Number(day) >= sortedEnd);
    assert.ok(waiting.length >= 1, "late events of a day still open to stragglers stay apart");

    // An import into the sorted days: a quarter of each day's events, late.
    // A day's share in one commit: a day whose share were split could be sorted again after the
    // first part, and keep one late event of the second, too few to sort it once more.
    for (const events of imported.values()) await store.insert(events.map((e) => stored(projectId, e)));
    await store.daysSortedSettled();
    assert.ok(folds() >= 1, "the import's days were sorted again");
    assert.deepEqual(
      (await lateRows(db)).filter(([day]) => Number(day) < sortedEnd),
      [],
      "every sorted day took its imported events in",
    );
    const [total, distinct] = await row(
      db,
      `SELECT count(*), count(DISTINCT uuid) FROM events WHERE project_id = '${projectId}'`,
    );
    assert.deepEqual([total, distinct], [BigInt(data.length), BigInt(data.length)], "each event once");
    await assertConformance(store, projectId, data);
    await checkEventsQueries(
      data,
      async (spec) => (await store.query(projectId, parseQuerySpec(spec))) as unknown as EventsPage,
    );
    // Retries of folded events are still found.
    assert.equal((await store.insert(allImported.map((e) => stored(projectId, e)))).inserted, 0);

    // A restart folds nothing again.
    const before = folds();
    await store.close();
    ({ db, store } = await open());
    await store.daysSortedSettled();
    assert.equal(folds(), before);
    await assertConformance(store, projectId, data);
    await store.close();
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test("days no in-order event can reach are sorted by event, once, and every answer stays the same", async () => {
  const data = makeDataset(33);
  const projectId = randomUUID();
  // Arrival order within each day: the dataset's events shuffled, then sent a day at a time.
  const byDay = new Map<number, DataEvent[]>();
  for (const e of data) {
    const day = Math.floor(e.timestamp / DAY_MS) * DAY_MS;
    byDay.set(day, [...(byDay.get(day) ?? []), e]);
  }
  const days = [...byDay.keys()].sort((a, b) => a - b);
  assert.ok(days.length >= 4, `the dataset spans ${days.length} days`);
  const newest = Math.max(...data.map((e) => e.timestamp));
  const sealed = sortedDaysEnd(newest);
  /** Per day, the (event id, time) of its in-order rows as stored, and the uuids in that order. */
  const layout = async (db: DuckDbDatabase) => {
    const stored = (await rows(
      db,
      `SELECT epoch_ms(timestamp), eid, CAST(uuid AS VARCHAR) FROM events_in_order
       WHERE project_id = '${projectId}' ORDER BY rowid`,
    )) as [bigint, number, string][];
    const perDay = new Map<number, [number, number][]>();
    for (const [time, event] of stored) {
      const day = Math.floor(Number(time) / DAY_MS) * DAY_MS;
      perDay.set(day, [...(perDay.get(day) ?? []), [Number(time), event]]);
    }
    return { perDay, uuids: stored.map(([, , uuid]) => uuid) };
  };
  const isSorted = (rowsOfDay: [number, number][]) =>
    rowsOfDay.every(
      ([time, event], i) =>
        i === 0 ||
        event > rowsOfDay[i - 1]![1] ||
        (event === rowsOfDay[i - 1]![1] && time >= rowsOfDay[i - 1]![0]),
    );
  const dataDir = mkdtempSync(join(tmpdir(), "tidemark-days-"));
  const open = async () => {
    const db = new DuckDbDatabase(dataDir, { memoryLimit: "256MB", threads: 1 });
    const store = new DuckDbEventStore(db, { sortedDayMinEvents: 2 });
    await store.start();
    return { db, store };
  };
  try {
    let { db, store } = await open();
    for (const day of days) {
      const shuffled = [...byDay.get(day)!].sort((a, b) => (a.uuid < b.uuid ? -1 : 1));
      await store.insert(shuffled.map((e) => stored(projectId, e)));
    }
    await store.daysSortedSettled();
    const { perDay, uuids } = await layout(db);
    const sortedDays = [...perDay].filter(([day, r]) => day < sealed && r.length >= 2);
    assert.ok(sortedDays.length >= 2, "days to sort");
    for (const [day, rowsOfDay] of sortedDays)
      assert.ok(isSorted(rowsOfDay), `${new Date(day).toISOString()} is sorted by event, then time`);
    const arrived = [...perDay].filter(([day, r]) => day >= sealed && r.length >= 2 && !isSorted(r));
    assert.ok(arrived.length >= 1, "a day that can still take in-order events is left as it arrived");
    assert.deepEqual(
      await row(db, `SELECT epoch_ms(until) FROM sorted_until WHERE project_id = '${projectId}'`),
      [BigInt(sealed)],
    );
    assert.equal(uuids.length, new Set(uuids).size, "no event twice");
    assert.equal(
      Number((await row(db, `SELECT count(*) FROM events WHERE project_id = '${projectId}'`))[0]),
      data.length,
      "none lost",
    );
    await assertConformance(store, projectId, data);
    // A restart sorts nothing again.
    await store.close();
    ({ db, store } = await open());
    await store.daysSortedSettled();
    assert.deepEqual((await layout(db)).uuids, uuids, "the sorted days are left as they are");
    await assertConformance(store, projectId, data);
    await store.deleteProject(projectId);
    assert.deepEqual(await rows(db, `SELECT * FROM sorted_until WHERE project_id = '${projectId}'`), []);
    await store.close();
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});

/** A database that records each transaction's priority and the SQL it ran. */
class RecordingDatabase extends DuckDbDatabase {
  readonly transactions: { priority: WritePriority; sql: string[] }[] = [];

  override transaction<T>(
    work: (connection: DuckDBConnection) => Promise<T>,
    priority: WritePriority = "normal",
  ): Promise<T> {
    const record = { priority, sql: [] as string[] };
    this.transactions.push(record);
    return super.transaction((connection) => {
      const recorded = new Proxy(connection, {
        get(target, property) {
          const value: unknown = Reflect.get(target, property, target);
          if (typeof value !== "function") return value;
          if (property !== "run" && property !== "runAndReadAll") return value.bind(target);
          return (sql: string, ...rest: unknown[]) => {
            record.sql.push(sql);
            return value.call(target, sql, ...rest);
          };
        },
      });
      return work(recorded);
    }, priority);
  }
}

test("the sorts of days are the store's only background writes: every other write passes them", async () => {
  const data = makeDataset(34);
  const projectId = randomUUID();
  let db!: RecordingDatabase;
  await withStore(
    async (store) => {
      const days = new Map<number, DataEvent[]>();
      for (const e of data) {
        const day = Math.floor(e.timestamp / DAY_MS);
        days.set(day, [...(days.get(day) ?? []), e]);
      }
      for (const [, events] of [...days].sort(([a], [b]) => a - b))
        await store.insert(events.map((e) => stored(projectId, e)));
      await store.daysSortedSettled();
      await store.userDaysSettled();
      // The day order's writes: the days' rewrites and the watermarks.
      const sorts = db.transactions.filter((t) => t.sql.some((sql) => /sorted_(day|until)/.test(sql)));
      const rewrites = sorts.filter((t) => t.sql.some((sql) => sql.includes("sorted_day")));
      assert.ok(rewrites.length >= 2, `days were sorted (${rewrites.length} rewrites)`);
      for (const sort of sorts) assert.equal(sort.priority, "background", "a sort waits for other writes");
      const others = db.transactions.filter((t) => !sorts.includes(t));
      assert.ok(
        others.some((t) => t.sql.some((sql) => sql.includes("user_days"))),
        "the daily users were folded",
      );
      for (const other of others)
        assert.equal(other.priority, "normal", `not a sort: ${other.sql[0]?.slice(0, 60) ?? "(no SQL)"}`);
      await assertConformance(store, projectId, data);
    },
    undefined,
    { sortedDayMinEvents: 2, userDaysFoldRows: 10 },
    (dataDir) => {
      db = new RecordingDatabase(dataDir, { memoryLimit: "256MB", threads: 1 });
      return db;
    },
  );
});

test("a property's new column waits for the write under way before it, and commits do not", async () => {
  const data = makeDataset(35);
  const projectId = randomUUID();
  await withStore(async (store, db) => {
    await store.insert(data.slice(0, 200).map((e) => stored(projectId, e)));
    // A long write of old rows under way (a day's sort, a fill's slice): here, one held open.
    let release!: () => void;
    const held = db.write(() => new Promise<void>((resolve) => (release = resolve)));
    await new Promise((resolve) => setTimeout(resolve, 20));
    // The first query of `plan` gives it a column; its ALTER waits for the write under way.
    await store.query(
      projectId,
      parseQuerySpec({ kind: "top_values", property: "plan", from: "2000-01-01", to: "2100-01-01" }),
    );
    await new Promise((resolve) => setTimeout(resolve, 100));
    const commit = store.insert(data.slice(200, 260).map((e) => stored(projectId, e)));
    let timer: NodeJS.Timeout | undefined;
    const waited = await Promise.race([
      commit.then(() => false),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), 5_000);
      }),
    ]);
    clearTimeout(timer);
    release();
    await held;
    assert.equal(waited, false, "the commit went on while the ALTER waited for its turn");
    await commit;
    await store.propertyColumnsSettled();
    const [ready] = await row(db, "SELECT count(*) FROM property_columns WHERE ready AND name = 'plan'");
    assert.equal(ready, 1n, "the column was added and filled once the write ended");
    await assertConformance(store, projectId, data.slice(0, 260));
  });
});

test("while a property column is added to events_in_order, commits go on into events_late, and every answer stays the same", async () => {
  const data = makeDataset(36);
  const projectId = randomUUID();
  const other = randomUUID();
  const newEvents = (n: number): StoredEvent[] =>
    plainEvents(other, n).map((e, i) => ({ ...e, distinctId: `o${i}`, properties: '{"plan":"x"}' }));
  const inTable = async (db: DuckDbDatabase, table: string, events: readonly StoredEvent[]) => {
    const [n] = await row(
      db,
      `SELECT count(*) FROM ${table} WHERE uuid IN (${events.map((e) => `'${e.uuid}'`).join(", ")})`,
    );
    return Number(n);
  };
  /** The slot whose columns the test's query adds (the ones before it are made with the tables). */
  let slot = PRESET_SLOTS;
  /** What the test checks while commits are diverted. */
  const whileDiverted = async (db: DuckDbDatabase, store: DuckDbEventStore) => {
    const [lateColumns] = await row(
      db,
      `SELECT count(*) FROM duckdb_columns() WHERE table_name = 'events_late' AND column_name = 'p${slot}_text'`,
    );
    const [inOrderColumns] = await row(
      db,
      `SELECT count(*) FROM duckdb_columns() WHERE table_name = 'events_in_order' AND column_name = 'p${slot}_text'`,
    );
    assert.deepEqual([lateColumns, inOrderColumns], [1n, 0n], "the late table is altered first");
    // In order by time, and committed while the in-order table waits for its ALTER.
    const during = newEvents(30);
    assert.equal((await store.insert(during)).inserted, 30);
    assert.equal(await inTable(db, "events_late", during), 30, "diverted into events_late");
    await assertConformance(store, projectId, data.slice(0, 200));
  };
  let diverted!: () => void;
  const divertedNow = new Promise<void>((resolve) => (diverted = resolve));
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  await withStore(
    async (store, db) => {
      await store.insert(data.slice(0, 200).map((e) => stored(projectId, e)));
      slot = await takePresetSlots(store, projectId);
      // The query of `plan` gives it a slot whose columns are added: late table first, then in order.
      await store.query(
        projectId,
        parseQuerySpec({ kind: "top_values", property: "plan", from: "2000-01-01", to: "2100-01-01" }),
      );
      await divertedNow;
      // Released whatever happens: a store closing waits for the column's work.
      try {
        await whileDiverted(db, store);
      } finally {
        release();
      }
      await store.propertyColumnsSettled();
      const after = newEvents(30);
      await store.insert(after);
      assert.equal(await inTable(db, "events_in_order", after), 30, "back to events_in_order");
      await store.insert(data.slice(200, 260).map((e) => stored(projectId, e)));
      const [filled] = await row(
        db,
        `SELECT count(*) FROM events WHERE project_id = '${projectId}'
           AND p${slot}_text IS DISTINCT FROM json_extract_string(properties, '/plan')`,
      );
      assert.equal(filled, 0n, "every event of the project, in both tables, has its column filled");
      await assertConformance(store, projectId, data.slice(0, 260));
      const [others] = await row(db, `SELECT count(*) FROM events WHERE project_id = '${other}'`);
      assert.equal(others, 60n);
    },
    undefined,
    {
      whileCommitsDiverted: async () => {
        diverted();
        await released;
      },
    },
  );
});

test("the store's file takes new rows in row groups of ROW_GROUP_ROWS", async () => {
  await withStore(async (store, db) => {
    const projectId = randomUUID();
    const events = plainEvents(projectId, 2.5 * ROW_GROUP_ROWS);
    for (let i = 0; i < events.length; i += 5_000) await store.insert(events.slice(i, i + 5_000));
    await db.write((connection) => connection.run("CHECKPOINT"));
    const groups = (await rows(
      db,
      `SELECT row_group_id, sum(count) FROM pragma_storage_info('events_in_order')
       WHERE column_name = 'uuid' AND segment_type <> 'VALIDITY' GROUP BY ALL ORDER BY 1`,
    )) as [bigint, bigint][];
    assert.deepEqual(
      groups.map(([, n]) => Number(n)),
      [ROW_GROUP_ROWS, ROW_GROUP_ROWS, ROW_GROUP_ROWS / 2],
    );
  });
});

/** An event of `user_${u}` with no properties, received when it happened. */
const userEvent = (projectId: string, name: string, u: number, timestamp: number): StoredEvent => ({
  projectId,
  uuid: randomUUID(),
  event: name,
  distinctId: `user_${u}`,
  timestamp,
  properties: "{}",
  receivedAt: timestamp,
});

test("a funnel's first step is grouped by a perfect hash table when its events outnumber the users, and only then", async () => {
  await withStore(async (store, db) => {
    // More users than DuckDB's default perfect hash table holds (2^12 keys): only the connection
    // that allows wider ones may use one.
    const users = 5_000;
    const projectId = randomUUID();
    const start = Date.UTC(2026, 0, 1);
    const events: StoredEvent[] = [];
    for (let u = 0; u < users; u++) {
      const at = start + u * 60_000;
      events.push(userEvent(projectId, "View", u, at), userEvent(projectId, "View", u, at + 1_000));
      if (u % 3 === 0) events.push(userEvent(projectId, "Buy", u, at + 2_000));
    }
    for (let i = 0; i < events.length; i += 2_000) await store.insert(events.slice(i, i + 2_000));
    const funnel = (to: string) =>
      parseQuerySpec({ kind: "funnel", steps: ["View", "Buy"], window_seconds: 60, from: "2026-01-01", to });
    const wide = db.userGroupsConnection.bind(db);
    let wideUses = 0;
    db.userGroupsConnection = () => {
      wideUses++;
      return wide();
    };
    const all = (await store.query(projectId, funnel("2026-02-01"))) as { steps: { count: number }[] };
    assert.deepEqual(
      all.steps.map((step) => step.count),
      [users, Math.ceil(users / 3)],
    );
    assert.equal(wideUses, 1, "10,000 first-step events and 5,000 users: the perfect hash table");
    // One hour: 120 first-step events, fewer than the users; the ordinary hash table is cheaper.
    const hour = (await store.query(projectId, funnel("2026-01-01T01:00:00Z"))) as {
      steps: { count: number }[];
    };
    assert.deepEqual(
      hour.steps.map((step) => step.count),
      [60, 20],
    );
    assert.equal(wideUses, 1);
    // What DuckDB does with the statement: the in-order table grouped by a perfect hash table on
    // that connection only.
    const statement = new SqlQueryBuilder(duckDbDialect).funnel(
      projectId,
      funnel("2026-02-01") as FunnelQuery,
    );
    const inOrderGrouping = async (connection: DuckDBConnection) => {
      const explained = await connection.runAndReadAll(
        `EXPLAIN (FORMAT json) ${statement.sql}`,
        statement.params as DuckDBValue[],
      );
      const [[, json = ""] = []] = explained.getRowsJS() as [string, string][];
      interface PlanNode {
        name: string;
        children: PlanNode[];
        extra_info: { Table?: string };
      }
      const scans = (node: PlanNode): string[] => [
        ...(node.extra_info.Table ? [node.extra_info.Table] : []),
        ...node.children.flatMap(scans),
      ];
      const found: string[] = [];
      const walk = (node: PlanNode) => {
        if (
          node.name.endsWith("HASH_GROUP_BY") &&
          scans(node).some((table) => table.endsWith(".events_in_order"))
        )
          found.push(node.name);
        node.children.forEach(walk);
      };
      (JSON.parse(json) as PlanNode[]).forEach(walk);
      return found;
    };
    // The second step groups its join with the events by an ordinary hash table either way.
    assert.deepEqual(await inOrderGrouping(wide()), ["PERFECT_HASH_GROUP_BY", "HASH_GROUP_BY"]);
    assert.deepEqual(await inOrderGrouping(db.readConnection()), ["HASH_GROUP_BY", "HASH_GROUP_BY"]);
  });
});

/** Every statement the store runs from now on, in order. */
function spyOnStatements(store: DuckDbEventStore): SqlStatement[] {
  const statements: SqlStatement[] = [];
  const spied = store as unknown as { run: (statement: SqlStatement) => Promise<unknown> };
  const run = spied.run;
  spied.run = (statement) => {
    statements.push(statement);
    return run(statement);
  };
  return statements;
}

/** A View then a Buy within a minute, over January 2026. */
const VIEW_BUY_FUNNEL = parseQuerySpec({
  kind: "funnel",
  steps: ["View", "Buy"],
  window_seconds: 60,
  from: "2026-01-01",
  to: "2026-02-01",
});

test("with late events stored, a funnel's first step groups both tables at once, by a perfect hash table, and counts the late ones", async () => {
  await withStore(async (store, db) => {
    const users = 5_000;
    const projectId = randomUUID();
    // A day into the range, so that a View an hour earlier is in it too.
    const start = Date.UTC(2026, 0, 2);
    const event = (name: string, u: number, timestamp: number) => userEvent(projectId, name, u, timestamp);
    const inOrder: StoredEvent[] = [];
    for (let u = 0; u < users; u++) {
      const at = start + u * 60_000;
      inOrder.push(event("View", u, at), event("View", u, at + 1_000));
      if (u % 3 === 0) inOrder.push(event("Buy", u, at + 2_000));
    }
    // The newest event is days past the others, so that those sent next are late.
    inOrder.push(event("Other", 0, start + 10 * DAY_MS));
    for (let i = 0; i < inOrder.length; i += 2_000) await store.insert(inOrder.slice(i, i + 2_000));
    const statements = spyOnStatements(store);
    const funnel = VIEW_BUY_FUNNEL;
    const counts = async () =>
      ((await store.query(projectId, funnel)) as { steps: { count: number }[] }).steps.map(
        (step) => step.count,
      );
    const firstStep = () => statements.filter(({ sql }) => sql.includes("s0 AS MATERIALIZED")).at(-1);

    assert.deepEqual(await counts(), [users, Math.ceil(users / 3)]);
    assert.match(firstStep()?.sql ?? "", /FULL JOIN/, "no late events: the in-order table grouped apart");

    // Late: a View an hour before some buyers' first (their window then ends before they buy), and
    // 100 users seen only in late events.
    const late: StoredEvent[] = [];
    for (let u = 0; u < users; u += 7) late.push(event("View", u, start + u * 60_000 - 3_600_000));
    for (let u = users; u < users + 100; u++) late.push(event("View", u, start + u * 60_000));
    await store.insert(late);
    const [[lateRows = 0n] = []] = (await rows(db, "SELECT count(*) FROM events_late")) as [bigint][];
    assert.equal(Number(lateRows), late.length, "all of them late");
    let buyers = 0;
    for (let u = 0; u < users; u += 3) if (u % 7 !== 0) buyers++;
    assert.deepEqual(await counts(), [users + 100, buyers]);
    const together = firstStep();
    assert.ok(together);
    assert.doesNotMatch(together.sql, /FULL JOIN/, "late events: both tables grouped at once");
    // What DuckDB does with it on the connection that allows wide perfect hash tables.
    assert.ok(together.userGroups, "the statement asks for the wide connection");
    const explained = await db
      .userGroupsConnection()
      .runAndReadAll(`EXPLAIN ${together.sql}`, together.params as DuckDBValue[]);
    const plan = (explained.getRowsJS() as [string, string][]).map(([, text]) => text).join("\n");
    assert.match(plan, /PERFECT_HASH_GROUP_BY/);
  });
});

test("the store reads whether late events are stored once, until a commit adds some or a day's sort folds them in", async () => {
  await withStore(
    async (store, db) => {
      const projectId = randomUUID();
      const day = Date.UTC(2026, 0, 10);
      const event = (name: string, u: number, timestamp: number) => userEvent(projectId, name, u, timestamp);
      // In order: a View and a Buy a user on the range's first two days, the newest event two days on.
      const inOrder: StoredEvent[] = [];
      for (const start of [day, day + DAY_MS])
        for (let u = 0; u < 50; u++)
          inOrder.push(event("View", u, start + u * 60_000), event("Buy", u, start + u * 60_000 + 1_000));
      inOrder.push(event("Other", 0, day + 3 * DAY_MS));
      await store.insert(inOrder);
      await store.daysSortedSettled();
      const statements = spyOnStatements(store);
      const funnel = VIEW_BUY_FUNNEL;
      /** The first step's form, and how many times the query asked whether late events are stored. */
      const query = async () => {
        statements.length = 0;
        const { steps } = (await store.query(projectId, funnel)) as { steps: { count: number }[] };
        const first = statements.find(({ sql }) => sql.includes("s0 AS MATERIALIZED"))?.sql ?? "";
        return {
          counts: steps.map((step) => step.count),
          form: /FULL JOIN/.test(first) ? "apart" : "together",
          asked: statements.filter(({ sql }) => sql.includes("FROM events_late) AS late")).length,
        };
      };

      assert.deepEqual(await query(), { counts: [50, 50], form: "apart", asked: 1 });
      assert.deepEqual(await query(), { counts: [50, 50], form: "apart", asked: 0 }, "known since");
      // Views of 10 new users on the second day: a day older than the newest event, so late, and
      // in a day not yet final, so not folded in yet.
      const late: StoredEvent[] = [];
      for (let u = 50; u < 60; u++) late.push(event("View", u, day + DAY_MS + u * 60_000));
      await store.insert(late);
      const [[lateRows = 0n] = []] = (await rows(db, "SELECT count(*) FROM events_late")) as [bigint][];
      assert.equal(Number(lateRows), late.length, "all of them late");
      assert.deepEqual(await query(), { counts: [60, 50], form: "together", asked: 1 });
      assert.deepEqual(await query(), { counts: [60, 50], form: "together", asked: 0 });
      // A newer event makes the second day final: its sort folds the late Views in.
      await store.insert([event("Other", 0, day + 4 * DAY_MS)]);
      await store.daysSortedSettled();
      assert.deepEqual(await rows(db, "SELECT count(*) FROM events_late"), [[0n]]);
      assert.deepEqual(await query(), { counts: [60, 50], form: "apart", asked: 1 });
    },
    undefined,
    { sortedDayMinEvents: 2 },
  );
});

test("distinct counts stay exact when users outrun the uid range the bitstring count was given", async () => {
  const data = makeDataset(3);
  const projectId = randomUUID();
  await withStore(
    async (store) => {
      await store.insert(data.map((e) => stored(projectId, e)));
      await assertConformance(store, projectId, data);
    },
    undefined,
    // The range given is 40 short of the uids stored: every bitstring count fails and falls back.
    { bitstringMargin: -40 },
  );
});

for (const [slices, sliceEvents] of [
  ["in one slice", undefined],
  ["in time slices of 40 events", 40],
] as const)
  test(`events committed while a property column fills are filled too, whatever their project (${slices})`, async () => {
    const data = makeDataset(7);
    const projectId = randomUUID();
    const other = randomUUID();
    await withStore(
      async (store, db) => {
        // Newest first, so that most go to events_late (duckdb.schema.ts): the slices cover both tables.
        const newestFirst = data.slice(0, 500).sort((a, b) => b.timestamp - a.timestamp);
        for (let i = 0; i < newestFirst.length; i += 50)
          await store.insert(newestFirst.slice(i, i + 50).map((e) => stored(projectId, e)));
        for (const table of ["events_in_order", "events_late"]) {
          const [n] = await row(db, `SELECT count(*) FROM ${table} WHERE project_id = '${projectId}'`);
          assert.ok((n as bigint) > 0n, `the project has events in ${table}`);
        }
        store.query(
          projectId,
          parseQuerySpec({ kind: "top_values", property: "plan", from: "2000-01-01", to: "2100-01-01" }),
        );
        // Commits that race the fill: half in the project being filled, half in one without columns.
        const racing: Promise<unknown>[] = [];
        for (let i = 500; i < data.length; i += 25)
          racing.push(
            store.insert(data.slice(i, i + 25).map((e, k) => stored(k % 2 === 0 ? projectId : other, e))),
          );
        await Promise.all(racing);
        await store.propertyColumnsSettled();
        await store.daysSortedSettled();
        const [unfilled] = await row(
          db,
          `SELECT count(*) FROM events e JOIN property_columns c ON c.project_id = e.project_id AND c.name = 'plan'
           WHERE e.p0_text IS DISTINCT FROM json_extract_string(e.properties, '/plan')`,
        );
        assert.equal(unfilled, 0n);
        const [ready] = await row(db, "SELECT count(*) FROM property_columns WHERE ready");
        assert.equal(ready, 1n);
        const [otherFilled] = await row(
          db,
          `SELECT count(*) FROM events WHERE project_id = '${other}' AND p0_text IS NOT NULL`,
        );
        assert.equal(otherFilled, 0n, "a project's columns are its own");
      },
      undefined,
      // Days sorted by event as they become final, racing the fill and the commits too.
      { propertyFillSliceEvents: sliceEvents, sortedDayMinEvents: 2 },
    );
  });

test("one user keeps one integer id across concurrent commits and restarts; different users never share one", async () => {
  const projectA = randomUUID();
  const projectB = randomUUID();
  const users = ["alice", "bob", "ünïcode 用户", 'quote"and\nnewline', "user_1"];
  const event = (projectId: string, distinctId: string): StoredEvent => ({
    projectId,
    uuid: randomUUID(),
    event: "e",
    distinctId,
    timestamp: Date.now(),
    properties: "{}",
    receivedAt: Date.now(),
  });
  const dataDir = mkdtempSync(join(tmpdir(), "tidemark-layout-"));
  try {
    for (let round = 0; round < 2; round++) {
      const db = new DuckDbDatabase(dataDir, { memoryLimit: "256MB", threads: 1 });
      const store = new DuckDbEventStore(db);
      await store.start();
      try {
        // Concurrent commits meeting the same new users.
        await Promise.all(
          Array.from({ length: 8 }, () =>
            store.insert(users.flatMap((u) => [event(projectA, u), event(projectB, u)])),
          ),
        );
        const perUser = await rows(
          db,
          "SELECT CAST(project_id AS VARCHAR), distinct_id, count(DISTINCT uid) FROM events GROUP BY ALL",
        );
        assert.equal(perUser.length, users.length * 2);
        assert.ok(
          perUser.every(([, , n]) => n === 1n),
          "one uid per user",
        );
        const [uids, pairs] = await row(
          db,
          "SELECT count(DISTINCT uid), count(DISTINCT (project_id, distinct_id)) FROM events",
        );
        assert.equal(uids, pairs, "no two users share a uid");
        const [dictionary] = await row(db, "SELECT count(*) FROM distinct_ids");
        assert.equal(dictionary, BigInt(users.length * 2));
      } finally {
        await store.close();
      }
    }
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test("a store written by version 1 is migrated forward on start and answers as before", async () => {
  const data = makeDataset(11);
  const projectId = randomUUID();
  await withStore(
    async (store, db) => {
      assert.deepEqual(await rows(db, "SELECT max(version) FROM schema_migrations"), [[SCHEMA_VERSION]]);
      const [missing] = await row(db, "SELECT count(*) FROM events WHERE uid IS NULL");
      assert.equal(missing, 0n, "every stored event has its uid");
      await assertConformance(store, projectId, data);
      // New events of known users get the same uids as the migrated ones.
      const more = makeDataset(12).map((e) => stored(projectId, { ...e, uuid: randomUUID() }));
      await store.insert(more);
      const [split] = await row(
        db,
        "SELECT count(*) FROM (SELECT distinct_id FROM events GROUP BY distinct_id HAVING count(DISTINCT uid) > 1)",
      );
      assert.equal(split, 0n);
      const ledger = await store.readLedger(projectId);
      assert.equal(ledger.stored, data.length + more.length);
    },
    async (dataDir) => {
      const instance = await DuckDBInstance.create(join(dataDir, "tidemark.duckdb"));
      const connection = await instance.connect();
      await connection.run(SCHEMA_V1);
      for (const e of data)
        await connection.run(
          "INSERT INTO events VALUES (CAST($1 AS UUID), CAST($2 AS UUID), $3, $4, epoch_ms(CAST($5 AS BIGINT)), CAST($6 AS JSON), epoch_ms(CAST($5 AS BIGINT)))",
          [projectId, e.uuid, e.event, e.distinct_id, e.timestamp, JSON.stringify(e.properties)],
        );
      connection.closeSync();
      instance.closeSync();
    },
  );
});

/** Version 2's tables, frozen exactly as that release created them (do not edit). */
const SCHEMA_V2 = `
  ${SCHEMA_V1}
  CREATE TABLE distinct_ids (project_id UUID NOT NULL, distinct_id VARCHAR NOT NULL, uid BIGINT NOT NULL, PRIMARY KEY (project_id, distinct_id));
  CREATE TABLE property_columns (project_id UUID NOT NULL, name VARCHAR NOT NULL, slot INTEGER NOT NULL, ready BOOLEAN NOT NULL, PRIMARY KEY (project_id, name));
  DROP TABLE events;
  CREATE TABLE events (
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
  INSERT OR IGNORE INTO schema_migrations VALUES (2, now());
`;

test("a store written by version 2 loses its key index, keeps its property columns and answers as before", async () => {
  const data = makeDataset(13);
  const projectId = randomUUID();
  await withStore(
    async (store, db) => {
      assert.deepEqual(await rows(db, "SELECT max(version) FROM schema_migrations"), [[SCHEMA_VERSION]]);
      const [keys] = await row(
        db,
        "SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'events_in_order' AND constraint_type IN ('PRIMARY KEY', 'UNIQUE')",
      );
      assert.equal(keys, 0n, "no key index on events");
      const [filled] = await row(db, "SELECT count(*) FROM events WHERE p0_text IS NOT NULL");
      assert.ok(Number(filled) > 0, "the slot column and its values are kept");
      await assertConformance(store, projectId, data);
      // Every migrated event is known: sent again, each is a duplicate.
      const again = await store.insert(data.slice(0, 300).map((e) => stored(projectId, e)));
      assert.equal(again.inserted, 0);
      assert.equal((await store.readLedger(projectId)).stored, data.length);
    },
    async (dataDir) => {
      const instance = await DuckDBInstance.create(join(dataDir, "tidemark.duckdb"));
      const connection = await instance.connect();
      await connection.run(SCHEMA_V2);
      for (const e of data)
        await connection.run(
          `INSERT INTO distinct_ids SELECT CAST($1 AS UUID), $2, (SELECT count(*) + 1 FROM distinct_ids)
           WHERE NOT EXISTS (SELECT 1 FROM distinct_ids WHERE distinct_id = $2)`,
          [projectId, e.distinct_id],
        );
      for (const e of data)
        await connection.run(
          `INSERT INTO events SELECT CAST($1 AS UUID), CAST($2 AS UUID), $3, $4, uid, epoch_ms(CAST($5 AS BIGINT)), CAST($6 AS JSON), epoch_ms(CAST($5 AS BIGINT))
           FROM distinct_ids WHERE distinct_id = $4`,
          [projectId, e.uuid, e.event, e.distinct_id, e.timestamp, JSON.stringify(e.properties)],
        );
      // A property column, filled, as version 2 kept it.
      await connection.run("ALTER TABLE events ADD COLUMN p0_text VARCHAR");
      await connection.run("ALTER TABLE events ADD COLUMN p0_num DOUBLE");
      await connection.run("UPDATE events SET p0_text = json_extract_string(properties, '/plan')");
      await connection.run(`INSERT INTO property_columns VALUES (CAST($1 AS UUID), 'plan', 0, true)`, [
        projectId,
      ]);
      connection.closeSync();
      instance.closeSync();
    },
  );
});

/** Version 3's tables, frozen exactly as that release created them (do not edit). */
const SCHEMA_V3 = `
  ${SCHEMA_V1}
  CREATE TABLE distinct_ids (project_id UUID NOT NULL, distinct_id VARCHAR NOT NULL, uid BIGINT NOT NULL, PRIMARY KEY (project_id, distinct_id));
  CREATE TABLE property_columns (project_id UUID NOT NULL, name VARCHAR NOT NULL, slot INTEGER NOT NULL, ready BOOLEAN NOT NULL, PRIMARY KEY (project_id, name));
  DROP TABLE events;
  CREATE TABLE events (
    project_id UUID NOT NULL,
    uuid UUID NOT NULL,
    event VARCHAR NOT NULL,
    distinct_id VARCHAR NOT NULL,
    uid BIGINT NOT NULL,
    timestamp TIMESTAMP NOT NULL,
    properties JSON NOT NULL,
    received_at TIMESTAMP NOT NULL
  );
  CREATE TABLE event_counts (project_id UUID NOT NULL, event VARCHAR NOT NULL, hour TIMESTAMP NOT NULL, n BIGINT NOT NULL);
  INSERT OR IGNORE INTO schema_migrations VALUES (2, now());
  INSERT OR IGNORE INTO schema_migrations VALUES (3, now());
`;

test("a store written by version 3 gains its daily users and answers as before", async () => {
  const data = makeDataset(17);
  const projects = [randomUUID(), randomUUID()];
  await withStore(
    async (store, db) => {
      assert.deepEqual(await rows(db, "SELECT max(version) FROM schema_migrations"), [[SCHEMA_VERSION]]);
      const [bitmaps] = await row(db, "SELECT count(*) FROM user_days");
      assert.ok(Number(bitmaps) > 0, "the daily users are filled from the events");
      await rollupsMatch(db);
      for (const projectId of projects) await assertConformance(store, projectId, data);
      // New events add to them.
      await store.insert(makeDataset(18).map((e) => stored(projects[0]!, { ...e, uuid: randomUUID() })));
      await rollupsMatch(db);
    },
    async (dataDir) => {
      const instance = await DuckDBInstance.create(join(dataDir, "tidemark.duckdb"));
      const connection = await instance.connect();
      await connection.run(SCHEMA_V3);
      for (const projectId of projects) {
        for (const e of data)
          await connection.run(
            `INSERT INTO distinct_ids SELECT CAST($1 AS UUID), $2, (SELECT count(*) + 1 FROM distinct_ids)
             WHERE NOT EXISTS (SELECT 1 FROM distinct_ids WHERE project_id = CAST($1 AS UUID) AND distinct_id = $2)`,
            [projectId, e.distinct_id],
          );
        await connection.run(
          `INSERT INTO events SELECT CAST($1 AS UUID), CAST(j.u AS UUID), j.e, j.d, d.uid, epoch_ms(j.t), j.props, epoch_ms(j.t)
           FROM (SELECT from_json(unnest(string_split($2, chr(10))), '{"u":"VARCHAR","e":"VARCHAR","d":"VARCHAR","t":"BIGINT","props":"JSON"}') AS j)
           JOIN distinct_ids d ON d.project_id = CAST($1 AS UUID) AND d.distinct_id = j.d`,
          [
            projectId,
            data
              .map((e) =>
                JSON.stringify({
                  u: e.uuid,
                  e: e.event,
                  d: e.distinct_id,
                  t: e.timestamp,
                  props: e.properties,
                }),
              )
              .join("\n"),
          ],
        );
        await connection.run(
          `INSERT INTO event_counts SELECT project_id, event, date_trunc('hour', timestamp), count(*) FROM events
           WHERE project_id = CAST($1 AS UUID) GROUP BY ALL`,
          [projectId],
        );
      }
      connection.closeSync();
      instance.closeSync();
    },
  );
});

test("a store written by version 4 gains its watermarks, sorts its final days and answers as before", async () => {
  const data = makeDataset(19);
  const projectId = randomUUID();
  const dataDir = mkdtempSync(join(tmpdir(), "tidemark-v4-"));
  try {
    // Version 4's store is version 5's without `sorted_until`: written by this build with no day
    // sorted (the default bound is above the dataset's days), then taken back to version 4.
    const db4 = new DuckDbDatabase(dataDir, { memoryLimit: "256MB", threads: 1 });
    const writer = new DuckDbEventStore(db4);
    await writer.start();
    for (let i = 0; i < data.length; i += 100)
      await writer.insert(data.slice(i, i + 100).map((e) => stored(projectId, e)));
    await writer.close();
    const instance = await DuckDBInstance.create(join(dataDir, "tidemark.duckdb"));
    const connection = await instance.connect();
    await connection.run("DROP TABLE sorted_until");
    await withoutEventIds(connection);
    await connection.run("DELETE FROM schema_migrations WHERE version >= 5");
    connection.closeSync();
    instance.closeSync();

    const db = new DuckDbDatabase(dataDir, { memoryLimit: "256MB", threads: 1 });
    const store = new DuckDbEventStore(db, { sortedDayMinEvents: 2 });
    await store.start();
    try {
      assert.deepEqual(await rows(db, "SELECT max(version) FROM schema_migrations"), [[SCHEMA_VERSION]]);
      await store.daysSortedSettled();
      const newest = Math.max(...data.map((e) => e.timestamp));
      const sealed = sortedDaysEnd(newest);
      assert.deepEqual(
        await row(db, `SELECT epoch_ms(until) FROM sorted_until WHERE project_id = '${projectId}'`),
        [BigInt(sealed)],
      );
      await assertConformance(store, projectId, data);
    } finally {
      await store.close();
    }
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test("a store written by version 5 or 6 rewrites its final days into the smaller row groups with their late events, and answers as before", async () => {
  for (const written of [5, 6]) {
    const projectId = randomUUID();
    const dataDir = mkdtempSync(join(tmpdir(), `tidemark-v${written}-`));
    // Five days of 12,000 events each in time order: the first two are final and past their grace
    // day (sortedDaysEnd), and sorted.
    const start = Date.UTC(2026, 0, 1);
    const perDay = 12_000;
    const events: StoredEvent[] = Array.from({ length: 5 * perDay }, (_, i) => {
      const timestamp = start + Math.floor((i * DAY_MS) / perDay);
      return {
        projectId,
        uuid: randomUUID(),
        event: ["View", "Click", "Buy"][i % 3]!,
        distinctId: `user_${i % 500}`,
        timestamp,
        properties: "{}",
        receivedAt: timestamp,
      };
    });
    const sealed = start + 2 * DAY_MS;
    const trends = parseQuerySpec({
      kind: "trends",
      math: "unique_users",
      interval: "day",
      from: "2026-01-01",
      to: "2026-01-06",
    });
    const groupSizes = async (db: DuckDbDatabase) =>
      (
        (await rows(
          db,
          `SELECT sum(count) FROM pragma_storage_info('events_in_order')
       WHERE column_name = 'uuid' AND segment_type <> 'VALIDITY' GROUP BY row_group_id ORDER BY row_group_id`,
        )) as [bigint][]
      ).map(([n]) => Number(n));
    try {
      // Written by this build, then taken back. Version 5 wrote DuckDB's default row groups: its
      // store is rewritten through a plain DuckDB of default settings.
      const db5 = new DuckDbDatabase(dataDir, { memoryLimit: "256MB", threads: 1 });
      const writer = new DuckDbEventStore(db5);
      await writer.start();
      for (let i = 0; i < events.length; i += 4_000) await writer.insert(events.slice(i, i + 4_000));
      await writer.daysSortedSettled();
      // Late events of a sorted day, too few to sort it again: versions 5 and 6 kept them apart.
      const late = events.slice(0, 100).map((e) => ({ ...e, uuid: randomUUID(), distinctId: "latecomer" }));
      await writer.insert(late);
      await writer.daysSortedSettled();
      assert.deepEqual(await row(db5, "SELECT count(*) FROM events_late"), [BigInt(late.length)]);
      const before = await writer.query(projectId, trends);
      await writer.close();
      const instance = await DuckDBInstance.create(join(dataDir, "tidemark.duckdb"));
      const connection = await instance.connect();
      if (written === 5) {
        await connection.run("CREATE TEMP TABLE kept AS SELECT * FROM events_in_order ORDER BY rowid");
        await connection.run("DELETE FROM events_in_order");
        await connection.run("INSERT INTO events_in_order SELECT * FROM temp.kept");
      }
      await withoutEventIds(connection);
      await connection.run(`DELETE FROM schema_migrations WHERE version > ${written}`);
      await connection.run("CHECKPOINT");
      connection.closeSync();
      instance.closeSync();

      const db = new DuckDbDatabase(dataDir, { memoryLimit: "256MB", threads: 1 });
      const store = new DuckDbEventStore(db);
      await store.start();
      try {
        assert.deepEqual(await rows(db, "SELECT max(version) FROM schema_migrations"), [[SCHEMA_VERSION]]);
        await store.daysSortedSettled();
        assert.deepEqual(
          await row(db, `SELECT epoch_ms(until) FROM sorted_until WHERE project_id = '${projectId}'`),
          [BigInt(sealed)],
        );
        // The two final days (24,000 events and the 100 late ones) were written again, in groups of
        // ROW_GROUP_ROWS; version 5's group of 60,000 keeps the open days, and the old places of the
        // others as deleted rows.
        if (written === 5)
          assert.deepEqual(await groupSizes(db), [
            5 * perDay,
            ROW_GROUP_ROWS,
            2 * perDay + late.length - ROW_GROUP_ROWS,
          ]);
        assert.deepEqual(await row(db, "SELECT count(*) FROM events_in_order"), [
          BigInt(events.length + late.length),
        ]);
        assert.deepEqual(await row(db, "SELECT count(*) FROM events_late"), [0n]);
        // Sorted by event id within each final day.
        const [unsorted] = await row(
          db,
          `SELECT count(*) FROM (SELECT eid < lag(eid) OVER (ORDER BY rowid) AS back,
           timestamp < lag(timestamp) OVER (ORDER BY rowid) AND eid = lag(eid) OVER (ORDER BY rowid) AS back_t,
           date_trunc('day', timestamp) = date_trunc('day', lag(timestamp) OVER (ORDER BY rowid)) AS same_day
         FROM events_in_order WHERE timestamp < epoch_ms(${sealed})) WHERE same_day AND (back OR back_t)`,
        );
        assert.equal(unsorted, 0n);
        assert.deepEqual(await store.query(projectId, trends), before);
      } finally {
        await store.close();
      }
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  }
});

test("a project's pass saves its watermark even with no day to sort, and a start passes over no project sorted up to its newest unless late events wait in its sorted days", async () => {
  const old = randomUUID();
  const fresh = randomUUID();
  const now = Date.now();
  const at = (projectId: string, timestamp: number, n: number): StoredEvent[] =>
    plainEvents(projectId, n).map((e) => ({ ...e, timestamp, receivedAt: now }));
  await withStore(
    async (store, db) => {
      // `old` has a final day to sort; `fresh` has events of today alone, so no day to sort.
      await store.insert([...at(old, now - 5 * DAY_MS, 10), ...at(old, now, 10), ...at(fresh, now, 10)]);
      await store.daysSortedSettled();
      const sealed = sortedDaysEnd(now);
      assert.deepEqual(
        await rows(db, "SELECT CAST(project_id AS VARCHAR), epoch_ms(until) FROM sorted_until ORDER BY 1"),
        [old, fresh].sort().map((projectId) => [projectId, BigInt(sealed)]),
      );
      // What the next start does: every project's newest time reported. No statement is run.
      let statements = 0;
      const reader = db.readConnection();
      const counting = new Proxy(reader, {
        get(target, name, receiver) {
          const value = Reflect.get(target, name, receiver);
          if (typeof value !== "function") return value;
          return (...args: unknown[]) => {
            statements++;
            return value.apply(target, args);
          };
        },
      });
      const dayOrder = new DayOrder({ transaction: (work) => db.transaction(work), minEvents: 4 });
      await dayOrder.open(counting);
      const opened = statements;
      dayOrder.advanced(old, now);
      dayOrder.advanced(fresh, now);
      await dayOrder.settled();
      assert.equal(statements, opened, "no pass over projects sorted up to their newest");
      // A day later, each gets its pass again.
      dayOrder.advanced(fresh, now + DAY_MS);
      await dayOrder.settled();
      assert.ok(statements > opened);
      // Late events in a sorted day, enough to fold, whose fold had not run when the store closed:
      // that project gets its pass at the next start, and they are folded.
      await db.transaction((writer) =>
        writer.run(
          `INSERT INTO events_late SELECT * REPLACE (uuid() AS uuid) FROM events_in_order
           WHERE project_id = '${old}' AND timestamp < epoch_ms(${sealed}) LIMIT 4`,
        ),
      );
      const restarted = new DayOrder({ transaction: (work) => db.transaction(work), minEvents: 4 });
      await restarted.open(db.readConnection());
      restarted.advanced(old, now);
      await restarted.settled();
      assert.deepEqual(await row(db, `SELECT count(*) FROM events_late WHERE project_id = '${old}'`), [0n]);
    },
    undefined,
    { sortedDayMinEvents: 4 },
  );
});

test("a store written by version 7 counts its accepted events once, from its hourly counts; commits write only their duplicates", async () => {
  const projectId = randomUUID();
  const events = plainEvents(projectId, 50);
  const ledgerRows = (db: DuckDbDatabase) =>
    rows(db, `SELECT outcome, sum(n) FROM ledger_entries WHERE project_id = '${projectId}' GROUP BY outcome`);
  await withStore(
    async (store, db) => {
      assert.deepEqual(await rows(db, "SELECT max(version) FROM schema_migrations"), [[SCHEMA_VERSION]]);
      // The rows version 7 wrote for what its commits accepted are gone; the counts hold them.
      assert.deepEqual(await ledgerRows(db), [["duplicate", 10n]]);
      let ledger = await store.readLedger(projectId);
      assert.deepEqual([ledger.accepted, ledger.duplicate, ledger.stored], [50, 10, 50]);
      // A commit with no duplicate writes no ledger row; one with duplicates, only those.
      const more = plainEvents(projectId, 5);
      await store.insert(more);
      assert.deepEqual(await ledgerRows(db), [["duplicate", 10n]]);
      await store.insert([...more.slice(0, 2), ...plainEvents(projectId, 3)]);
      assert.deepEqual(await ledgerRows(db), [["duplicate", 12n]]);
      ledger = await store.readLedger(projectId);
      assert.deepEqual([ledger.accepted, ledger.duplicate, ledger.stored], [58, 12, 58]);
    },
    async (dataDir) => {
      const db = new DuckDbDatabase(dataDir, { memoryLimit: "256MB", threads: 1 });
      const writer = new DuckDbEventStore(db);
      await writer.start();
      await writer.insert(events.slice(0, 30));
      await writer.insert(events.slice(20)); // 10 of them again
      await writer.close();
      // What version 7 also wrote: a row of each commit's accepted events.
      const instance = await DuckDBInstance.create(join(dataDir, "tidemark.duckdb"));
      const connection = await instance.connect();
      await connection.run(
        `INSERT INTO ledger_entries VALUES ('${projectId}', 'accepted', 30), ('${projectId}', 'accepted', 20)`,
      );
      await withoutEventIds(connection);
      await connection.run("DELETE FROM schema_migrations WHERE version > 7");
      await connection.run("CHECKPOINT");
      connection.closeSync();
      instance.closeSync();
    },
  );
});

test("a store written by version 8 numbers its event names and fills their ids in the background; queries then filter by id, with the same answers", async () => {
  const data = makeDataset(23);
  const projectId = randomUUID();
  const other = randomUUID();
  const logged: [string, Record<string, unknown>][] = [];
  const mismatched = (db: DuckDbDatabase) =>
    rows(
      db,
      `SELECT count(*) FROM events e LEFT JOIN event_names n ON n.project_id = e.project_id AND n.event = e.event
       WHERE n.eid IS DISTINCT FROM e.eid`,
    );
  await withStore(
    async (store, db) => {
      assert.deepEqual(await rows(db, "SELECT max(version) FROM schema_migrations"), [[SCHEMA_VERSION]]);
      // Every stored (project, name) is numbered at once.
      assert.deepEqual(
        await rows(db, "SELECT count(*) FROM event_names"),
        await rows(db, "SELECT count(*) FROM (SELECT DISTINCT project_id, event FROM events)"),
      );
      // The same answers while the fill runs (by name) and once it is done (by id).
      await assertConformance(store, projectId, data);
      await store.eventIdsSettled();
      assert.deepEqual(await rows(db, "SELECT count(*) FROM event_ids_pending"), [[0n]]);
      assert.deepEqual(await mismatched(db), [[0n]]);
      // One line for the whole fill.
      const filled = logged.filter(([message]) => message === "event ids filled").map(([, fields]) => fields);
      assert.equal(filled.length, 1);
      const [[eventCount]] = (await rows(db, "SELECT count(*) FROM events")) as [[bigint]];
      assert.deepEqual(
        [filled[0]?.projects, filled[0]?.events, filled[0]?.pending],
        [2, Number(eventCount), 0],
      );
      await assertConformance(store, projectId, data);
      // A new name gets the next id, in the commit of its first event.
      const [before] = await rows(db, "SELECT max(eid) FROM event_names");
      const fresh = plainEvents(projectId, 2).map((e) => ({ ...e, event: "first seen" }));
      await store.insert(fresh);
      assert.deepEqual(await rows(db, "SELECT DISTINCT e.eid FROM events e WHERE e.event = 'first seen'"), [
        [Number(before?.[0]) + 1],
      ]);
      assert.deepEqual(await mismatched(db), [[0n]]);
      // Queries filter by the id: an event whose id is changed is no longer found by its name.
      const named = parseQuerySpec({ kind: "events", event: "first seen" });
      assert.equal(((await store.query(projectId, named)) as { events: unknown[] }).events.length, 2);
      await db.write(async (connection) => {
        await connection.run(`UPDATE events_in_order SET eid = -1 WHERE uuid = '${fresh[0]!.uuid}'`);
      });
      assert.equal(((await store.query(projectId, named)) as { events: unknown[] }).events.length, 1);
    },
    async (dataDir) => {
      const db = new DuckDbDatabase(dataDir, { memoryLimit: "256MB", threads: 1 });
      const writer = new DuckDbEventStore(db);
      await writer.start();
      for (let i = 0; i < data.length; i += 100) {
        await writer.insert(data.slice(i, i + 100).map((e) => stored(projectId, e)));
        await writer.insert(data.slice(i, i + 10).map((e) => stored(other, e)));
      }
      await writer.close();
      await backToSchema8(dataDir);
    },
    // Small slices: the fill takes several, racing the queries.
    {
      eventIdFillSliceEvents: 300,
      log: {
        info: (fields, message) => logged.push([message ?? "", fields as Record<string, unknown>]),
        warn: () => undefined,
        error: () => undefined,
      },
    },
  );
});

test("a store written by version 9 unites its event tables by name, and answers as before", async () => {
  const data = makeDataset(24);
  const projectId = randomUUID();
  await withStore(
    async (store, db) => {
      assert.deepEqual(await rows(db, "SELECT max(version) FROM schema_migrations"), [[SCHEMA_VERSION]]);
      const [[view]] = (await rows(db, "SELECT sql FROM duckdb_views() WHERE view_name = 'events'")) as [
        [string],
      ];
      assert.match(view, /UNION ALL BY NAME/);
      await assertConformance(store, projectId, data);
    },
    async (dataDir) => {
      const db = new DuckDbDatabase(dataDir, { memoryLimit: "256MB", threads: 1 });
      const writer = new DuckDbEventStore(db);
      await writer.start();
      await writer.insert(data.map((e) => stored(projectId, e)));
      await writer.close();
      await backToSchema(dataDir, 9);
    },
  );
});

/** The slot columns of both event tables, as `table.column` names in order. */
async function slotColumnsOnFile(db: DuckDbDatabase): Promise<string[]> {
  const found = await rows(
    db,
    `SELECT table_name || '.' || column_name FROM duckdb_columns()
     WHERE schema_name = 'main' AND table_name IN ('events_in_order', 'events_late') AND column_name SIMILAR TO 'p[0-9]+_(text|num)'
     ORDER BY ALL`,
  );
  return found.map(([name]) => String(name));
}

/** The columns of slots 0..slots-1 in both event tables, as slotColumnsOnFile lists them. */
const slotColumnNames = (slots: number) =>
  ["events_in_order", "events_late"]
    .flatMap((table) =>
      Array.from({ length: slots }, (_, slot) => [`${table}.p${slot}_num`, `${table}.p${slot}_text`]),
    )
    .flat()
    .sort();

test("a new store has the preset slots' columns: the first properties a project queries alter no table", async () => {
  const data = makeDataset(31);
  const projectId = randomUUID();
  const added: unknown[] = [];
  let diversions = 0;
  const log = {
    info: (details: object, message?: string) => {
      if (message === "property column added to the event tables") added.push(details);
    },
    warn() {},
    error() {},
  };
  await withStore(
    async (store, db) => {
      assert.deepEqual(await slotColumnsOnFile(db), slotColumnNames(PRESET_SLOTS));
      await store.insert(data.map((e) => stored(projectId, e)));
      const slot = await takePresetSlots(store, projectId);
      assert.deepEqual(added, [], "no column was added for the preset slots");
      assert.equal(diversions, 0, "no commit was diverted");
      assert.deepEqual(await slotColumnsOnFile(db), slotColumnNames(PRESET_SLOTS));
      // The next property takes the first slot beyond them: its columns are added.
      await store.query(
        projectId,
        parseQuerySpec({ kind: "top_values", property: "plan", from: "2000-01-01", to: "2100-01-01" }),
      );
      await store.propertyColumnsSettled();
      assert.equal(added.length, 1, "the columns of the slot beyond the preset ones were added");
      assert.equal(diversions, 1);
      assert.deepEqual(await slotColumnsOnFile(db), slotColumnNames(slot + 1));
      const [unfilled] = await row(
        db,
        `SELECT count(*) FROM events WHERE project_id = '${projectId}'
           AND p${slot}_text IS DISTINCT FROM json_extract_string(properties, '/plan')`,
      );
      assert.equal(unfilled, 0n);
      await assertConformance(store, projectId, data);
    },
    undefined,
    {
      log,
      whileCommitsDiverted: async () => {
        diversions++;
      },
    },
  );
});

test("a store written by version 10 gets the preset slots' columns on start, keeps its filled ones, and answers as before", async () => {
  const data = makeDataset(32);
  const projectId = randomUUID();
  const migrations: string[] = [];
  await withStore(
    async (store, db) => {
      assert.deepEqual(await rows(db, "SELECT max(version) FROM schema_migrations"), [[SCHEMA_VERSION]]);
      assert.ok(
        migrations.includes("migrating the store to schema 11 (the first property columns made up front)"),
        migrations.join("; "),
      );
      assert.deepEqual(await slotColumnsOnFile(db), slotColumnNames(PRESET_SLOTS));
      assert.deepEqual(await rows(db, "SELECT name, slot, ready FROM property_columns"), [["plan", 0, true]]);
      const [unfilled] = await row(
        db,
        `SELECT count(*) FROM events WHERE project_id = '${projectId}'
           AND p0_text IS DISTINCT FROM json_extract_string(properties, '/plan')`,
      );
      assert.equal(unfilled, 0n, "the filled slot kept its values");
      await store.insert(data.slice(200).map((e) => stored(projectId, e)));
      await assertConformance(store, projectId, data);
      await store.propertyColumnsSettled();
      await assertConformance(store, projectId, data);
    },
    async (dataDir) => {
      const db = new DuckDbDatabase(dataDir, { memoryLimit: "256MB", threads: 1 });
      const writer = new DuckDbEventStore(db);
      await writer.start();
      await writer.insert(data.slice(0, 200).map((e) => stored(projectId, e)));
      await writer.query(
        projectId,
        parseQuerySpec({ kind: "top_values", property: "plan", from: "2000-01-01", to: "2100-01-01" }),
      );
      await writer.propertyColumnsSettled();
      await writer.close();
      await backToSchema(dataDir, 10);
      const instance = await DuckDBInstance.create(join(dataDir, "tidemark.duckdb"));
      const connection = await instance.connect();
      const columns = (
        await connection.runAndReadAll(
          "SELECT count(*) FROM duckdb_columns() WHERE table_name = 'events_in_order' AND column_name SIMILAR TO 'p[0-9]+_(text|num)'",
        )
      ).getRowsJS();
      connection.closeSync();
      instance.closeSync();
      assert.deepEqual(columns, [[2n]], "as version 10 left it: the columns of the one slot taken");
    },
    {},
    (dataDir) =>
      new DuckDbDatabase(dataDir, {
        memoryLimit: "256MB",
        threads: 1,
        onMigration: (message) => migrations.push(message),
      }),
  );
});

test("a stop during the event ids' fill leaves the project pending, and the next start fills the rest", async () => {
  const data = makeDataset(29);
  const projectId = randomUUID();
  const dataDir = mkdtempSync(join(tmpdir(), "tidemark-layout-"));
  const open = () =>
    new DuckDbEventStore(new DuckDbDatabase(dataDir, { memoryLimit: "256MB", threads: 1 }), {
      eventIdFillSliceEvents: 50,
    });
  try {
    /** Runs statements on the closed store's file, returning the last one's rows. */
    const onFile = async (...statements: string[]) => {
      const instance = await DuckDBInstance.create(join(dataDir, "tidemark.duckdb"));
      const connection = await instance.connect();
      let result: unknown[][] = [];
      for (const sql of statements) result = (await connection.runAndReadAll(sql)).getRowsJS();
      connection.closeSync();
      instance.closeSync();
      return result;
    };
    const writer = open();
    await writer.start();
    for (let i = 0; i < data.length; i += 100)
      await writer.insert(data.slice(i, i + 100).map((e) => stored(projectId, e)));
    await writer.close();
    await backToSchema8(dataDir);
    // Stopped at once: the fill has written a few of its slices at most.
    const stopped = open();
    await stopped.start();
    await stopped.close();
    const [[pending, missing]] = (await onFile(
      "SELECT (SELECT count(*) FROM event_ids_pending), (SELECT count(*) FROM events WHERE eid IS NULL)",
    )) as [[bigint, bigint]];
    assert.deepEqual([pending, missing > 0n], [1n, true]);
    const reopened = open();
    await reopened.start();
    try {
      await reopened.eventIdsSettled();
      await assertConformance(reopened, projectId, data);
    } finally {
      await reopened.close();
    }
    assert.deepEqual(
      await onFile(
        "SELECT (SELECT count(*) FROM event_ids_pending), (SELECT count(*) FROM events WHERE eid IS NULL)",
      ),
      [[0n, 0n]],
    );
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test("a property column added while the last row group is larger than ROW_GROUP_ROWS takes the commits after it", async () => {
  const projectId = randomUUID();
  const events = plainEvents(projectId, 20_000).map((e, i) => ({
    ...e,
    properties: JSON.stringify({ plan: `p${i % 3}` }),
  }));
  const topPlans = parseQuerySpec({
    kind: "top_values",
    property: "plan",
    from: "2000-01-01",
    to: "2100-01-01",
  });
  await withStore(
    async (store, db) => {
      // The last group is the rewritten one: no commit since the store opened.
      const groups = await rows(
        db,
        `SELECT sum(count) FROM pragma_storage_info('events_in_order') WHERE column_name = 'uuid'
         AND segment_type <> 'VALIDITY' GROUP BY row_group_id ORDER BY row_group_id DESC LIMIT 1`,
      );
      assert.deepEqual(groups, [[BigInt(events.length)]]);
      assert.equal(await hasOversizedRowGroups(db.readConnection(), "events_in_order"), true);
      assert.equal(await hasOversizedRowGroups(db.readConnection(), "events_late"), false);
      const slot = await takePresetSlots(store, projectId);
      assert.equal(await hasOversizedRowGroups(db.readConnection(), "events_in_order"), true);
      // The query adds the slot's columns; the commit then appends to the tables altered.
      await store.query(projectId, topPlans);
      await store.propertyColumnsSettled();
      await store.insert(plainEvents(projectId, 10));
      assert.deepEqual(await row(db, `SELECT count(*), count(p${slot}_text) FROM events_in_order`), [
        BigInt(events.length + 10),
        BigInt(events.length),
      ]);
    },
    async (dataDir) => {
      const db = new DuckDbDatabase(dataDir, { memoryLimit: "256MB", threads: 1 });
      const writer = new DuckDbEventStore(db);
      await writer.start();
      await writer.insert(events);
      await writer.close();
      // Rewritten through a DuckDB of default settings, as stores before schema 6 wrote them: one
      // group of every row.
      const instance = await DuckDBInstance.create(join(dataDir, "tidemark.duckdb"));
      const connection = await instance.connect();
      await connection.run("CREATE TEMP TABLE kept AS SELECT * FROM events_in_order ORDER BY rowid");
      await connection.run("DELETE FROM events_in_order");
      await connection.run("INSERT INTO events_in_order SELECT * FROM temp.kept");
      await connection.run("CHECKPOINT");
      connection.closeSync();
      instance.closeSync();
    },
  );
});

test("a retried event is stored once, across restarts and whether or not the key filter errs", async () => {
  // bitsPerKey 1: the filter says "may hold" of most new keys, so the table is asked about them.
  for (const keyFilter of [{}, { bitsPerKey: 1, grownBitsPerKey: 1, minCapacity: 16 }]) {
    const data = makeDataset(17);
    const projectId = randomUUID();
    const other = randomUUID();
    const dataDir = mkdtempSync(join(tmpdir(), "tidemark-layout-"));
    const open = async () => {
      const store = new DuckDbEventStore(new DuckDbDatabase(dataDir, { memoryLimit: "256MB", threads: 1 }), {
        keyFilter,
      });
      await store.start();
      return store;
    };
    try {
      let store = await open();
      const first = data.slice(0, 600);
      // In one commit: a copy of an earlier event of the same commit.
      const outcome = await store.insert([...first, first[0]!].map((e) => stored(projectId, e)));
      assert.equal(outcome.inserted, first.length);
      // Retried at once, mixed with new events of the project and the same uuids in another project.
      const retried = await store.insert(
        [...data.slice(300, 900)].map((e) => stored(projectId, e)).concat(first.map((e) => stored(other, e))),
      );
      assert.equal(retried.inserted, 300 + first.length, JSON.stringify(keyFilter));
      await store.close();
      // After a restart the filter is built from the table.
      store = await open();
      const afterRestart = await store.insert(data.map((e) => stored(projectId, e)));
      assert.equal(afterRestart.inserted, data.length - 900);
      assert.equal((await store.readLedger(projectId)).stored, data.length);
      assert.equal((await store.readLedger(other)).stored, first.length);
      await assertConformance(store, projectId, data);
      await store.close();
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  }
});

test("one user's events: an id never seen, or seen only in another project, has none", async () => {
  const data = makeDataset(23);
  const projectId = randomUUID();
  const other = randomUUID();
  await withStore(async (store) => {
    await store.insert(data.map((e) => stored(projectId, e)));
    await store.insert([{ ...stored(other, data[0]!), distinctId: "only-elsewhere" }]);
    for (const id of ["nobody", "only-elsewhere"]) {
      const result = await store.query(projectId, parseQuerySpec({ kind: "events", distinct_id: id }));
      assert.deepEqual((result as { events: unknown[] }).events, [], id);
    }
    const someone = data[0]!.distinct_id;
    const theirs = await store.query(
      projectId,
      parseQuerySpec({ kind: "events", distinct_id: someone, limit: 1000 }),
    );
    const expected = data.filter((e) => e.distinct_id === someone).length;
    assert.equal((theirs as { events: unknown[] }).events.length, expected);
  });
});

/**
 * Differences between the rollups and the events: (project, event, hour) counts, and (project,
 * event, day, uid) from the daily users' bitmaps, pending rows included, against the events'.
 */
async function rollupsMatch(db: DuckDbDatabase): Promise<void> {
  const [counts] = await row(
    db,
    `SELECT count(*) FROM (
       SELECT project_id, event, date_trunc('hour', timestamp) AS hour, count(*) AS n FROM events GROUP BY ALL
       EXCEPT SELECT project_id, event, hour, sum(n) FROM event_counts GROUP BY ALL)`,
  );
  const [summed, events] = await row(
    db,
    "SELECT (SELECT sum(n) FROM event_counts), (SELECT count(*) FROM events)",
  );
  assert.equal(counts, 0n, "hourly counts differ from the events");
  assert.equal(summed, events);
  const [users] = await row(
    db,
    `WITH rolled AS (
       SELECT project_id, event, day, chunk * ${CHUNK_BITS} + i AS uid
       FROM (SELECT project_id, event, day, chunk, bit_or(users) AS users FROM ${USER_DAYS_ROLLUP.relation} r GROUP BY ALL),
         range(${CHUNK_BITS}) t(i)
       WHERE get_bit(users, CAST(i AS INTEGER)) = 1
     ),
     stored AS (SELECT DISTINCT project_id, event, date_trunc('day', timestamp) AS day, uid FROM events)
     SELECT (SELECT count(*) FROM (SELECT * FROM rolled EXCEPT ALL SELECT * FROM stored))
       + (SELECT count(*) FROM (SELECT * FROM stored EXCEPT ALL SELECT * FROM rolled))`,
  );
  assert.equal(users, 0n, "daily users differ from the events");
}

test("the hourly counts and daily users equal the events, through retries, compaction, folds, restarts and a project's deletion", async () => {
  const data = makeDataset(19);
  const projectId = randomUUID();
  const other = randomUUID();
  const dataDir = mkdtempSync(join(tmpdir(), "tidemark-layout-"));
  const open = async () => {
    const db = new DuckDbDatabase(dataDir, { memoryLimit: "256MB", threads: 1 });
    // Compaction every 3 commits folds the counts, and 200 pending rows the daily users, while
    // commits go on.
    const store = new DuckDbEventStore(db, { compactEvery: 3, userDaysFoldRows: 200 });
    await store.start();
    return { db, store };
  };
  try {
    let { db, store } = await open();
    for (let i = 0; i < data.length; i += 150)
      await store.insert(data.slice(i, i + 150).map((e) => stored(projectId, e)));
    // Retries of everything, and the same uuids in another project.
    await store.insert(data.slice(0, 400).map((e) => stored(projectId, e)));
    await store.insert(data.slice(0, 400).map((e) => stored(other, e)));
    await rollupsMatch(db);
    await store.userDaysSettled();
    // Fewer than a fold's rows after it: they stay pending.
    await store.insert(data.slice(0, 10).map((e) => stored(randomUUID(), e)));
    const [folded, pending] = await row(
      db,
      "SELECT (SELECT count(*) FROM user_days), (SELECT count(*) FROM user_days_pending)",
    );
    assert.ok(Number(folded) > 0, "some daily users were folded into bitmaps");
    assert.ok(Number(pending) > 0, "and some are still pending: queries read both");
    await rollupsMatch(db);
    await assertConformance(store, projectId, data);
    await store.close();
    ({ db, store } = await open());
    await store.insert(data.slice(300, 700).map((e) => stored(projectId, e)));
    await store.userDaysSettled();
    await rollupsMatch(db);
    await assertConformance(store, projectId, data);
    await store.deleteProject(other);
    await rollupsMatch(db);
    for (const table of ["event_counts", "user_days", "user_days_pending"]) {
      const [left] = await row(db, `SELECT count(*) FROM ${table} WHERE project_id = '${other}'`);
      assert.equal(left, 0n, table);
    }
    await store.close();
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test("commits keep succeeding past the memory cap that the key index used to fill; a large project's keys are found after a restart, whole or in slices", async () => {
  // With a PRIMARY KEY, DuckDB kept an index of every key in memory and commits failed with
  // out-of-memory at about 450K events under a 32MB cap. Without it, 24MB holds any number.
  const dataDir = mkdtempSync(join(tmpdir(), "tidemark-layout-"));
  const open = async (keyFilter?: KeyFilterOptions) => {
    const store = new DuckDbEventStore(new DuckDbDatabase(dataDir, { memoryLimit: "24MB", threads: 1 }), {
      keyFilter,
    });
    await store.start();
    return store;
  };
  let store = await open();
  try {
    const projectId = randomUUID();
    const total = 500_000;
    const batch = () => plainEvents(projectId, 5000);
    const sent: StoredEvent[][] = [];
    for (let n = 0; n < total; n += 5000) {
      const events = batch();
      if (n % 100_000 === 0) sent.push(events);
      await store.insert(events);
    }
    assert.equal((await store.readLedger(projectId)).stored, total);
    // Past 100K keys a project's filter is built by a query of its own; past `blocksPerSlice`
    // blocks (46,875 here), by several, each over a slice of the blocks. Then read back as saved.
    for (const [keyFilter, build] of [
      [{}, "from the table"],
      [{ blocksPerSlice: 10_000 }, "from the table"],
      [{}, "as saved"],
    ] as const) {
      await store.close();
      const saved = join(dataDir, "tidemark.duckdb.keys");
      assert.ok(existsSync(saved), "a clean stop saves the filter");
      if (build === "from the table") rmSync(saved);
      store = await open(keyFilter);
      for (const events of sent)
        assert.equal((await store.insert(events)).inserted, 0, JSON.stringify(keyFilter));
      const fresh = batch();
      sent.push(fresh);
      assert.equal((await store.insert(fresh)).inserted, 5000);
    }
  } finally {
    await store.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test("a clean stop saves the key filter and one start reads it back; a stale, damaged or foreign one is rebuilt from the table", async () => {
  const dataDir = mkdtempSync(join(tmpdir(), "tidemark-layout-"));
  const saved = join(dataDir, "tidemark.duckdb.keys");
  const loads: Record<string, unknown>[] = [];
  const log = {
    info: (obj: object, msg?: string) => {
      if (msg === "event keys loaded") loads.push(obj as Record<string, unknown>);
    },
    warn: () => undefined,
    error: () => undefined,
  };
  const open = async () => {
    const store = new DuckDbEventStore(new DuckDbDatabase(dataDir, { memoryLimit: "128MB", threads: 1 }), {
      log,
    });
    await store.start();
    return store;
  };
  const projects = [randomUUID(), randomUUID(), randomUUID()];
  const batch = plainEvents;
  const sent: StoredEvent[] = [];
  const send = async (store: DuckDbEventStore, events: StoredEvent[]) => {
    assert.equal((await store.insert(events)).inserted, events.length);
    sent.push(...events);
  };
  /** Every event sent so far is a duplicate: the filter, however loaded, holds every stored key. */
  const retriesAreDuplicates = async (store: DuckDbEventStore) => {
    for (let i = 0; i < sent.length; i += 1000)
      assert.equal((await store.insert(sent.slice(i, i + 1000))).inserted, 0);
  };
  let store = await open();
  try {
    assert.equal(loads.at(-1)?.from, "table");
    for (const projectId of projects) await send(store, batch(projectId, 3000));
    await store.close();
    assert.ok(existsSync(saved), "a clean stop saves the filter");
    const stale = join(dataDir, "stale.keys");
    copyFileSync(saved, stale);

    store = await open();
    assert.equal(loads.at(-1)?.from, "saved");
    assert.equal(loads.at(-1)?.keys, 9000);
    assert.ok(!existsSync(saved), "read once: a crash from here on leaves nothing to misread");
    await retriesAreDuplicates(store);
    await send(store, batch(projects[0]!, 500));
    await store.close();

    // The file of the first stop, after commits it does not hold: not used.
    copyFileSync(stale, saved);
    store = await open();
    assert.deepEqual(
      [loads.at(-1)?.from, loads.at(-1)?.unusable],
      ["table", "key counts differ from the table's"],
    );
    await retriesAreDuplicates(store);
    await store.close();

    // A byte changed, or the file cut short.
    const damage: [string, (file: Buffer) => Buffer][] = [
      [
        "checksum mismatch",
        (file) => {
          file[file.length - 7]! ^= 0x10;
          return file;
        },
      ],
      ["truncated", (file) => file.subarray(0, file.length - 64)],
      ["trailing bytes", (file) => Buffer.concat([file, Buffer.alloc(8)])],
      ["unreadable header", (file) => file.subarray(5)],
    ];
    for (const [reason, change] of damage) {
      writeFileSync(saved, change(readFileSync(saved)));
      store = await open();
      assert.deepEqual([loads.at(-1)?.from, loads.at(-1)?.unusable], ["table", reason]);
      await retriesAreDuplicates(store);
      await send(store, batch(projects[2]!, 10));
      await store.close();
    }

    // A project deleted between two stops: the saved filter is the table's still.
    store = await open();
    assert.equal(loads.at(-1)?.from, "saved");
    await store.deleteProject(projects[1]!);
    const [, kept] = [sent.splice(3000, 3000), sent];
    await store.close();
    store = await open();
    assert.deepEqual([loads.at(-1)?.from, loads.at(-1)?.keys], ["saved", kept.length]);
    await retriesAreDuplicates(store);
    await store.close();

    // Another store's file, of other projects.
    const other = mkdtempSync(join(tmpdir(), "tidemark-layout-"));
    try {
      const foreign = new DuckDbEventStore(new DuckDbDatabase(other, { memoryLimit: "128MB", threads: 1 }));
      await foreign.start();
      await foreign.insert(batch(randomUUID(), 100));
      await foreign.close();
      copyFileSync(join(other, "tidemark.duckdb.keys"), saved);
    } finally {
      rmSync(other, { recursive: true, force: true });
    }
    store = await open();
    assert.deepEqual(
      [loads.at(-1)?.from, loads.at(-1)?.unusable],
      ["table", "projects differ from the table's"],
    );
    await retriesAreDuplicates(store);
  } finally {
    await store.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test("a start checkpoints what it wrote before it takes commits: once the store is open, its WAL is empty", async () => {
  const projectId = randomUUID();
  const logged: string[] = [];
  const walBytes = (dataDir: string) => {
    const wal = join(dataDir, "tidemark.duckdb.wal");
    return existsSync(wal) ? statSync(wal).size : 0;
  };
  await withStore(
    async (store, _db, dataDir) => {
      assert.ok(logged.includes("embedded store checkpointed"), logged.join("; "));
      assert.equal(walBytes(dataDir), 0, "the start's compaction is checkpointed");
      await store.insert(plainEvents(projectId, 10));
      assert.ok(walBytes(dataDir) > 0, "a commit writes the WAL");
      assert.equal((await store.readLedger(projectId)).stored, 60);
    },
    async (dataDir) => {
      const writer = new DuckDbEventStore(new DuckDbDatabase(dataDir, { memoryLimit: "256MB", threads: 1 }));
      await writer.start();
      for (let i = 0; i < 5; i++) await writer.insert(plainEvents(projectId, 10));
      await writer.close();
    },
    { log: { info: (_: object, message?: string) => logged.push(message ?? ""), warn() {}, error() {} } },
  );
});

test("a store from a newer version is refused with the reason", async () => {
  const dataDir = mkdtempSync(join(tmpdir(), "tidemark-layout-"));
  try {
    const instance = await DuckDBInstance.create(join(dataDir, "tidemark.duckdb"));
    const connection = await instance.connect();
    await connection.run(SCHEMA_V1);
    await connection.run("INSERT INTO schema_migrations VALUES (99, now())");
    connection.closeSync();
    instance.closeSync();
    const store = new DuckDbEventStore(new DuckDbDatabase(dataDir, { memoryLimit: "256MB", threads: 1 }));
    await assert.rejects(store.start(), /schema version 99, newer than this Tidemark/);
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});

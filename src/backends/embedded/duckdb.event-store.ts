import {
  type DuckDBConnection,
  type DuckDBPreparedStatement,
  type DuckDBValue,
  LIST,
  listValue,
  VARCHAR,
} from "@duckdb/node-api";
import type { CommitOutcome, Ledger, LedgerDelta, StoredEvent } from "../../core/event.js";
import type { Log } from "../../core/log.js";
import type { AnalyticsStore, EventStore } from "../../pipeline/event-store.js";
import { commitResult, eventKey, ledgerRows, readLedgerRows } from "../../pipeline/ledger-rows.js";
import { IdentityResolver, LINK_EVENTS, SET_MARK } from "../../query/identity.js";
import { propertiesReadBy, type QueryResult, type QuerySpec } from "../../query/spec.js";
import { SqlQueryBuilder, type SqlStatement, type UserStrategies } from "../../query/sql-builder.js";
import { type RunSql, SqlQueryRunner, sqlIdentitySource } from "../../query/sql-runner.js";
import { type DuckDbDatabase, PERFECT_HASH_BITS } from "./duckdb.database.js";
import { DayOrder } from "./duckdb.day-order.js";
import { duckDbDialect } from "./duckdb.dialect.js";
import { DISTINCT_IDS, Dictionary, type NewEntries, SerialLock } from "./duckdb.dictionary.js";
import { EventIds } from "./duckdb.event-ids.js";
import { KEY_HASH_HALVES, KeyFilter, type KeyFilterOptions, type KeyHash } from "./duckdb.key-filter.js";
import { PlanHints } from "./duckdb.plan-hints.js";
import { PropertyColumnRegistry, slotValueColumns } from "./duckdb.property-columns.js";
import { EVENT_TABLES, type EventTable, LATE_MS } from "./duckdb.schema.js";
import { INSERT_USER_DAYS, USER_DAYS_ROLLUP, UserDays } from "./duckdb.user-days.js";

// Rows travel to DuckDB as one NDJSON text parameter that DuckDB parses on its own threads: one
// call across the native boundary per commit instead of one per value (the Appender's cost).
const ROW_SHAPE = `'{"p":"VARCHAR","u":"VARCHAR","e":"VARCHAR","n":"INTEGER","d":"VARCHAR","i":"BIGINT","t":"BIGINT","props":"JSON","r":"BIGINT"}'`;

/**
 * The insert of a commit's rows for a project with `slots` property columns to fill ($2: their
 * JSON pointers, in slot order; one parse of each row's JSON fills them all). Rows are not sorted:
 * a commit is far smaller than a row group, whose min/max is what scans skip by, and an ORDER BY
 * halves the insert rate. It returns each row's uid and its key's hash (the halves KeyFilter uses),
 * so the commit checks the rows against the key filter without another statement. Numbers, not
 * the key's text: reading a 740-row commit's project and uuid strings took the JS thread 4.7 µs a
 * row, three numbers 0.32 µs (the insert and the read, 7.5 -> 3.8 ms of CPU).
 */
function insertSql(table: EventTable, slots: number): string {
  const filled = slotValueColumns(slots);
  const extract =
    slots > 0
      ? ", json_extract_string(j.props, $2::VARCHAR[]) AS x, json_type(j.props, $2::VARCHAR[]) AS y"
      : "";
  const columns = [
    "project_id",
    "uuid",
    "event",
    "eid",
    "distinct_id",
    "uid",
    "timestamp",
    "properties",
    "received_at",
  ];
  const values = [
    "CAST(j.p AS UUID)",
    "CAST(j.u AS UUID)",
    "j.e",
    "j.n",
    "j.d",
    "j.i",
    "epoch_ms(j.t)",
    "j.props",
    "epoch_ms(j.r)",
  ];
  return `INSERT INTO ${table} (${[...columns, ...filled.columns].join(", ")})
    SELECT ${[...values, ...filled.values].join(", ")}
    FROM (SELECT j${extract} FROM (SELECT from_json(unnest(string_split($1, chr(10))), ${ROW_SHAPE}) AS j))
    RETURNING CAST(uid AS DOUBLE) AS uid, ${KEY_HASH_HALVES}`;
}

/** One NDJSON line per event; `properties` is already JSON text, and JSON text has no raw newline. */
function toLine(e: StoredEvent, ids: EventIdsOf): string {
  return `{"p":"${e.projectId}","u":"${e.uuid}","e":${JSON.stringify(e.event)},"n":${ids.eid(e)},"d":${JSON.stringify(e.distinctId)},"i":${ids.uid(e)},"t":${e.timestamp},"props":${e.properties},"r":${e.receivedAt}}`;
}

/** An event's user id and event id, as its commit assigned them. */
interface EventIdsOf {
  uid(e: StoredEvent): number;
  eid(e: StoredEvent): number;
}

/** Memory the bitstrings of one distinct count may take (see userStrategies). */
const BITSTRING_BUDGET_BYTES = 32 * 1024 * 1024;
/** Users that may be created between reading the uid range and the query's snapshot. */
const BITSTRING_MARGIN = 100_000;

/** A commit's rows for one table, of projects that fill the same property columns. */
interface RowGroup {
  table: EventTable;
  paths: readonly string[];
  lines: string[];
}

/** A commit's counts by (project, event, hour): one NDJSON line each, `h` the hour's epoch ms. */
const INSERT_COUNTS = `INSERT INTO event_counts SELECT CAST(j.p AS UUID), j.e, epoch_ms(j.h), j.n
  FROM (SELECT from_json(unnest(string_split($1, chr(10))), '{"p":"VARCHAR","e":"VARCHAR","h":"BIGINT","n":"BIGINT"}') AS j)`;

const HOUR_MS = 3_600_000;
/** How many events of a project and name the hourly rollup holds from an hour's start to a time. */
const EVENTS_IN_RANGE = `SELECT CAST(coalesce(sum(n), 0) AS BIGINT) FROM event_counts
  WHERE project_id = CAST($1 AS UUID) AND event = $2 AND hour >= epoch_ms(CAST($3 AS BIGINT)) AND hour < epoch_ms(CAST($4 AS BIGINT))`;

/** The NDJSON of INSERT_COUNTS for a commit's new events. */
function countLines(events: Iterable<StoredEvent>): string {
  const counts = new Map<string, { p: string; e: string; h: number; n: number }>();
  for (const e of events) {
    const h = Math.floor(e.timestamp / HOUR_MS) * HOUR_MS;
    const key = `${e.projectId}/${h}/${e.event}`;
    const count = counts.get(key);
    if (count) count.n++;
    else counts.set(key, { p: e.projectId, e: e.event, h, n: 1 });
  }
  return [...counts.values()].map((count) => JSON.stringify(count)).join("\n");
}

const LEDGER_SHAPE = `'{"p":"VARCHAR","o":"VARCHAR","n":"BIGINT"}'`;
const INSERT_LEDGER = `INSERT INTO ledger_entries SELECT CAST(j.p AS UUID), j.o, j.n
  FROM (SELECT from_json(unnest(string_split($1, chr(10))), ${LEDGER_SHAPE}) AS j)`;

/** The connection that commits events, with its statements prepared once. */
interface EventWriter {
  connection: DuckDBConnection;
  /** By `${table}/${slots}`, prepared on first use. */
  inserts: Map<string, DuckDBPreparedStatement>;
  insertLedger: DuckDBPreparedStatement;
  insertCounts: DuckDBPreparedStatement;
  insertUserDays: DuckDBPreparedStatement;
  /** Prepared once: parsed each time, they cost 0.1 ms of CPU more each. */
  begin: DuckDBPreparedStatement;
  commit: DuckDBPreparedStatement;
}

async function insertStatement(writer: EventWriter, table: EventTable, slots: number) {
  const key = `${table}/${slots}`;
  let statement = writer.inserts.get(key);
  if (!statement) {
    statement = await writer.connection.prepare(insertSql(table, slots));
    writer.inserts.set(key, statement);
  }
  return statement;
}

/** What the insert returned of a row: its user's uid (a uid belongs to one project) and its key's hash. */
interface InsertedRow {
  uid: number;
  hash: KeyHash;
}

/** Which of a project's uuids the table holds ($2: the uuids, one a line). */
const STORED_UUIDS = `SELECT CAST(uuid AS VARCHAR) AS u FROM events
  WHERE project_id = CAST($1 AS UUID) AND uuid IN (SELECT CAST(unnest(string_split($2, chr(10))) AS UUID))`;

/** The uid of each given distinct id of a project that has events ($2: a JSON array of ids). */
const USER_KEYS = `SELECT distinct_id, uid FROM distinct_ids
  WHERE project_id = CAST($1 AS UUID) AND distinct_id IN (SELECT unnest(from_json($2, '["VARCHAR"]')))`;

const LINK_EVENT_NAMES: ReadonlySet<string> = new Set(LINK_EVENTS);

/** A commit that meets no new user and no new event name. */
const NO_NEW_IDS = { users: { lines: [], keys: [] }, names: { lines: [], keys: [] } };

/**
 * Events in the embedded DuckDB file. Commits run one at a time on one connection. A commit
 * inserts its rows with one statement (one per project that has property columns to fill), which
 * returns each key's hash; the key filter (duckdb.key-filter.ts) says of most keys that the store
 * cannot hold them, and when it may hold one the commit is redone without the events the table
 * holds (commitRows). The same transaction adds the hourly counts and the daily users
 * (duckdb.user-days.ts) and updates the ledger. Each row carries its user's integer uid and its
 * event name's integer eid (duckdb.dictionary.ts, duckdb.event-ids.ts), and the typed columns of
 * the properties queries read (duckdb.property-columns.ts).
 *
 * Events more than a day older than their project's newest go to a table of their own
 * (`events_late`, duckdb.schema.ts), so that backfills leave the time ranges of the in-order row
 * groups narrow; readers read both through the view `events`. Sorting a final day folds its late
 * events back in order (duckdb.day-order.ts).
 *
 * One commit at a time is what keeps the check and the insert exact: no other commit can store a
 * key between them. It is also the faster way here: two writers made commits half as large, and a
 * DuckDB commit costs about 3 ms of CPU however few events it holds (benchmarks/README.md).
 */
export class DuckDbEventStore implements EventStore, AnalyticsStore {
  readonly name = "duckdb";
  private readonly run: RunSql;
  private readonly distinctIds = new Dictionary(DISTINCT_IDS);
  private readonly eventIds: EventIds;
  /**
   * Held by a commit that meets new users or new event names, from assigning their ids to the end
   * of its transaction (duckdb.dictionary.ts): one lock for both dictionaries, so a commit never
   * holds one while it waits for the other.
   */
  private readonly newIds = new SerialLock();
  private readonly properties: PropertyColumnRegistry;
  /** Commits under way: a property column's fill waits for those that began before its slot. */
  private readonly commitsUnderWay = new Set<Promise<void>>();
  private commitsSinceCompaction = 0;
  /**
   * Per project, how many commits held link events, and events carrying `$set`: the markers of its
   * identity (src/query/identity.ts). This process is the file's only writer, so counting its own
   * commits is exact and costs no query; a version is bumped after its commit, so a resolution read
   * while a commit runs is read again by the next query.
   */
  private readonly identityVersions = new Map<string, { links: number; properties: number }>();
  private readonly identity: IdentityResolver<number>;
  /** Per project, the linked ids its last resolution found no uid for (they had no events). */
  private readonly unkeyed = new Map<string, Set<string>>();
  private readonly keys: KeyFilter;
  /** The key filter was loaded at start, so a stop may save it. */
  private keysLoaded = false;
  private readonly userDays: UserDays;
  private readonly dayOrder: DayOrder;
  /**
   * Per project, the newest time of its in-order events (each counted up to LATE_MS past its
   * arrival): events more than LATE_MS older go to `events_late` (duckdb.schema.ts). Read from the
   * table at start, moved by each commit; commits run one at a time, so it is exact.
   */
  private readonly frontiers = new Map<string, number>();
  /** While a property column is added to `events_in_order`, commits write to `events_late` alone. */
  private diverted = false;
  private readonly planHints = new PlanHints();
  private writer?: EventWriter;
  private readonly writerWaiters: ((writer: EventWriter) => void)[] = [];

  private readonly compactEvery: number;
  private readonly bitstringMargin: number;
  private readonly log?: Log;

  /** The ledger is compacted every `compactEvery` commits (10,000 by default). */
  constructor(
    private readonly db: DuckDbDatabase,
    options: {
      compactEvery?: number;
      log?: Log;
      /** Uids past the highest known that a distinct count allows for (tests set it below 0). */
      bitstringMargin?: number;
      /** The key filter's sizes (tests make it small, so that it errs often). */
      keyFilter?: KeyFilterOptions;
      /** Pending daily-user rows that start a fold (duckdb.user-days.ts; tests make it small). */
      userDaysFoldRows?: number;
      /** Events a property column's fill writes in one transaction (tests make it small). */
      propertyFillSliceEvents?: number;
      /** Events an event-id fill writes in one transaction (tests make it small). */
      eventIdFillSliceEvents?: number;
      /** Events a day needs to be sorted by event (duckdb.day-order.ts; tests make it small). */
      sortedDayMinEvents?: number;
      /** Events sorted in one transaction at most (duckdb.day-order.ts; tests make it small). */
      sortedDayMaxEvents?: number;
      /** Awaited while commits go to `events_late` for a property column's ALTER (tests hold it). */
      whileCommitsDiverted?: () => Promise<void>;
    } = {},
  ) {
    this.keys = new KeyFilter(options.keyFilter);
    this.userDays = new UserDays((work) => this.db.transaction(work), options.userDaysFoldRows);
    this.bitstringMargin = options.bitstringMargin ?? BITSTRING_MARGIN;
    this.compactEvery = options.compactEvery ?? 10_000;
    this.log = options.log;
    this.dayOrder = new DayOrder({
      // The least urgent write: it waits while any other waits (duckdb.write-queue.ts).
      // A sort folds late events into their days, which may leave `events_late` empty.
      transaction: (work) =>
        this.db.transaction(work, "background").finally(() => this.planHints.lateRowsChanged()),
      log: this.log,
      minEvents: options.sortedDayMinEvents,
      maxEvents: options.sortedDayMaxEvents,
    });
    this.run = async (statement) => {
      const connection = await this.readerFor(statement);
      const reader = await connection.runAndReadAll(statement.sql, statement.params as DuckDBValue[]);
      return reader.getRowObjects() as Record<string, unknown>[];
    };
    const version = (projectId: string) =>
      this.identityVersions.get(projectId) ?? { links: 0, properties: 0 };
    const statements = new SqlQueryBuilder(duckDbDialect);
    this.identity = new IdentityResolver<number>(
      sqlIdentitySource<number>(statements, this.run, {
        linkMarker: async (projectId) => String(version(projectId).links),
        propertyMarker: async (projectId) => String(version(projectId).properties),
        propertyCount: async (projectId) =>
          Number((await this.run(statements.propertyEventCount(projectId)))[0]?.n ?? 0),
        userKeys: async (projectId, ids) => {
          const rows = await this.run({ sql: USER_KEYS, params: [projectId, JSON.stringify(ids)] });
          const keys = new Map(rows.map((row) => [String(row.distinct_id), Number(row.uid)]));
          // A linked id with no events has no uid yet: its first event must change the people.
          const waiting = ids.filter((id) => !keys.has(id));
          if (waiting.length > 0) this.unkeyed.set(projectId, new Set(waiting));
          else this.unkeyed.delete(projectId);
          // One committed while this read ran: the next query resolves again.
          const known = this.distinctIds.known(new Set(waiting.map((id) => `${projectId}/${id}`)));
          if (known.ids.size > 0) this.noteNewUsers([...known.ids]);
          return keys;
        },
      }),
    );
    this.eventIds = new EventIds({
      serialWrites: (work) => this.db.write(() => work()),
      sliceEvents: options.eventIdFillSliceEvents,
      log: this.log,
    });
    this.properties = new PropertyColumnRegistry({
      commitsUnderWay: () => Promise.all([...this.commitsUnderWay]).then(() => undefined),
      // The one writer held, no commit runs: DuckDB refuses to alter a table others write.
      withoutCommits: (work) => this.withWriter(() => work()),
      divertCommits: (diverted) => {
        this.diverted = diverted;
      },
      whileDiverted: options.whileCommitsDiverted,
      serialWrites: (work) => this.db.write(() => work()),
      fillSliceEvents: options.propertyFillSliceEvents,
      log: this.log,
    });
  }

  async start(): Promise<void> {
    await this.db.open();
    const { memoryLimit, threads } = await this.db.settings();
    this.log?.info({ path: this.db.path, memory_limit: memoryLimit, threads }, "embedded store open");
    await this.compactLedger();
    await this.distinctIds.open(this.db.readConnection());
    await this.userDays.open(this.db.readConnection());
    const frontiers = await this.db.readConnection().runAndReadAll(
      `SELECT CAST(project_id AS VARCHAR), epoch_ms(max(least(timestamp, received_at + to_milliseconds(${LATE_MS}))))
       FROM events_in_order GROUP BY project_id`,
    );
    for (const [projectId, frontier] of frontiers.getRowsJS() as [string, bigint][])
      this.frontiers.set(projectId, Number(frontier));
    const loading = performance.now();
    const loaded = await this.keys.load(this.db.readConnection(), this.savedKeysPath());
    this.log?.info(
      { ...loaded, bytes: this.keys.size().bytes, took_ms: Math.round(performance.now() - loading) },
      "event keys loaded",
    );
    // The first checkpoint after the file opens reads every row group's metadata, and commits wait
    // for checkpoints: on the bench's 10M-event store it took 0.86-0.97 s, and the first commits
    // to reach one waited 1.76-1.90 s (0.54 s with this). The compaction above always writes in a
    // store with events, so this checkpoint is a real one (DuckDB skips one with nothing to write),
    // paid before the store takes commits.
    const checkpointing = performance.now();
    await this.db.write(async (connection) => {
      await connection.run("CHECKPOINT");
    });
    this.log?.info({ took_ms: Math.round(performance.now() - checkpointing) }, "embedded store checkpointed");
    await this.properties.open(await this.db.connect());
    const connection = await this.db.connect();
    this.writer = {
      connection,
      inserts: new Map(),
      insertLedger: await connection.prepare(INSERT_LEDGER),
      insertCounts: await connection.prepare(INSERT_COUNTS),
      insertUserDays: await connection.prepare(INSERT_USER_DAYS),
      begin: await connection.prepare("BEGIN TRANSACTION"),
      commit: await connection.prepare("COMMIT"),
    };
    this.keysLoaded = true;
    // Days that became final while the store was closed, or before it sorted days.
    await this.dayOrder.open(this.db.readConnection());
    for (const [projectId, frontier] of this.frontiers) this.dayOrder.advanced(projectId, frontier);
    // Stores migrated from schema 8: their events' ids are filled in the background.
    await this.eventIds.open(this.db.readConnection(), await this.db.connect());
  }

  private async withWriter<T>(work: (writer: EventWriter) => Promise<T>): Promise<T> {
    const writer = await this.acquireWriter();
    try {
      return await work(writer);
    } finally {
      this.releaseWriter(writer);
    }
  }

  private acquireWriter(): Promise<EventWriter> {
    const idle = this.writer;
    if (idle) {
      this.writer = undefined;
      return Promise.resolve(idle);
    }
    return new Promise((resolve) => this.writerWaiters.push(resolve));
  }

  private releaseWriter(writer: EventWriter): void {
    const next = this.writerWaiters.shift();
    if (next) next(writer);
    else this.writer = writer;
  }

  async ready(): Promise<string | undefined> {
    try {
      await this.db.readConnection().run("SELECT 1");
      return undefined;
    } catch (error) {
      return `duckdb: ${(error as Error).message}`;
    }
  }

  /** Where a clean stop saves the key filter for the next start (duckdb.key-filter.ts). */
  private savedKeysPath(): string {
    return `${this.db.path}.keys`;
  }

  async close(): Promise<void> {
    await this.userDays.settled();
    await this.properties.close();
    await this.eventIds.close();
    await this.dayOrder.close();
    if (this.keysLoaded) {
      this.keysLoaded = false;
      // With the writer held, no commit is under way: the filter holds what the table holds.
      const saving = performance.now();
      try {
        const saved = await this.withWriter(() =>
          this.keys.save(this.savedKeysPath(), this.db.readConnection()),
        );
        if (saved) this.log?.info({ took_ms: Math.round(performance.now() - saving) }, "event keys saved");
        else
          this.log?.warn(
            {},
            "the event keys differ from the table's; the next start builds them from the table",
          );
      } catch (error) {
        this.log?.warn(
          { err: error },
          "saving the event keys failed; the next start builds them from the table",
        );
      }
    }
    await this.db.close();
  }

  insert(events: readonly StoredEvent[]): Promise<CommitOutcome> {
    // Registered before the commit reads which property columns to fill (see commitsUnderWay).
    let done!: () => void;
    const underWay = new Promise<void>((resolve) => {
      done = resolve;
    });
    this.commitsUnderWay.add(underWay);
    return this.commit(events)
      .then((outcome) => {
        this.noteIdentity(events);
        return outcome;
      })
      .finally(() => {
        this.commitsUnderWay.delete(underWay);
        done();
      });
  }

  /** A linked id that had no uid got one: its project's people are resolved again. */
  private noteNewUsers(keys: readonly (readonly [string, number])[]): void {
    if (this.unkeyed.size === 0) return;
    for (const [key] of keys) {
      const slash = key.indexOf("/");
      const projectId = key.slice(0, slash);
      if (!this.unkeyed.get(projectId)?.has(key.slice(slash + 1))) continue;
      this.unkeyed.delete(projectId);
      const version = this.identityVersions.get(projectId) ?? { links: 0, properties: 0 };
      version.links++;
      this.identityVersions.set(projectId, version);
    }
  }

  /** Bumps the identity markers of the projects whose committed events link ids or set properties. */
  private noteIdentity(events: readonly StoredEvent[]): void {
    for (const e of events) {
      const link = LINK_EVENT_NAMES.has(e.event);
      // Properties are stored as JSON.stringify wrote them, so a `$set` key is `"$set` in the text.
      const sets = e.properties.includes(SET_MARK);
      if (!link && !sets) continue;
      let version = this.identityVersions.get(e.projectId);
      if (!version) {
        version = { links: 0, properties: 0 };
        this.identityVersions.set(e.projectId, version);
      }
      if (link) version.links++;
      if (sets) version.properties++;
    }
  }

  private commit(events: readonly StoredEvent[]): Promise<CommitOutcome> {
    return this.withWriter(async (writer) => {
      const unique = new Map<string, StoredEvent>();
      const users = new Set<string>();
      const names = new Set<string>();
      for (const e of events) {
        const key = eventKey(e);
        if (unique.has(key)) continue;
        unique.set(key, e);
        users.add(`${e.projectId}/${e.distinctId}`);
        names.add(`${e.projectId}/${e.event}`);
      }
      const user = this.distinctIds.known(users);
      const name = this.eventIds.names.known(names);
      const ids = { uids: user.ids, eids: name.ids };
      if (user.missing.length === 0 && name.missing.length === 0)
        return this.commitRows(writer, events, unique, ids, NO_NEW_IDS);
      return this.newIds.run(async () => {
        const created = {
          users: await this.distinctIds.assign(writer.connection, user.missing, user.ids),
          names: await this.eventIds.names.assign(writer.connection, name.missing, name.ids),
        };
        const outcome = await this.commitRows(writer, events, unique, ids, created);
        this.distinctIds.committed(created.users);
        this.eventIds.names.committed(created.names);
        this.noteNewUsers(created.users.keys);
        return outcome;
      });
    });
  }

  /**
   * Which of the given keys the store holds, one query a project: a scan of the project's uuids
   * (65-90 ms on 10M events). Asked only of the keys the filter may hold.
   */
  private async stored(
    connection: DuckDBConnection,
    keys: readonly Pick<StoredEvent, "projectId" | "uuid">[],
  ): Promise<Set<string>> {
    const byProject = new Map<string, string[]>();
    for (const { projectId, uuid } of keys) {
      const uuids = byProject.get(projectId);
      if (uuids) uuids.push(uuid);
      else byProject.set(projectId, [uuid]);
    }
    const found = new Set<string>();
    for (const [projectId, uuids] of byProject) {
      const reader = await connection.runAndReadAll(STORED_UUIDS, [projectId, uuids.join("\n")]);
      for (const [uuid] of reader.getRowsJS() as [string][]) found.add(`${projectId}/${uuid}`);
    }
    return found;
  }

  /**
   * One transaction: the commit's new users, its rows, and the ledger. The rows go in optimistically
   * and say their keys' hashes; when the key filter may hold one of them (a retry, or at most about
   * one new key in 15,000), the transaction is rolled back, the table is asked about the commit's
   * events of that key's user, and the commit is redone without what it holds. Once committed, the
   * keys of the rows inserted enter the filter.
   */
  private async commitRows(
    writer: EventWriter,
    events: readonly StoredEvent[],
    unique: ReadonlyMap<string, StoredEvent>,
    ids: { uids: ReadonlyMap<string, number>; eids: ReadonlyMap<string, number> },
    created: { users: NewEntries; names: NewEntries },
  ): Promise<CommitOutcome> {
    const { connection, insertLedger, insertCounts, insertUserDays } = writer;
    // The transaction is begun first and awaited only before the inserts: the commit's own JS
    // work (each row's line, the hourly counts, the daily users) runs while DuckDB begins it.
    // Under batches of 20 from 64 clients, BEGIN's answer took 5.05 ms of a 28.7 ms commit,
    // waiting for the JS thread (1.06 ms in process; benchmarks/README.md).
    let begun: Promise<unknown> = writer.begin.run();
    /** Whether an insert of this commit wrote to `events_late` (PlanHints.lateRowsChanged). */
    let wroteLate = false;
    /** Inserts `rows` in the transaction `begun` begins; what the insert returned of each. */
    const insert = async (rows: ReadonlyMap<string, StoredEvent>): Promise<InsertedRow[]> => {
      const groups = this.rowGroups(rows, idsOf);
      await begun;
      if (created.users.lines.length > 0)
        await connection.run(this.distinctIds.insertSql, [created.users.lines.join("\n")]);
      if (created.names.lines.length > 0)
        await connection.run(this.eventIds.names.insertSql, [created.names.lines.join("\n")]);
      const inserted: InsertedRow[] = [];
      for (const { table, paths, lines } of groups) {
        if (table === "events_late") wroteLate = true;
        const statement = await insertStatement(writer, table, paths.length);
        statement.bindVarchar(1, lines.join("\n"));
        if (paths.length > 0) statement.bindList(2, listValue([...paths]), LIST(VARCHAR));
        const reader = await statement.runAndReadAll();
        const [rowUids, blocks, bits] = reader.getColumnsJS() as [number[], number[], number[]];
        for (let i = 0; i < rowUids.length; i++)
          inserted.push({ uid: rowUids[i]!, hash: { block: blocks[i]!, bits: bits[i]! } });
      }
      return inserted;
    };
    // Each event's uid, looked up once: by the event itself, not by its long project/user text.
    const uidByEvent = new Map<StoredEvent, number>();
    const projectOf = new Map<number, string>();
    for (const e of unique.values()) {
      const uid = ids.uids.get(`${e.projectId}/${e.distinctId}`)!;
      uidByEvent.set(e, uid);
      projectOf.set(uid, e.projectId);
    }
    const uidOf = (e: StoredEvent) => uidByEvent.get(e)!;
    const idsOf: EventIdsOf = { uid: uidOf, eid: (e) => ids.eids.get(`${e.projectId}/${e.event}`)! };
    let pending: Promise<InsertedRow[]> | undefined;
    try {
      let fresh = unique;
      pending = insert(unique);
      // Built while the insert runs; built again in the rare case the key filter sends some back.
      let counts = countLines(unique.values());
      let userDays = this.userDays.rows(unique.values(), uidOf);
      let inserted = await pending;
      const doubtful = new Set<number>();
      for (const { uid, hash } of inserted)
        if (this.keys.mayHold(projectOf.get(uid)!, hash)) doubtful.add(uid);
      if (doubtful.size > 0) {
        await connection.run("ROLLBACK");
        const found = await this.stored(
          connection,
          [...unique.values()].filter((e) => doubtful.has(uidOf(e))),
        );
        fresh = new Map([...unique].filter(([key]) => !found.has(key)));
        begun = writer.begin.run();
        inserted = await insert(fresh);
        counts = countLines(fresh.values());
        userDays = this.userDays.rows(fresh.values(), uidOf);
      }
      if (fresh.size > 0) {
        insertCounts.bindVarchar(1, counts);
        await insertCounts.run();
      }
      if (userDays.keys.length > 0) {
        insertUserDays.bindVarchar(1, userDays.text);
        await insertUserDays.run();
      }
      const { outcome, ledger: deltas } = commitResult(events, fresh);
      // Only the duplicates: what a commit accepted is what it added to the hourly counts
      // (readLedger), so a commit without duplicates writes no ledger row.
      const ledger = ledgerText(deltas, COUNTED_OUTCOMES);
      if (ledger !== "") {
        insertLedger.bindVarchar(1, ledger);
        await insertLedger.run();
      }
      await writer.commit.run();
      if (wroteLate) this.planHints.lateRowsChanged();
      this.advanceFrontiers(fresh.values());
      // Durable now: later commits must find these keys.
      for (const { uid, hash } of inserted) this.keys.add(projectOf.get(uid)!, hash);
      this.userDays.appended(userDays, (error) =>
        this.log?.warn({ err: error }, "folding the daily users failed; the next commit retries"),
      );
      if (++this.commitsSinceCompaction >= this.compactEvery) {
        this.commitsSinceCompaction = 0;
        // The rows stay as they are and the next compaction folds them: readers sum either way,
        // so a failure costs only read time, but it is a fault of the store worth seeing.
        void this.compactLedger().catch((error: unknown) =>
          this.log?.warn({ err: error }, "ledger compaction failed; the next one retries"),
        );
      }
      return outcome;
    } catch (error) {
      // Never two statements at once on one connection: the BEGIN or the insert may be under way.
      await Promise.allSettled([begun, pending]);
      await connection.run("ROLLBACK").catch(() => undefined);
      throw error;
    }
  }

  /**
   * A commit's rows by the table they go to (late or in order, against their project's frontier
   * before the commit; all to `events_late` while commits are diverted) and the property columns
   * they fill: per table, one group for the projects without columns, one for each project with
   * some.
   */
  private rowGroups(rows: ReadonlyMap<string, StoredEvent>, ids: EventIdsOf): Set<RowGroup> {
    const groups = new Map<string, RowGroup>();
    for (const e of rows.values()) {
      const table = this.diverted || this.isLate(e) ? "events_late" : "events_in_order";
      let group = groups.get(`${table}/${e.projectId}`);
      if (!group) {
        const paths = this.properties.pathsToFill(e.projectId);
        const shared = paths.length === 0 ? groups.get(`${table}/`) : undefined;
        group = shared ?? { table, paths, lines: [] };
        if (paths.length === 0) groups.set(`${table}/`, group);
        groups.set(`${table}/${e.projectId}`, group);
      }
      group.lines.push(toLine(e, ids));
    }
    return new Set(groups.values());
  }

  /** An event more than LATE_MS older than its project's frontier goes to `events_late`. */
  private isLate(e: StoredEvent): boolean {
    const frontier = this.frontiers.get(e.projectId);
    return frontier !== undefined && e.timestamp < frontier - LATE_MS;
  }

  /**
   * Moves the frontiers past a commit's in-order events, and tells the day order how many were
   * late. An event's time counts only up to a day past its arrival: a client whose clock runs
   * years ahead must not make every later event late.
   */
  private advanceFrontiers(events: Iterable<StoredEvent>): void {
    const moved = new Set<string>();
    const late = new Map<string, number>();
    for (const e of events) {
      if (this.isLate(e)) {
        late.set(e.projectId, (late.get(e.projectId) ?? 0) + 1);
        continue;
      }
      const reach = Math.min(e.timestamp, e.receivedAt + LATE_MS);
      const frontier = this.frontiers.get(e.projectId);
      if (frontier === undefined || reach > frontier) {
        this.frontiers.set(e.projectId, reach);
        moved.add(e.projectId);
      }
    }
    for (const projectId of moved) this.dayOrder.advanced(projectId, this.frontiers.get(projectId)!);
    for (const [projectId, events] of late) this.dayOrder.lateArrived(projectId, events);
  }

  /**
   * Folds the ledger's rows into one per (project, outcome), and the hourly counts into one per
   * (project, event, hour); runs at start and every `compactEvery` commits.
   */
  private compactLedger(): Promise<void> {
    return this.db.transaction(async (connection) => {
      await connection.run(`CREATE OR REPLACE TEMP TABLE ledger_totals AS
        SELECT project_id, outcome, sum(n)::BIGINT AS n FROM ledger_entries GROUP BY project_id, outcome`);
      await connection.run("DELETE FROM ledger_entries");
      await connection.run("INSERT INTO ledger_entries SELECT * FROM temp.ledger_totals");
      await connection.run("DROP TABLE temp.ledger_totals");
      await connection.run(`CREATE OR REPLACE TEMP TABLE count_totals AS
        SELECT project_id, event, hour, sum(n)::BIGINT AS n FROM event_counts GROUP BY ALL`);
      await connection.run("DELETE FROM event_counts");
      await connection.run(
        "INSERT INTO event_counts SELECT * FROM temp.count_totals ORDER BY project_id, hour",
      );
      await connection.run("DROP TABLE temp.count_totals");
    });
  }

  recordLedger(deltas: ReadonlyMap<string, LedgerDelta>): Promise<void> {
    if (deltas.size === 0) return Promise.resolve();
    return this.db.transaction((connection) => appendLedger(connection, deltas));
  }

  async readLedger(projectId: string): Promise<Ledger> {
    const connection = this.db.readConnection();
    const rows = await connection.runAndReadAll(READ_LEDGER, [projectId]);
    const stored = await connection.runAndReadAll(
      "SELECT count(*) AS n FROM events WHERE project_id = CAST($1 AS UUID)",
      [projectId],
    );
    const [[count = 0n] = []] = stored.getRowsJS() as [bigint][];
    return readLedgerRows(rows.getRowsJS() as [string, bigint][], Number(count));
  }

  async deleteProject(projectId: string): Promise<void> {
    await this.db.transaction(async (connection) => {
      for (const table of [
        ...EVENT_TABLES,
        "ledger_entries",
        "event_counts",
        "user_days",
        "user_days_pending",
        "distinct_ids",
        "event_names",
        "event_ids_pending",
        "property_columns",
        "sorted_until",
      ])
        await connection.run(`DELETE FROM ${table} WHERE project_id = CAST($1 AS UUID)`, [projectId]);
    });
    this.distinctIds.forgetProject(projectId);
    this.eventIds.forgetProject(projectId);
    this.properties.forgetProject(projectId);
    this.keys.forgetProject(projectId);
    this.planHints.projectDeleted(projectId);
    this.frontiers.delete(projectId);
    this.dayOrder.forgetProject(projectId);
    this.identity.forget(projectId);
    this.unkeyed.delete(projectId);
    const version = this.identityVersions.get(projectId);
    if (version) {
      version.links++;
      version.properties++;
    }
  }

  /**
   * Answers from the typed columns of the properties the query reads where they are ready, from
   * the JSON otherwise; a property read for the first time gets a column filled in the background.
   */
  async query(projectId: string, spec: QuerySpec): Promise<QueryResult> {
    this.properties.request(projectId, propertiesReadBy(spec));
    const columns = this.properties.columnsFor(projectId);
    const user =
      spec.kind === "events" && spec.distinctId !== undefined
        ? await this.uidOf(projectId, spec.distinctId)
        : undefined;
    const firstStepTables = spec.kind === "funnel" ? await this.firstStepTables() : undefined;
    const ask = (uidRange: number) =>
      new SqlQueryRunner(
        new SqlQueryBuilder(
          duckDbDialect,
          columns,
          { ...this.userStrategies(uidRange, user), firstStepTables },
          { eventCounts: "event_counts", userDays: USER_DAYS_ROLLUP },
          (event) => this.eventIds.idOf(projectId, event),
        ),
        this.run,
        this.identity,
      ).query(projectId, spec);
    try {
      return await ask(this.distinctIds.idRange() + this.bitstringMargin);
    } catch (error) {
      // Users created since the range was read, past its margin: count them the general way.
      if (!(error instanceof Error && error.message.includes("outside of provided min and max range")))
        throw error;
      return ask(0);
    }
  }

  /**
   * The connection a statement runs on. One that groups many events by user (a funnel's first step)
   * runs where DuckDB may use a perfect hash table, when the events, counted from the hourly
   * rollup (an upper bound: filters and the range's partial hours are not subtracted), are at least
   * as many as the uids, and the uids fit PERFECT_HASH_BITS (the count reused for a few seconds,
   * duckdb.plan-hints.ts). The table costs about its width:
   * measured on 100K uids, a funnel took 3 ms more over 2 hours (2,800 first-step events) and 16 ms
   * less over 30 days (1M), medians of 30 interleaved runs in process.
   */
  private async readerFor(statement: SqlStatement): Promise<DuckDBConnection> {
    const reader = this.db.readConnection();
    const groups = statement.userGroups;
    const uids = this.distinctIds.idRange();
    if (groups === undefined || uids > 2 ** PERFECT_HASH_BITS) return reader;
    const fromHour = groups.fromMs - (groups.fromMs % HOUR_MS);
    const events = await this.planHints.eventsInRange({ ...groups, fromMs: fromHour }, async () => {
      const counted = await reader.runAndReadAll(EVENTS_IN_RANGE, [
        groups.projectId,
        groups.event,
        fromHour,
        groups.toMs,
      ]);
      const [[n = 0n] = []] = counted.getRowsJS() as [bigint][];
      return Number(n);
    });
    return events >= uids ? this.db.userGroupsConnection() : reader;
  }

  /**
   * Users are dense integers, so a distinct count can set one bit a user instead of hashing:
   * DuckDB's bitstring_agg over uids 0..uidRange, then bit_count. Unique users per day over 30
   * days of 10M events: 550 → 272 ms (loaded machine, same run). Each group holds a bitstring as
   * long as the range, so it is used only while the groups fit in BITSTRING_BUDGET_BYTES (and not
   * with uidRange 0). One user's events are found by the integer too (29 → 24 ms).
   */
  private userStrategies(uidRange: number, user?: number): UserStrategies {
    return {
      countDistinct: (column, groups) =>
        uidRange > 0 && (groups * uidRange) / 8 <= BITSTRING_BUDGET_BYTES
          ? `bit_count(bitstring_agg(${column}, 0, ${uidRange}))`
          : undefined,
      userSets: (column, groups) =>
        uidRange > 0 && (groups * uidRange) / 8 <= BITSTRING_BUDGET_BYTES
          ? {
              aggregate: `bitstring_agg(${column}, 0, ${uidRange})`,
              size: (set) => `bit_count(${set})`,
              union: (set) => `bit_or(${set})`,
            }
          : undefined,
      // The uid as a constant lets DuckDB filter the scan itself; compared with a subquery, which
      // it runs as a join (10M events in arrival order: 77 -> 23 ms, medians).
      isUser: (alias, projectRef, distinctId, bind) =>
        user !== undefined
          ? `${alias}uid = CAST(${bind(user)} AS BIGINT)`
          : `${alias}uid = (SELECT uid FROM distinct_ids WHERE project_id = CAST(${projectRef} AS UUID) AND distinct_id = ${bind(distinctId)})`,
    };
  }

  /**
   * How a funnel's first step groups users (SqlQueryBuilder.firstByUser): the union of the event
   * tables at once while `events_late` holds rows, the in-order table apart while it is empty (a
   * union with an empty table has no range of user keys, so no perfect hash table). Either way
   * reads both tables, so an event committed meanwhile changes only which is faster; the answer is
   * kept until a write changes `events_late` (duckdb.plan-hints.ts).
   */
  private async firstStepTables(): Promise<"apart" | "together"> {
    const late = await this.planHints.lateRows(async () => {
      const [row] = await this.run({ sql: "SELECT EXISTS (SELECT 1 FROM events_late) AS late", params: [] });
      return row?.late === true;
    });
    return late ? "together" : "apart";
  }

  /** A user's uid, from memory or the dictionary's key; 0 (no uid) for an id the store never saw. */
  private async uidOf(projectId: string, distinctId: string): Promise<number> {
    const key = `${projectId}/${distinctId}`;
    const cached = this.distinctIds.get(key);
    if (cached !== undefined) return cached;
    const [row] = await this.run({
      sql: "SELECT uid FROM distinct_ids WHERE project_id = CAST($1 AS UUID) AND distinct_id = $2",
      params: [projectId, distinctId],
    });
    return row ? Number(row.uid) : 0;
  }

  /** Resolves when the fold of the daily users under way, if any, has ended. */
  userDaysSettled(): Promise<void> {
    return this.userDays.settled();
  }

  /** Resolves when every sort of days by event scheduled so far has ended. */
  daysSortedSettled(): Promise<void> {
    return this.dayOrder.settled();
  }

  /** Resolves when the fill of the event ids of a store migrated from schema 8 has ended. */
  eventIdsSettled(): Promise<void> {
    return this.eventIds.settled();
  }

  /** Resolves when every property column requested so far is filled (or its fill failed). */
  propertyColumnsSettled(): Promise<void> {
    return this.properties.settled();
  }
}

/**
 * What a commit accepted, it added to the hourly counts in the same transaction (every inserted
 * event, once): the counts are the ledger's `accepted`, and commits write only their duplicates.
 * One statement fewer a commit (schema 8): 0.8-0.9 ms less CPU a commit of 1 to 40 events, 1.6 ms of
 * 760 (bench/commit-ab.ts, benchmarks/README.md).
 */
const COUNTED_OUTCOMES: ReadonlySet<string> = new Set(["accepted"]);

/** A project's ledger: its rows summed by outcome, and its hourly counts as `accepted`. */
const READ_LEDGER = `SELECT outcome, sum(n) FROM (
    SELECT outcome, n FROM ledger_entries WHERE project_id = CAST($1 AS UUID)
    UNION ALL SELECT 'accepted', n FROM event_counts WHERE project_id = CAST($1 AS UUID)
  ) GROUP BY outcome`;

/** The NDJSON of INSERT_LEDGER for `deltas`, leaving out the outcomes in `omitted`. */
function ledgerText(deltas: ReadonlyMap<string, LedgerDelta>, omitted?: ReadonlySet<string>): string {
  return ledgerRows(deltas)
    .filter(([, outcome]) => !omitted?.has(outcome))
    .map(([projectId, outcome, n]) => JSON.stringify({ p: projectId, o: outcome, n }))
    .join("\n");
}

async function appendLedger(
  connection: DuckDBConnection,
  deltas: ReadonlyMap<string, LedgerDelta>,
): Promise<void> {
  const text = ledgerText(deltas);
  if (text !== "") await connection.run(INSERT_LEDGER, [text]);
}

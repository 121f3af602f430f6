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
import { SqlQueryBuilder, type UserStrategies } from "../../query/sql-builder.js";
import { type RunSql, SqlQueryRunner, sqlIdentitySource } from "../../query/sql-runner.js";
import type { DuckDbDatabase } from "./duckdb.database.js";
import { duckDbDialect } from "./duckdb.dialect.js";
import { DistinctIdDictionary, INSERT_DISTINCT_IDS } from "./duckdb.distinct-ids.js";
import { PropertyColumnRegistry, slotValueColumns } from "./duckdb.property-columns.js";

// Rows travel to DuckDB as one NDJSON text parameter that DuckDB parses on its own threads: one
// call across the native boundary per commit instead of one per value (the Appender's cost).
const ROW_SHAPE = `'{"p":"VARCHAR","u":"VARCHAR","e":"VARCHAR","d":"VARCHAR","i":"BIGINT","t":"BIGINT","props":"JSON","r":"BIGINT"}'`;

/**
 * The insert of a commit's rows for a project with `slots` property columns to fill ($2: their
 * JSON pointers, in slot order; one parse of each row's JSON fills them all). Rows are not sorted:
 * a commit is far smaller than a row group, whose min/max is what scans skip by, and an ORDER BY
 * halves the insert rate. `skipStored`: with retries in the commit, skip what is stored already
 * and say which rows went in.
 */
function insertSql(slots: number, skipStored: boolean): string {
  const filled = slotValueColumns(slots);
  const extract =
    slots > 0
      ? ", json_extract_string(j.props, $2::VARCHAR[]) AS x, json_type(j.props, $2::VARCHAR[]) AS y"
      : "";
  const columns = [
    "project_id",
    "uuid",
    "event",
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
    "j.d",
    "j.i",
    "epoch_ms(j.t)",
    "j.props",
    "epoch_ms(j.r)",
  ];
  return `INSERT ${skipStored ? "OR IGNORE " : ""}INTO events (${[...columns, ...filled.columns].join(", ")})
    SELECT ${[...values, ...filled.values].join(", ")}
    FROM (SELECT j${extract} FROM (SELECT from_json(unnest(string_split($1, chr(10))), ${ROW_SHAPE}) AS j))
    ${skipStored ? "RETURNING CAST(project_id AS VARCHAR) AS p, CAST(uuid AS VARCHAR) AS u" : ""}`;
}

/** One NDJSON line per event; `properties` is already JSON text, and JSON text has no raw newline. */
function toLine(e: StoredEvent, uid: number): string {
  return `{"p":"${e.projectId}","u":"${e.uuid}","e":${JSON.stringify(e.event)},"d":${JSON.stringify(e.distinctId)},"i":${uid},"t":${e.timestamp},"props":${e.properties},"r":${e.receivedAt}}`;
}

/** How often the key index's share of the memory cap is checked, and the share that warns. */
const INDEX_WATCH_MS = 60_000;
const INDEX_WARN_SHARE = 0.6;

/** Bytes of a DuckDB size setting such as `488.2 MiB` or `1.0 GiB`; undefined if unreadable. */
export function parseByteSize(text: string): number | undefined {
  const match = /^([\d.]+)\s*(bytes|[KMGT]i?B)$/i.exec(text.trim());
  if (!match) return undefined;
  const units: Record<string, number> = {
    BYTES: 1,
    KB: 1e3,
    MB: 1e6,
    GB: 1e9,
    TB: 1e12,
    KIB: 2 ** 10,
    MIB: 2 ** 20,
    GIB: 2 ** 30,
    TIB: 2 ** 40,
  };
  const unit = units[match[2]!.toUpperCase()];
  return unit === undefined ? undefined : Number(match[1]) * unit;
}

/** Memory the bitstrings of one distinct count may take (see userStrategies). */
const BITSTRING_BUDGET_BYTES = 32 * 1024 * 1024;
/** Users that may be created between reading the uid range and the query's snapshot. */
const BITSTRING_MARGIN = 100_000;

/** A commit's rows of projects that fill the same property columns. */
interface RowGroup {
  paths: readonly string[];
  lines: string[];
}

const LEDGER_SHAPE = `'{"p":"VARCHAR","o":"VARCHAR","n":"BIGINT"}'`;
const INSERT_LEDGER = `INSERT INTO ledger_entries SELECT CAST(j.p AS UUID), j.o, j.n
  FROM (SELECT from_json(unnest(string_split($1, chr(10))), ${LEDGER_SHAPE}) AS j)`;

/** A connection that commits events, with its statements prepared once. */
interface EventWriter {
  connection: DuckDBConnection;
  /** By `${slots}/${skipStored}`, prepared on first use. */
  inserts: Map<string, DuckDBPreparedStatement>;
  insertLedger: DuckDBPreparedStatement;
}

async function insertStatement(writer: EventWriter, slots: number, skipStored: boolean) {
  const key = `${slots}/${skipStored}`;
  let statement = writer.inserts.get(key);
  if (!statement) {
    statement = await writer.connection.prepare(insertSql(slots, skipStored));
    writer.inserts.set(key, statement);
  }
  return statement;
}

/** The uid of each given distinct id of a project that has events ($2: a JSON array of ids). */
const USER_KEYS = `SELECT distinct_id, uid FROM distinct_ids
  WHERE project_id = CAST($1 AS UUID) AND distinct_id IN (SELECT unnest(from_json($2, '["VARCHAR"]')))`;

const LINK_EVENT_NAMES: ReadonlySet<string> = new Set(LINK_EVENTS);

const isConstraintError = (error: unknown) =>
  error instanceof Error && /constraint|duplicate key/i.test(error.message);

/**
 * Events in the embedded DuckDB file. A commit inserts its rows against the (project_id, uuid)
 * primary key with one statement (one per project that has property columns to fill), and
 * updates the ledger in the same transaction. A plain INSERT is twice as fast as INSERT OR IGNORE,
 * so that runs first; retried uuids make it fail on the key and the commit is redone skipping
 * what is stored. Each row carries its user's integer uid (duckdb.distinct-ids.ts) and the typed
 * columns of the properties queries read (duckdb.property-columns.ts).
 */
export class DuckDbEventStore implements EventStore, AnalyticsStore {
  readonly name = "duckdb";
  private readonly run: RunSql;
  private readonly distinctIds = new DistinctIdDictionary();
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
  private indexWatch?: NodeJS.Timeout;
  private indexWarnedLevel = 0;
  private readonly idleWriters: EventWriter[] = [];
  private readonly writerWaiters: ((writer: EventWriter) => void)[] = [];

  private readonly writers: number;
  private readonly compactEvery: number;
  private readonly bitstringMargin: number;
  private readonly indexWatchMs: number;
  private readonly log?: Log;

  /**
   * `writers` commits may run at once (2 by default), each on its own connection; the ledger is
   * compacted every `compactEvery` commits (10,000 by default).
   */
  constructor(
    private readonly db: DuckDbDatabase,
    options: {
      writers?: number;
      compactEvery?: number;
      log?: Log;
      /** Uids past the highest known that a distinct count allows for (tests set it below 0). */
      bitstringMargin?: number;
      /** How often the key index's share of the memory cap is checked (60 s). */
      indexWatchMs?: number;
    } = {},
  ) {
    this.writers = options.writers ?? 2;
    this.bitstringMargin = options.bitstringMargin ?? BITSTRING_MARGIN;
    this.indexWatchMs = options.indexWatchMs ?? INDEX_WATCH_MS;
    this.compactEvery = options.compactEvery ?? 10_000;
    this.log = options.log;
    this.run = async ({ sql, params }) => {
      const reader = await this.db.readConnection().runAndReadAll(sql, params as DuckDBValue[]);
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
          const { uids } = this.distinctIds.known(new Set(waiting.map((id) => `${projectId}/${id}`)));
          if (uids.size > 0) this.noteNewUsers([...uids]);
          return keys;
        },
      }),
    );
    this.properties = new PropertyColumnRegistry({
      commitsUnderWay: () => Promise.all([...this.commitsUnderWay]).then(() => undefined),
      withoutCommits: (work) => this.withEveryWriter(work),
      log: this.log,
    });
  }

  async start(): Promise<void> {
    await this.db.open();
    const { memoryLimit, threads } = await this.db.settings();
    this.log?.info({ path: this.db.path, memory_limit: memoryLimit, threads }, "embedded store open");
    await this.compactLedger();
    await this.distinctIds.open(this.db.readConnection());
    await this.properties.open(await this.db.connect());
    this.indexWatch = setInterval(() => void this.watchKeyIndex(), this.indexWatchMs);
    this.indexWatch.unref();
    for (let i = 0; i < this.writers; i++) {
      const connection = await this.db.connect();
      this.idleWriters.push({
        connection,
        inserts: new Map(),
        insertLedger: await connection.prepare(INSERT_LEDGER),
      });
    }
  }

  private async withWriter<T>(work: (writer: EventWriter) => Promise<T>): Promise<T> {
    const writer = await this.acquireWriter();
    try {
      return await work(writer);
    } finally {
      this.releaseWriter(writer);
    }
  }

  /** Runs `work` while no commit runs: DuckDB refuses to alter a table other transactions write. */
  private async withEveryWriter<T>(work: () => Promise<T>): Promise<T> {
    const held: EventWriter[] = [];
    try {
      for (let i = 0; i < this.writers; i++) held.push(await this.acquireWriter());
      return await work();
    } finally {
      for (const writer of held) this.releaseWriter(writer);
    }
  }

  private acquireWriter(): Promise<EventWriter> {
    const idle = this.idleWriters.pop();
    return idle ? Promise.resolve(idle) : new Promise((resolve) => this.writerWaiters.push(resolve));
  }

  private releaseWriter(writer: EventWriter): void {
    const next = this.writerWaiters.shift();
    if (next) next(writer);
    else this.idleWriters.push(writer);
  }

  async ready(): Promise<string | undefined> {
    try {
      await this.db.readConnection().run("SELECT 1");
      return undefined;
    } catch (error) {
      return `duckdb: ${(error as Error).message}`;
    }
  }

  /**
   * Warns as the (project, uuid) key index fills DuckDB's memory cap. DuckDB keeps that index in
   * memory and cannot evict it (about 45 bytes a stored event, measured); table data beyond the cap
   * is evicted, the index is not, so once it fills the cap commits fail with out-of-memory.
   */
  private async watchKeyIndex(): Promise<void> {
    try {
      const reader = await this.db.readConnection().runAndReadAll(
        `SELECT (SELECT memory_usage_bytes FROM duckdb_memory() WHERE tag = 'ART_INDEX'),
                (SELECT value FROM duckdb_settings() WHERE name = 'max_memory')`,
      );
      const [[indexBytes = 0n, limit = ""] = []] = reader.getRowsJS() as [bigint, string][];
      const capBytes = parseByteSize(limit);
      if (!capBytes) return;
      const share = Number(indexBytes) / capBytes;
      const level = Math.floor(share * 10) / 10;
      if (share < INDEX_WARN_SHARE || level <= this.indexWarnedLevel) return;
      this.indexWarnedLevel = level;
      this.log?.warn(
        { index_bytes: Number(indexBytes), memory_limit: limit, share: Math.round(share * 100) / 100 },
        "the event key index fills DuckDB's memory cap; commits fail once it is full: raise TIDEMARK_DUCKDB_MEMORY_LIMIT (about 45 bytes a stored event)",
      );
    } catch {
      // The next check tries again; the store's health does not depend on this warning.
    }
  }

  async close(): Promise<void> {
    if (this.indexWatch) clearInterval(this.indexWatch);
    await this.properties.close();
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
      for (const e of events) {
        const key = eventKey(e);
        if (unique.has(key)) continue;
        unique.set(key, e);
        users.add(`${e.projectId}/${e.distinctId}`);
      }
      const { uids, missing } = this.distinctIds.known(users);
      if (missing.length === 0) return this.commitRows(writer, events, unique, uids, []);
      return this.distinctIds.newUsers.run(async () => {
        const created = await this.distinctIds.assign(writer.connection, missing, uids);
        const outcome = await this.commitRows(writer, events, unique, uids, created.lines);
        this.distinctIds.committed(created);
        this.noteNewUsers(created.keys);
        return outcome;
      });
    });
  }

  /** One transaction: the commit's new users, its rows, and the ledger. */
  private async commitRows(
    writer: EventWriter,
    events: readonly StoredEvent[],
    unique: ReadonlyMap<string, StoredEvent>,
    uids: ReadonlyMap<string, number>,
    newUsers: readonly string[],
  ): Promise<CommitOutcome> {
    const { connection, insertLedger } = writer;
    // One group for the projects without property columns, one for each project with some.
    const groups = new Map<string, RowGroup>();
    for (const e of unique.values()) {
      let group = groups.get(e.projectId);
      if (!group) {
        const paths = this.properties.pathsToFill(e.projectId);
        const shared = paths.length === 0 ? groups.get("") : undefined;
        group = shared ?? { paths, lines: [] };
        if (paths.length === 0) groups.set("", group);
        groups.set(e.projectId, group);
      }
      group.lines.push(toLine(e, uids.get(`${e.projectId}/${e.distinctId}`)!));
    }
    const batches = [...new Set(groups.values())];
    const begin = async () => {
      await connection.run("BEGIN TRANSACTION");
      if (newUsers.length > 0) await connection.run(INSERT_DISTINCT_IDS, [newUsers.join("\n")]);
    };
    const insertAll = async (skipStored: boolean): Promise<[string, string][]> => {
      const inserted: [string, string][] = [];
      for (const { paths, lines } of batches) {
        const statement = await insertStatement(writer, paths.length, skipStored);
        statement.bindVarchar(1, lines.join("\n"));
        if (paths.length > 0) statement.bindList(2, listValue([...paths]), LIST(VARCHAR));
        if (skipStored)
          inserted.push(...((await statement.runAndReadAll()).getRowsJS() as [string, string][]));
        else await statement.run();
      }
      return inserted;
    };
    try {
      await begin();
      let insertedKeys: Set<string> | undefined;
      try {
        await insertAll(false);
      } catch (error) {
        if (!isConstraintError(error)) throw error;
        await connection.run("ROLLBACK");
        await begin();
        insertedKeys = new Set((await insertAll(true)).map(([p, u]) => `${p}/${u}`));
      }
      const { outcome, ledger: deltas } = commitResult(events, insertedKeys ?? new Set(unique.keys()));
      const ledger = ledgerText(deltas);
      if (ledger !== "") {
        insertLedger.bindVarchar(1, ledger);
        await insertLedger.run();
      }
      await connection.run("COMMIT");
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
      await connection.run("ROLLBACK").catch(() => undefined);
      throw error;
    }
  }

  /** Folds the ledger's rows into one per (project, outcome); runs at start and every `compactEvery` commits. */
  private compactLedger(): Promise<void> {
    return this.db.transaction(async (connection) => {
      await connection.run(`CREATE OR REPLACE TEMP TABLE ledger_totals AS
        SELECT project_id, outcome, sum(n)::BIGINT AS n FROM ledger_entries GROUP BY project_id, outcome`);
      await connection.run("DELETE FROM ledger_entries");
      await connection.run("INSERT INTO ledger_entries SELECT * FROM temp.ledger_totals");
      await connection.run("DROP TABLE temp.ledger_totals");
    });
  }

  recordLedger(deltas: ReadonlyMap<string, LedgerDelta>): Promise<void> {
    if (deltas.size === 0) return Promise.resolve();
    return this.db.transaction((connection) => appendLedger(connection, deltas));
  }

  async readLedger(projectId: string): Promise<Ledger> {
    const connection = this.db.readConnection();
    const rows = await connection.runAndReadAll(
      "SELECT outcome, sum(n) FROM ledger_entries WHERE project_id = CAST($1 AS UUID) GROUP BY outcome",
      [projectId],
    );
    const stored = await connection.runAndReadAll(
      "SELECT count(*) AS n FROM events WHERE project_id = CAST($1 AS UUID)",
      [projectId],
    );
    const [[count = 0n] = []] = stored.getRowsJS() as [bigint][];
    return readLedgerRows(rows.getRowsJS() as [string, bigint][], Number(count));
  }

  async deleteProject(projectId: string): Promise<void> {
    await this.db.transaction(async (connection) => {
      for (const table of ["events", "ledger_entries", "distinct_ids", "property_columns"])
        await connection.run(`DELETE FROM ${table} WHERE project_id = CAST($1 AS UUID)`, [projectId]);
    });
    this.distinctIds.forgetProject(projectId);
    this.properties.forgetProject(projectId);
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
    const ask = (uidRange: number) =>
      new SqlQueryRunner(
        new SqlQueryBuilder(duckDbDialect, columns, this.userStrategies(uidRange)),
        this.run,
        this.identity,
      ).query(projectId, spec);
    try {
      return await ask(this.distinctIds.uidRange() + this.bitstringMargin);
    } catch (error) {
      // Users created since the range was read, past its margin: count them the general way.
      if (!(error instanceof Error && error.message.includes("outside of provided min and max range")))
        throw error;
      return ask(0);
    }
  }

  /**
   * Users are dense integers, so a distinct count can set one bit a user instead of hashing:
   * DuckDB's bitstring_agg over uids 0..uidRange, then bit_count. Unique users per day over 30
   * days of 10M events: 550 → 272 ms (loaded machine, same run). Each group holds a bitstring as
   * long as the range, so it is used only while the groups fit in BITSTRING_BUDGET_BYTES (and not
   * with uidRange 0). One user's events are found by the integer too (29 → 24 ms).
   */
  private userStrategies(uidRange: number): UserStrategies {
    return {
      countDistinct: (column, groups) =>
        uidRange > 0 && (groups * uidRange) / 8 <= BITSTRING_BUDGET_BYTES
          ? `bit_count(bitstring_agg(${column}, 0, ${uidRange}))`
          : undefined,
      isUser: (alias, projectRef, distinctIdRef) =>
        `${alias}uid = (SELECT uid FROM distinct_ids WHERE project_id = CAST(${projectRef} AS UUID) AND distinct_id = ${distinctIdRef})`,
    };
  }

  /** Resolves when every property column requested so far is filled (or its fill failed). */
  propertyColumnsSettled(): Promise<void> {
    return this.properties.settled();
  }
}

function ledgerText(deltas: ReadonlyMap<string, LedgerDelta>): string {
  return ledgerRows(deltas)
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

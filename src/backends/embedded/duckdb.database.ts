import { chmodSync, existsSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { type DuckDBConnection, DuckDBInstance } from "@duckdb/node-api";
import type { StoreMemory } from "../../pipeline/parts.js";
import { type MigrationProgress, migrate } from "./duckdb.schema.js";
import { type WritePriority, WriteQueue } from "./duckdb.write-queue.js";

/**
 * One DuckDB file shared by the embedded parts. DuckDB allows one writing process per file, and
 * concurrent writers in one process conflict on the same rows, so every write goes through
 * `write()` on a single connection, one at a time; reads use their own connection and see the
 * last committed state.
 */
export interface DuckDbOptions {
  /** DuckDB's `memory_limit` (e.g. `512MB`): its own default, 80% of RAM, lets RSS keep growing. */
  memoryLimit: string;
  /** DuckDB's worker threads. */
  threads: number;
  /** Told what a schema migration is doing when an older store opens; they can take a while. */
  onMigration?: MigrationProgress;
}

const UNIT_BYTES: Readonly<Record<string, number>> = {
  KB: 1e3,
  MB: 1e6,
  GB: 1e9,
  TB: 1e12,
  KiB: 2 ** 10,
  MiB: 2 ** 20,
  GiB: 2 ** 30,
  TiB: 2 ** 40,
};

/** A `memory_limit` as DuckDB reads it (`512MB` is 512·10⁶ bytes, `2GiB` 2·2³⁰), in bytes. */
export function memoryLimitBytes(limit: string): number {
  const match = /^([0-9.]+)\s?([KMGT]i?B)$/.exec(limit.trim());
  const unit = match ? UNIT_BYTES[match[2]!] : undefined;
  if (!match || unit === undefined) throw new Error(`not a memory limit: ${limit}`);
  return Math.round(Number(match[1]) * unit);
}

/** Another process holds the file: DuckDB allows one writing process per database file. */
export class StoreLockedError extends Error {
  constructor(message: string, options: { cause: unknown }) {
    super(message, options);
    this.name = "StoreLockedError";
  }
}

/** DuckDB's lock error names the holder: `Conflicting lock is held in /usr/bin/node (PID 123)`. */
function lockedError(error: unknown, path: string): StoreLockedError | undefined {
  const message = error instanceof Error ? error.message : String(error);
  if (!/Could not set lock on file/i.test(message)) return undefined;
  const pid = /\(PID (\d+)\)/.exec(message)?.[1];
  const holder = pid ? `another process (PID ${pid})` : "another process";
  return new StoreLockedError(
    `the data folder ${dirname(path)} is in use by ${holder}, most likely a running Tidemark server: set PORT to that server's port to go through its API, or choose another TIDEMARK_DATA_DIR`,
    { cause: error },
  );
}

/** The name the store's file is attached under, every connection's default database. */
const CATALOG = "tidemark";

/**
 * Rows a row group of the store's file holds from now on (DuckDB's default is 122,880; groups
 * written before keep their size until their rows are rewritten). A scan skips a row group whose
 * minimum and maximum rule it out, so the smaller the groups, the more of a day sorted by event
 * (duckdb.day-order.ts) a scan for one event skips: a day of about 110K events spans 7 groups
 * rather than one. 10M events in time order, medians of 25 interleaved runs in process: a scan
 * for `Add To Cart` over 30 days 8.0 -> 3.8 ms, the 3-step funnel 54.2 -> 43.1 ms; at 4,096,
 * 8,192 and 32,768 rows it gained about as much.
 */
export const ROW_GROUP_ROWS = 16_384;

/**
 * Whether a table holds a row group larger than ROW_GROUP_ROWS (written before schema 6, or by a
 * DuckDB of default settings). A column added to such a table must be checkpointed before rows
 * are appended: DuckDB 1.5 otherwise fails the append ("Could not find node in column segment
 * tree") and invalidates the database.
 */
export async function hasOversizedRowGroups(connection: DuckDBConnection, table: string): Promise<boolean> {
  const reader = await connection.runAndReadAll(
    `SELECT count(*) FROM (
       SELECT row_group_id FROM pragma_storage_info('${table}')
       WHERE column_name = 'uuid' AND segment_type <> 'VALIDITY'
       GROUP BY row_group_id HAVING sum(count) > ${ROW_GROUP_ROWS})`,
  );
  const [[groups = 0n] = []] = reader.getRowsJS() as [bigint][];
  return groups > 0n;
}

/**
 * The widest perfect hash table userGroupsConnection allows: 2^20 keys, about a million users.
 * Measured at that width, 3M rows grouped into 1M keys by min(timestamp), 2 threads: 62-75 ms and
 * 138 MB of peak RSS, against 182-240 ms and 166 MB for the ordinary hash table. Wider keys are
 * grouped by the ordinary one.
 */
export const PERFECT_HASH_BITS = 20;

export class DuckDbDatabase {
  private instance?: DuckDBInstance;
  private writer?: DuckDBConnection;
  private reader?: DuckDBConnection;
  private userGroupsReader?: DuckDBConnection;
  private readonly writes = new WriteQueue();
  private openCount = 0;
  private extra: DuckDBConnection[] = [];
  readonly path: string;

  constructor(
    dataDir: string,
    private readonly options: DuckDbOptions = { memoryLimit: "512MB", threads: 2 },
  ) {
    this.path = join(dataDir, "tidemark.duckdb");
  }

  /**
   * Opens the file on first use; later calls share it.
   *
   * The file holds every event and key hash, so only this user may read it: the data folder is
   * made 0700 and the files 0600 (also those of an older installation). DuckDB creates files
   * later too (a new WAL after each checkpoint, spill files), so the process keeps umask 0077 from
   * here on, as Postgres's postmaster does: every file it creates is born private.
   */
  async open(): Promise<void> {
    this.openCount++;
    if (this.instance) return;
    const dir = dirname(this.path);
    process.umask(0o077);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    chmodSync(dir, 0o700);
    for (const file of [this.path, `${this.path}.wal`]) if (existsSync(file)) chmodSync(file, 0o600);
    // The file is attached rather than opened: only ATTACH takes a row group size. An in-memory
    // instance spills to `.tmp` in the process's working directory unless told otherwise: the
    // spill files go beside the store instead, in the private data folder.
    const instance = await DuckDBInstance.create(":memory:", {
      threads: String(this.options.threads),
      memory_limit: this.options.memoryLimit,
      temp_directory: this.spillDirectory(),
    });
    try {
      const attaching = await instance.connect();
      try {
        await attaching.run(
          `ATTACH '${this.path.replaceAll("'", "''")}' AS ${CATALOG} (ROW_GROUP_SIZE ${ROW_GROUP_ROWS})`,
        );
      } finally {
        attaching.closeSync();
      }
    } catch (error) {
      instance.closeSync();
      this.openCount--;
      throw lockedError(error, this.path) ?? error;
    }
    this.instance = instance;
    this.writer = await this.session();
    this.reader = await this.session();
    this.userGroupsReader = await this.session();
    // Session-local: the other connections keep DuckDB's default of 12 bits.
    await this.userGroupsReader.run(`SET perfect_ht_threshold = ${PERFECT_HASH_BITS}`);
    await migrate(this.writer, this.options.onMigration ?? (() => undefined));
  }

  /** Where DuckDB spills what does not fit under its memory cap: `tidemark.duckdb.tmp/`. */
  spillDirectory(): string {
    return `${this.path}.tmp`;
  }

  /** A further connection, for work that may run beside the serialized writes (event inserts). */
  async connect(): Promise<DuckDBConnection> {
    const connection = await this.session();
    this.extra.push(connection);
    return connection;
  }

  /** A connection whose default database is the store's file. */
  private async session(): Promise<DuckDBConnection> {
    if (!this.instance) throw new Error("DuckDB is not open");
    const connection = await this.instance.connect();
    await connection.run(`USE ${CATALOG}`);
    return connection;
  }

  writeConnection(): DuckDBConnection {
    if (!this.writer) throw new Error("DuckDB is not open");
    return this.writer;
  }

  /** The limits DuckDB runs under, as DuckDB reports them (e.g. `488.2 MiB` for 512MB). */
  async settings(): Promise<{ memoryLimit: string; threads: number }> {
    const reader = await this.readConnection().runAndReadAll(
      "SELECT current_setting('memory_limit')::VARCHAR, current_setting('threads')::BIGINT",
    );
    const [[memoryLimit = "", threads = 0n] = []] = reader.getRowsJS() as [string, bigint][];
    return { memoryLimit, threads: Number(threads) };
  }

  /** What DuckDB holds now by its tags (`duckdb_memory()`), against `memory_limit`. */
  async memory(): Promise<StoreMemory> {
    const reader = await this.readConnection().runAndReadAll(
      "SELECT tag, memory_usage_bytes, temporary_storage_bytes FROM duckdb_memory()",
    );
    const usedBytes = new Map<string, number>();
    let spilledBytes = 0;
    for (const [tag, used, spilled] of reader.getRowsJS() as [string, bigint, bigint][]) {
      usedBytes.set(tag, Number(used));
      spilledBytes += Number(spilled);
    }
    return { limitBytes: memoryLimitBytes(this.options.memoryLimit), usedBytes, spilledBytes };
  }

  readConnection(): DuckDBConnection {
    if (!this.reader) throw new Error("DuckDB is not open");
    return this.reader;
  }

  /**
   * A reading connection on which DuckDB groups by a perfect hash table (an array indexed by the
   * key, PERFECT_HASH_BITS wide at most) wherever the keys' statistics allow one. Such a table
   * costs its whole width to set up and to read out, whatever the rows: for statements whose rows
   * outnumber their keys only (duckdb.event-store.ts).
   */
  userGroupsConnection(): DuckDBConnection {
    if (!this.userGroupsReader) throw new Error("DuckDB is not open");
    return this.userGroupsReader;
  }

  /**
   * Runs `work` alone on the writer connection, after every write queued before it in its lane
   * (duckdb.write-queue.ts: `background` writes wait while any `normal` one waits).
   */
  write<T>(
    work: (connection: DuckDBConnection) => Promise<T>,
    priority: WritePriority = "normal",
  ): Promise<T> {
    return this.writes.add(() => work(this.writeConnection()), priority);
  }

  /** Runs `work` in one transaction on the writer connection. */
  transaction<T>(
    work: (connection: DuckDBConnection) => Promise<T>,
    priority: WritePriority = "normal",
  ): Promise<T> {
    return this.write(async (connection) => {
      await connection.run("BEGIN TRANSACTION");
      try {
        const result = await work(connection);
        await connection.run("COMMIT");
        return result;
      } catch (error) {
        await connection.run("ROLLBACK").catch(() => undefined);
        throw error;
      }
    }, priority);
  }

  /** Closes the file once every user has closed it; waits for queued writes. */
  async close(): Promise<void> {
    this.openCount--;
    if (this.openCount > 0 || !this.instance) return;
    await this.writes.idle();
    await this.write(async (connection) => {
      await connection.run("CHECKPOINT");
    }).catch(() => undefined);
    for (const connection of this.extra) connection.closeSync();
    this.extra = [];
    this.reader?.closeSync();
    this.userGroupsReader?.closeSync();
    this.writer?.closeSync();
    this.instance.closeSync();
    this.instance = undefined;
  }
}

import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { type DuckDBConnection, DuckDBInstance } from "@duckdb/node-api";

const SCHEMA = `
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
  -- Append-only: an upsert costs several times a plain insert on every commit; readers sum,
  -- and compaction folds the rows now and then.
  CREATE TABLE IF NOT EXISTS ledger_entries (
    project_id UUID NOT NULL,
    outcome VARCHAR NOT NULL,
    n BIGINT NOT NULL
  );
  INSERT OR IGNORE INTO schema_migrations VALUES (1, now());
`;

/**
 * One DuckDB file shared by the embedded parts. DuckDB allows one writing process per file, and
 * concurrent writers in one process conflict on the same rows, so every write goes through
 * `write()` on a single connection, one at a time; reads use their own connection and see the
 * last committed state.
 */
export class DuckDbDatabase {
  private instance?: DuckDBInstance;
  private writer?: DuckDBConnection;
  private reader?: DuckDBConnection;
  private writeChain: Promise<unknown> = Promise.resolve();
  private openCount = 0;
  private extra: DuckDBConnection[] = [];
  readonly path: string;

  constructor(dataDir: string) {
    this.path = join(dataDir, "tidemark.duckdb");
  }

  /** Opens the file on first use; later calls share it. */
  async open(): Promise<void> {
    this.openCount++;
    if (this.instance) return;
    mkdirSync(join(this.path, ".."), { recursive: true });
    this.instance = await DuckDBInstance.create(this.path, { threads: "2" });
    this.writer = await this.instance.connect();
    this.reader = await this.instance.connect();
    await this.writer.run(SCHEMA);
  }

  /** A further connection, for work that may run beside the serialized writes (event inserts). */
  async connect(): Promise<DuckDBConnection> {
    if (!this.instance) throw new Error("DuckDB is not open");
    const connection = await this.instance.connect();
    this.extra.push(connection);
    return connection;
  }

  writeConnection(): DuckDBConnection {
    if (!this.writer) throw new Error("DuckDB is not open");
    return this.writer;
  }

  readConnection(): DuckDBConnection {
    if (!this.reader) throw new Error("DuckDB is not open");
    return this.reader;
  }

  /** Runs `work` alone on the writer connection, after every write queued before it. */
  write<T>(work: (connection: DuckDBConnection) => Promise<T>): Promise<T> {
    const next = this.writeChain.then(() => work(this.writeConnection()));
    this.writeChain = next.catch(() => undefined);
    return next;
  }

  /** Runs `work` in one transaction on the writer connection. */
  transaction<T>(work: (connection: DuckDBConnection) => Promise<T>): Promise<T> {
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
    });
  }

  /** Closes the file once every user has closed it; waits for queued writes. */
  async close(): Promise<void> {
    this.openCount--;
    if (this.openCount > 0 || !this.instance) return;
    await this.writeChain;
    await this.write(async (connection) => {
      await connection.run("CHECKPOINT");
    }).catch(() => undefined);
    for (const connection of this.extra) connection.closeSync();
    this.extra = [];
    this.reader?.closeSync();
    this.writer?.closeSync();
    this.instance.closeSync();
    this.instance = undefined;
  }
}

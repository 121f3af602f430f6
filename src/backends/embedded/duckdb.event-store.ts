import type { DuckDBConnection, DuckDBPreparedStatement, DuckDBValue } from "@duckdb/node-api";
import type { CommitOutcome, Ledger, LedgerDelta, StoredEvent } from "../../core/event.js";
import type { Log } from "../../core/log.js";
import type { AnalyticsStore, EventStore } from "../../pipeline/event-store.js";
import { commitResult, eventKey, ledgerRows, readLedgerRows } from "../../pipeline/ledger-rows.js";
import type { QueryResult, QuerySpec } from "../../query/spec.js";
import { SqlQueryRunner } from "../../query/sql-runner.js";
import type { DuckDbDatabase } from "./duckdb.database.js";
import { duckDbDialect } from "./duckdb.dialect.js";

// Rows travel to DuckDB as one NDJSON text parameter that DuckDB parses on its own threads: one
// call across the native boundary per commit instead of one per value (the Appender's cost).
const ROW_SHAPE = `'{"p":"VARCHAR","u":"VARCHAR","e":"VARCHAR","d":"VARCHAR","t":"BIGINT","props":"JSON","r":"BIGINT"}'`;
const ROWS = `SELECT CAST(j.p AS UUID) AS project_id, CAST(j.u AS UUID) AS uuid, j.e, j.d, epoch_ms(j.t), j.props, epoch_ms(j.r)
  FROM (SELECT from_json(unnest(string_split($1, chr(10))), ${ROW_SHAPE}) AS j)`;
/** The common case: no retries in the commit. A conflict aborts it and the careful path runs. */
const INSERT_NEW = `INSERT INTO events ${ROWS}`;
/** With retries: skip what is stored already and say which rows went in. */
const INSERT_SKIPPING_STORED = `INSERT OR IGNORE INTO events ${ROWS}
  RETURNING CAST(project_id AS VARCHAR) AS p, CAST(uuid AS VARCHAR) AS u`;

/** One NDJSON line per event; `properties` is already JSON text, and JSON text has no raw newline. */
function toLine(e: StoredEvent): string {
  return `{"p":"${e.projectId}","u":"${e.uuid}","e":${JSON.stringify(e.event)},"d":${JSON.stringify(e.distinctId)},"t":${e.timestamp},"props":${e.properties},"r":${e.receivedAt}}`;
}

const LEDGER_SHAPE = `'{"p":"VARCHAR","o":"VARCHAR","n":"BIGINT"}'`;
const INSERT_LEDGER = `INSERT INTO ledger_entries SELECT CAST(j.p AS UUID), j.o, j.n
  FROM (SELECT from_json(unnest(string_split($1, chr(10))), ${LEDGER_SHAPE}) AS j)`;

/** A connection that commits events, with its statements prepared once. */
interface EventWriter {
  connection: DuckDBConnection;
  insertNew: DuckDBPreparedStatement;
  insertSkippingStored: DuckDBPreparedStatement;
  insertLedger: DuckDBPreparedStatement;
}

const isConstraintError = (error: unknown) =>
  error instanceof Error && /constraint|duplicate key/i.test(error.message);

/**
 * Events in the embedded DuckDB file. A commit inserts every row with one statement against the
 * (project_id, uuid) primary key, and updates the ledger in the same transaction. A plain INSERT
 * is twice as fast as INSERT OR IGNORE, so that runs first; retried uuids make it fail on the key
 * and the commit is redone skipping what is stored.
 */
export class DuckDbEventStore implements EventStore, AnalyticsStore {
  readonly name = "duckdb";
  private readonly runner: SqlQueryRunner;
  private commitsSinceCompaction = 0;
  private readonly idleWriters: EventWriter[] = [];
  private readonly writerWaiters: ((writer: EventWriter) => void)[] = [];

  private readonly writers: number;
  private readonly compactEvery: number;
  private readonly log?: Log;

  /**
   * `writers` commits may run at once (2 by default), each on its own connection; the ledger is
   * compacted every `compactEvery` commits (10,000 by default).
   */
  constructor(
    private readonly db: DuckDbDatabase,
    options: { writers?: number; compactEvery?: number; log?: Log } = {},
  ) {
    this.writers = options.writers ?? 2;
    this.compactEvery = options.compactEvery ?? 10_000;
    this.log = options.log;
    this.runner = new SqlQueryRunner(duckDbDialect, async ({ sql, params }) => {
      const reader = await this.db.readConnection().runAndReadAll(sql, params as DuckDBValue[]);
      return reader.getRowObjects() as Record<string, unknown>[];
    });
  }

  async start(): Promise<void> {
    await this.db.open();
    const { memoryLimit, threads } = await this.db.settings();
    this.log?.info({ path: this.db.path, memory_limit: memoryLimit, threads }, "embedded store open");
    await this.compactLedger();
    for (let i = 0; i < this.writers; i++) {
      const connection = await this.db.connect();
      this.idleWriters.push({
        connection,
        insertNew: await connection.prepare(INSERT_NEW),
        insertSkippingStored: await connection.prepare(INSERT_SKIPPING_STORED),
        insertLedger: await connection.prepare(INSERT_LEDGER),
      });
    }
  }

  private async withWriter<T>(work: (writer: EventWriter) => Promise<T>): Promise<T> {
    const writer =
      this.idleWriters.pop() ??
      (await new Promise<EventWriter>((resolve) => this.writerWaiters.push(resolve)));
    try {
      return await work(writer);
    } finally {
      const next = this.writerWaiters.shift();
      if (next) next(writer);
      else this.idleWriters.push(writer);
    }
  }

  async ready(): Promise<string | undefined> {
    try {
      await this.db.readConnection().run("SELECT 1");
      return undefined;
    } catch (error) {
      return `duckdb: ${(error as Error).message}`;
    }
  }

  async close(): Promise<void> {
    await this.db.close();
  }

  insert(events: readonly StoredEvent[]): Promise<CommitOutcome> {
    return this.withWriter(async ({ connection, insertNew, insertSkippingStored, insertLedger }) => {
      const unique = new Set<string>();
      const lines: string[] = [];
      for (const e of events) {
        const key = eventKey(e);
        if (unique.has(key)) continue;
        unique.add(key);
        lines.push(toLine(e));
      }
      const text = lines.join("\n");
      try {
        await connection.run("BEGIN TRANSACTION");
        let insertedKeys: Set<string> | undefined;
        try {
          insertNew.bindVarchar(1, text);
          await insertNew.run();
        } catch (error) {
          if (!isConstraintError(error)) throw error;
          await connection.run("ROLLBACK");
          await connection.run("BEGIN TRANSACTION");
          insertSkippingStored.bindVarchar(1, text);
          const inserted = await insertSkippingStored.runAndReadAll();
          insertedKeys = new Set((inserted.getRowsJS() as [string, string][]).map(([p, u]) => `${p}/${u}`));
        }
        const { outcome, ledger: deltas } = commitResult(events, insertedKeys ?? unique);
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
    });
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

  deleteProject(projectId: string): Promise<void> {
    return this.db.transaction(async (connection) => {
      await connection.run("DELETE FROM events WHERE project_id = CAST($1 AS UUID)", [projectId]);
      await connection.run("DELETE FROM ledger_entries WHERE project_id = CAST($1 AS UUID)", [projectId]);
    });
  }

  query(projectId: string, spec: QuerySpec): Promise<QueryResult> {
    return this.runner.query(projectId, spec);
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

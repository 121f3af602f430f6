import type { DuckDBAppender, DuckDBConnection, DuckDBValue } from "@duckdb/node-api";
import type { CommitOutcome, Ledger, LedgerDelta, StoredEvent } from "../../core/event.js";
import type { AnalyticsStore, EventStore } from "../../pipeline/event-store.js";
import { ledgerRows, readLedgerRows } from "../../pipeline/ledger-rows.js";
import type { QueryResult, QuerySpec } from "../../query/spec.js";
import { SqlQueryRunner } from "../../query/sql-runner.js";
import type { DuckDbDatabase } from "./duckdb.database.js";
import { duckDbDialect } from "./duckdb.dialect.js";

const STAGING = `CREATE TEMP TABLE IF NOT EXISTS staging_events (
  project_id VARCHAR, uuid VARCHAR, event VARCHAR, distinct_id VARCHAR,
  timestamp_ms BIGINT, properties VARCHAR, received_ms BIGINT)`;

/**
 * Events in the embedded DuckDB file. A commit appends the rows to an in-memory staging table
 * (the Appender is the fastest way in), then moves them with one INSERT OR IGNORE, which uses the
 * (project_id, uuid) primary key to skip retries, and updates the ledger in the same transaction.
 */
export class DuckDbEventStore implements EventStore, AnalyticsStore {
  readonly name = "duckdb";
  private appender?: DuckDBAppender;
  private readonly runner: SqlQueryRunner;

  constructor(private readonly db: DuckDbDatabase) {
    this.runner = new SqlQueryRunner(duckDbDialect, async ({ sql, params }) => {
      const reader = await this.db.readConnection().runAndReadAll(sql, params as DuckDBValue[]);
      return reader.getRowObjects() as Record<string, unknown>[];
    });
  }

  async start(): Promise<void> {
    await this.db.open();
    await this.db.write(async (connection) => {
      await connection.run(STAGING);
      this.appender = await connection.createAppender("staging_events", "main", "temp");
    });
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
    await this.db.write(async () => {
      this.appender?.closeSync();
      this.appender = undefined;
    });
    await this.db.close();
  }

  insert(events: readonly StoredEvent[]): Promise<CommitOutcome> {
    return this.db.write(async (connection) => {
      const appender = this.appender;
      if (!appender) throw new Error("event store is not started");
      const duplicateUuids: string[] = [];
      const unique = new Set<string>();
      for (const e of events) {
        const key = `${e.projectId}/${e.uuid}`;
        if (unique.has(key)) {
          duplicateUuids.push(e.uuid);
          continue;
        }
        unique.add(key);
        appender.appendVarchar(e.projectId);
        appender.appendVarchar(e.uuid);
        appender.appendVarchar(e.event);
        appender.appendVarchar(e.distinctId);
        appender.appendBigInt(BigInt(e.timestamp));
        appender.appendVarchar(e.properties);
        appender.appendBigInt(BigInt(e.receivedAt));
        appender.endRow();
      }
      appender.flushSync();
      try {
        await connection.run("BEGIN TRANSACTION");
        const inserted = await connection.runAndReadAll(
          `INSERT OR IGNORE INTO events
           SELECT CAST(project_id AS UUID), CAST(uuid AS UUID), event, distinct_id, epoch_ms(timestamp_ms),
                  CAST(properties AS JSON), epoch_ms(received_ms)
           FROM temp.staging_events
           RETURNING CAST(project_id AS VARCHAR) AS p, CAST(uuid AS VARCHAR) AS u`,
        );
        const insertedKeys = new Set<string>();
        for (const [p, u] of inserted.getRowsJS() as [string, string][]) insertedKeys.add(`${p}/${u}`);
        if (insertedKeys.size < unique.size) {
          for (const key of unique)
            if (!insertedKeys.has(key)) duplicateUuids.push(key.slice(key.indexOf("/") + 1));
        }
        await upsertLedger(connection, commitLedger(events, insertedKeys));
        await connection.run("COMMIT");
        return { inserted: insertedKeys.size, duplicateUuids };
      } catch (error) {
        await connection.run("ROLLBACK").catch(() => undefined);
        throw error;
      } finally {
        await connection.run("DELETE FROM temp.staging_events");
      }
    });
  }

  recordLedger(deltas: ReadonlyMap<string, LedgerDelta>): Promise<void> {
    if (deltas.size === 0) return Promise.resolve();
    return this.db.transaction((connection) => upsertLedger(connection, deltas));
  }

  async readLedger(projectId: string): Promise<Ledger> {
    const connection = this.db.readConnection();
    const rows = await connection.runAndReadAll(
      "SELECT outcome, n FROM ledger WHERE project_id = CAST($1 AS UUID)",
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
      await connection.run("DELETE FROM ledger WHERE project_id = CAST($1 AS UUID)", [projectId]);
    });
  }

  query(projectId: string, spec: QuerySpec): Promise<QueryResult> {
    return this.runner.query(projectId, spec);
  }
}

/** Per project: events stored by this commit are accepted, every other copy is a duplicate. */
function commitLedger(
  events: readonly StoredEvent[],
  insertedKeys: ReadonlySet<string>,
): Map<string, LedgerDelta> {
  const deltas = new Map<string, LedgerDelta>();
  const counted = new Set<string>();
  for (const e of events) {
    const key = `${e.projectId}/${e.uuid}`;
    const delta = deltas.get(e.projectId) ?? { accepted: 0, duplicate: 0 };
    if (insertedKeys.has(key) && !counted.has(key)) {
      counted.add(key);
      delta.accepted = (delta.accepted ?? 0) + 1;
    } else {
      delta.duplicate = (delta.duplicate ?? 0) + 1;
    }
    deltas.set(e.projectId, delta);
  }
  return deltas;
}

async function upsertLedger(
  connection: DuckDBConnection,
  deltas: ReadonlyMap<string, LedgerDelta>,
): Promise<void> {
  const rows = ledgerRows(deltas);
  if (rows.length === 0) return;
  const values: DuckDBValue[] = [];
  const tuples = rows.map(([projectId, outcome, n]) => {
    values.push(projectId, outcome, n);
    const i = values.length;
    return `(CAST($${i - 2} AS UUID), $${i - 1}, CAST($${i} AS BIGINT))`;
  });
  await connection.run(
    `INSERT INTO ledger VALUES ${tuples.join(", ")}
     ON CONFLICT (project_id, outcome) DO UPDATE SET n = ledger.n + excluded.n`,
    values,
  );
}

import type pg from "pg";
import { AppError } from "../../core/errors.js";
import type { CommitOutcome, Ledger, LedgerDelta, StoredEvent } from "../../core/event.js";
import type { AnalyticsStore, EventStore } from "../../pipeline/event-store.js";
import { commitResult, eventKey, ledgerRows, readLedgerRows } from "../../pipeline/ledger-rows.js";
import { UnstorableEventsError } from "../../pipeline/queue-consumer.js";
import type { QueryResult, QuerySpec } from "../../query/spec.js";
import { SqlQueryBuilder } from "../../query/sql-builder.js";
import { SqlQueryRunner } from "../../query/sql-runner.js";
import { isDataError, type PostgresDatabase } from "./postgres.database.js";
import { postgresDialect } from "./postgres.dialect.js";
import {
  DEFAULT_FOLD_OPTIONS,
  type EventCountFoldOptions,
  EventCountFolds,
  FOLD_LOCK_ID,
} from "./postgres.event-counts.js";
import { storableJson, storableText } from "./postgres.text.js";

const EPOCH = "timestamptz '1970-01-01 00:00:00+00'";

/**
 * One statement stores a batch: the keys are claimed in `event_keys` (see postgres.migrations.ts
 * for why uniqueness lives there), and only the events whose key this statement claimed go into
 * `events`. Columns travel as one array parameter each, so a batch of any size is one round trip
 * with seven parameters.
 */
const INSERT_EVENTS = `
  WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::bigint[])
      AS t(project_id, uuid, event, distinct_id, ts, properties, received)
  ),
  claimed AS (
    INSERT INTO event_keys (project_id, uuid)
    SELECT project_id, uuid FROM input
    ON CONFLICT DO NOTHING
    RETURNING project_id, uuid
  ),
  stored AS (
    INSERT INTO events (project_id, uuid, event, distinct_id, timestamp, properties, received_at)
    SELECT i.project_id, i.uuid, i.event, i.distinct_id, ${EPOCH} + i.ts * interval '1 millisecond',
           i.properties::json, ${EPOCH} + i.received * interval '1 millisecond'
    FROM input i JOIN claimed c ON c.project_id = i.project_id AND c.uuid = i.uuid
    RETURNING project_id, uuid
  )
  SELECT project_id::text AS p, uuid::text AS u FROM stored`;

/**
 * Events in Postgres: the store of record of the sync pipeline (the API's group commit writes
 * here) and of the async one (the worker does), and the analytics store of both.
 */
export class PostgresEventStore implements EventStore, AnalyticsStore {
  readonly name = "postgres";
  private readonly runner: SqlQueryRunner;
  private readonly counts: EventCountFolds;

  constructor(
    private readonly db: PostgresDatabase,
    options: { folds?: EventCountFoldOptions } = {},
  ) {
    this.counts = new EventCountFolds(db, options.folds ?? DEFAULT_FOLD_OPTIONS, db.log);
    // Counts with no filter read the hourly counts a trigger keeps (postgres.migrations.ts, version 2).
    const statements = new SqlQueryBuilder(postgresDialect, undefined, undefined, {
      eventCounts: "event_counts",
    });
    this.runner = new SqlQueryRunner(statements, async ({ sql, params, people }) => {
      const values = params.map((p) => (typeof p === "string" ? storableText(p) : p));
      try {
        if (people) {
          // The planner knows nothing of the people's rows (a function's result, then CTEs), so
          // it overestimates joins on them by orders of magnitude, and past jit_optimize_above_cost
          // it compiles the query with LLVM: a funnel by person on 1M events took 1,336 ms with JIT,
          // 411 ms without (the same query by distinct id, 410 ms). Off for these statements alone.
          return await this.db.transaction(async (client) => {
            await client.query("SET LOCAL jit = off");
            return (await client.query(sql, values)).rows;
          });
        }
        const result = await this.db.query(sql, values);
        return result.rows;
      } catch (error) {
        // A value Postgres cannot take (e.g. a number out of range) is the spec's fault, not ours.
        if (isDataError(error))
          throw new AppError("invalid_query", { message: "The query cannot run with these values" });
        throw error;
      }
    });
  }

  start(): Promise<void> {
    return this.db.open();
  }

  ready(): Promise<string | undefined> {
    return this.db.ready();
  }

  async close(): Promise<void> {
    await this.counts.settled();
    await this.db.close();
  }

  /** Folds the hourly counts of the hours this process's commits touched; false if another process was folding. */
  foldCounts(): Promise<boolean> {
    return this.counts.fold();
  }

  async insert(events: readonly StoredEvent[]): Promise<CommitOutcome> {
    const unique = new Map<string, StoredEvent>();
    for (const e of events) {
      const key = eventKey(e);
      if (!unique.has(key)) unique.set(key, e);
    }
    // Keys in one order in every transaction: concurrent inserts of overlapping batches then wait
    // for each other instead of deadlocking.
    const rows = [...unique.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, e]) => e);
    const columns: [string[], string[], string[], string[], number[], string[], number[]] = [
      [],
      [],
      [],
      [],
      [],
      [],
      [],
    ];
    for (const e of rows) {
      columns[0].push(e.projectId);
      columns[1].push(e.uuid);
      columns[2].push(storableText(e.event));
      columns[3].push(storableText(e.distinctId));
      columns[4].push(e.timestamp);
      columns[5].push(storableJson(e.properties));
      columns[6].push(e.receivedAt);
    }
    try {
      const outcome = await this.db.transaction(async (client) => {
        const result = await client.query<{ p: string; u: string }>(INSERT_EVENTS, columns);
        const insertedKeys = new Set(result.rows.map((row) => `${row.p}/${row.u}`));
        const { outcome, ledger } = commitResult(events, insertedKeys);
        await upsertLedger(client, ledger);
        return outcome;
      });
      this.counts.committed(rows);
      return outcome;
    } catch (error) {
      if (isDataError(error)) {
        throw new UnstorableEventsError(`postgres refused the events: ${(error as Error).message}`, error);
      }
      throw error;
    }
  }

  async recordLedger(deltas: ReadonlyMap<string, LedgerDelta>): Promise<void> {
    if (deltas.size === 0) return;
    try {
      await this.db.transaction((client) => upsertLedger(client, deltas));
    } catch (error) {
      if (isDataError(error))
        throw new UnstorableEventsError(`postgres refused the ledger: ${(error as Error).message}`, error);
      throw error;
    }
  }

  async readLedger(projectId: string): Promise<Ledger> {
    const [rows, stored] = await Promise.all([
      this.db.query<{ outcome: string; n: string }>(
        "SELECT outcome, n FROM ledger WHERE project_id = $1::uuid",
        [projectId],
      ),
      this.db.query<{ n: string }>("SELECT count(*) AS n FROM events WHERE project_id = $1::uuid", [
        projectId,
      ]),
    ]);
    return readLedgerRows(
      rows.rows.map((row) => [row.outcome, row.n] as const),
      Number(stored.rows[0]?.n ?? 0),
    );
  }

  async deleteProject(projectId: string): Promise<void> {
    await this.db.transaction(async (client) => {
      // After any fold under way: a fold re-inserts the sums of the rows it deleted.
      await client.query("SELECT pg_advisory_xact_lock($1)", [FOLD_LOCK_ID]);
      await client.query("DELETE FROM event_counts WHERE project_id = $1::uuid", [projectId]);
      await client.query("DELETE FROM events WHERE project_id = $1::uuid", [projectId]);
      await client.query("DELETE FROM event_keys WHERE project_id = $1::uuid", [projectId]);
      await client.query("DELETE FROM ledger WHERE project_id = $1::uuid", [projectId]);
    });
    this.counts.forgetProject(projectId);
  }

  query(projectId: string, spec: QuerySpec): Promise<QueryResult> {
    return this.runner.query(projectId, spec);
  }
}

/** Adds the deltas to the ledger rows, in a fixed order so concurrent writers cannot deadlock. */
async function upsertLedger(client: pg.PoolClient, deltas: ReadonlyMap<string, LedgerDelta>): Promise<void> {
  const rows = ledgerRows(deltas).sort(([pa, oa], [pb, ob]) =>
    pa === pb ? (oa < ob ? -1 : 1) : pa < pb ? -1 : 1,
  );
  if (rows.length === 0) return;
  await client.query(
    `INSERT INTO ledger (project_id, outcome, n)
     SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[])
     ON CONFLICT (project_id, outcome) DO UPDATE SET n = ledger.n + excluded.n`,
    [rows.map((r) => r[0]), rows.map((r) => r[1]), rows.map((r) => r[2])],
  );
}

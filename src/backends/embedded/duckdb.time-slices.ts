import type { DuckDBConnection, DuckDBValue } from "@duckdb/node-api";
import type { Progress } from "./duckdb.progress.js";
import { EVENT_TABLES, type EventTable } from "./duckdb.schema.js";

/**
 * Events rewritten in one transaction. An UPDATE holds what it changed in memory until it
 * commits: on 10M events, one UPDATE of a property slot's two columns raised the process's peak
 * RSS by 528 MB and took 6.5 s; slices of 1M rows by 313 MB in 4.8 s (245K rows: 236 MB in 6.0 s).
 * With one statement, a 100M-event project would need several GB beside the store's cap.
 */
export const SLICE_EVENTS = 1_000_000;

/**
 * Rewrites one project's stored events in slices of their time, each slice of both event tables
 * one write on the database's write queue (`serialWrites`), and returns how many rows the
 * statements updated. Property columns' fills and event ids' fills use it.
 *
 * The slices run from no lower bound to no upper bound, so they cover every event whatever its
 * time, and time, unlike a rowid, never changes under a slice. Both tables in one write: sorting a
 * day moves its late events into `events_in_order` (duckdb.day-order.ts) between two writes, never
 * within one, so no row of a slice is missed by being moved from the table not yet rewritten to
 * the one already rewritten.
 */
export async function rewriteInTimeSlices(options: {
  connection: DuckDBConnection;
  projectId: string;
  /** Events in one slice, by the hourly counts; an hour holding more is one slice. */
  sliceEvents: number;
  serialWrites: (work: () => Promise<void>) => Promise<void>;
  progress: Progress;
  /** Checked before each slice: true stops the rewrite with an error (the caller resumes it). */
  stopping: () => boolean;
  /**
   * The UPDATE of `table`'s rows in the slice, `time` its conditions on the table's `timestamp`
   * (qualified by the table's name), returning the count of rows it updated.
   */
  update: (table: EventTable, time: readonly string[]) => { sql: string; params: DuckDBValue[] };
}): Promise<number> {
  const { connection, projectId } = options;
  const bounds = await sliceBounds(connection, projectId, options.sliceEvents);
  let rows = 0;
  for (let i = 0; i <= bounds.length; i++) {
    if (options.stopping()) throw new Error("stopping: the rewrite resumes at the next start");
    await options.serialWrites(async () => {
      for (const table of EVENT_TABLES) {
        const time = [
          i > 0 ? `${table}.timestamp >= epoch_ms(${bounds[i - 1]})` : "",
          i < bounds.length ? `${table}.timestamp < epoch_ms(${bounds[i]})` : "",
        ].filter((condition) => condition !== "");
        const { sql, params } = options.update(table, time);
        const reader = await connection.runAndReadAll(sql, params);
        const [[updated = 0n] = []] = reader.getRowsJS() as [bigint][];
        rows += Number(updated);
      }
    });
    options.progress.step(i + 1, bounds.length + 1, rows);
  }
  return rows;
}

/**
 * Where the slices start (epoch ms, ascending): every `sliceEvents` events of the project by the
 * hourly counts (`event_counts`, kept in each commit's transaction), cut at whole hours.
 */
async function sliceBounds(
  connection: DuckDBConnection,
  projectId: string,
  sliceEvents: number,
): Promise<number[]> {
  const reader = await connection.runAndReadAll(
    `SELECT epoch_ms(hour), sum(n) FROM event_counts WHERE project_id = CAST($1 AS UUID)
     GROUP BY hour ORDER BY hour`,
    [projectId],
  );
  const bounds: number[] = [];
  let inSlice = 0;
  for (const [hour, n] of reader.getRowsJS() as [bigint, bigint][]) {
    if (inSlice > 0 && inSlice + Number(n) > sliceEvents) {
      bounds.push(Number(hour));
      inSlice = 0;
    }
    inSlice += Number(n);
  }
  return bounds;
}

/**
 * Background fills run one at a time, each after those queued before it, on a connection of their
 * own: close() interrupts the one running (its owner resumes it at the next start) and skips the
 * rest.
 */
export class FillQueue {
  private tail: Promise<void> = Promise.resolve();
  private stopped = false;
  private connection?: DuckDBConnection;

  /** The connection the fills run on, which close() interrupts. */
  use(connection: DuckDBConnection): void {
    this.connection = connection;
  }

  /** close() has begun: a fill checks it between its slices. */
  get closing(): boolean {
    return this.stopped;
  }

  /**
   * Queues `work`, skipped once closing; its failure goes to `failed` and the queue goes on.
   * Resolves when it has run (or been skipped).
   */
  add(work: () => Promise<void>, failed: (error: unknown) => void): Promise<void> {
    const done = this.tail.then(() => (this.stopped ? undefined : work())).catch(failed);
    this.tail = done;
    return done;
  }

  /** Stops the fill under way and waits for the queue to end. */
  async close(): Promise<void> {
    this.stopped = true;
    this.connection?.interrupt();
    await this.tail;
  }

  /** Resolves when every fill queued so far has ended. */
  settled(): Promise<void> {
    return this.tail;
  }
}

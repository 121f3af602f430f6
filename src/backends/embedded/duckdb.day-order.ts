import type { DuckDBConnection } from "@duckdb/node-api";
import type { Log } from "../../core/log.js";
import { LATE_MS } from "./duckdb.schema.js";

export const DAY_MS = 86_400_000;

/**
 * Days with fewer in-order events of a project are left as they are: DuckDB skips the rows of
 * other events a vector (2,048 rows) at a time, so a day needs runs of that length to gain.
 */
export const MIN_SORTED_DAY_EVENTS = 4096;

/**
 * A day with more events is sorted in equal parts of its time, one transaction each, so that a
 * rewrite holds at most about this many rows (a sort of rows with their JSON spills past the
 * memory cap). Runs of one event then span a part, still many vectors long.
 */
export const MAX_SORT_EVENTS = 500_000;

/**
 * Rewrites each UTC day of a project's in-order events, sorted by event then time, once no
 * in-order event can reach it any more: a commit writes an event more than LATE_MS older than its
 * project's newest to `events_late`, so the days before the newest less LATE_MS are final.
 *
 * Commits append rows in arrival order, so every event name is spread over every part of a
 * day. Sorted, the rows of one event lie together, and a query's scan skips the row groups
 * (ROW_GROUP_ROWS, duckdb.database.ts) whose event filter matches nothing. Measured on 10M events
 * (benchmarks/README.md): the 3-step funnel's P99 over HTTP 204 → 135 ms (time order) and
 * 163 → 133 ms (arrival order), a breakdown's 98 → 68, at DuckDB's default row groups; the
 * rewrite cost about 7 µs an event alone and 9 µs beside a bulk load, once. Into row groups of
 * 16,384 rows it costs about 5 µs (9.78M events in 46.5 s), and 10M events sent through the API
 * load at 27.0K events/s (24.1K before days were sorted).
 *
 * A day is rewritten in one transaction with the project's watermark (`sorted_until`): its rows
 * copied sorted, deleted, and appended again, so a reader sees the day either way, never both or
 * neither, and a crash leaves it as it was. The rewrites go through the database's write queue,
 * one at a time with every other write of old rows there (project deletions, the ledger's
 * compaction, property fills), while commits, which only append, go on beside them.
 */
export class DayOrder {
  private connection?: DuckDBConnection;
  /** Per project, the sealed bound already handed to the queue. */
  private readonly scheduled = new Map<string, number>();
  private running: Promise<void> = Promise.resolve();
  private closing = false;

  constructor(
    private readonly options: {
      /** Runs `work` in one transaction on the database's write queue. */
      transaction: <T>(work: (connection: DuckDBConnection) => Promise<T>) => Promise<T>;
      log?: Log;
      /** MIN_SORTED_DAY_EVENTS by default (tests make it small). */
      minEvents?: number;
      /** MAX_SORT_EVENTS by default (tests make it small). */
      maxEvents?: number;
    },
  ) {}

  /** `connection` reads which days a project has. */
  open(connection: DuckDBConnection): void {
    this.connection = connection;
  }

  /** The project's newest in-order time moved to `frontier`: sorts the days that became final. */
  advanced(projectId: string, frontier: number): void {
    const sealed = Math.floor((frontier - LATE_MS) / DAY_MS) * DAY_MS;
    if (sealed <= (this.scheduled.get(projectId) ?? Number.NEGATIVE_INFINITY)) return;
    this.scheduled.set(projectId, sealed);
    this.running = this.running
      .then(() => this.sortDays(projectId, sealed))
      .catch((error: unknown) => {
        // The days stay as they were (still correct, only slower to scan); the next move retries.
        this.scheduled.delete(projectId);
        if (!this.closing)
          this.options.log?.warn({ err: error, project_id: projectId }, "sorting days failed");
      });
  }

  /** Resolves when every sort scheduled so far has ended. */
  settled(): Promise<void> {
    return this.running;
  }

  /** Stops after the day under way; the next start goes on from the watermark. */
  async close(): Promise<void> {
    this.closing = true;
    await this.running;
  }

  forgetProject(projectId: string): void {
    this.scheduled.delete(projectId);
  }

  private async sortDays(projectId: string, sealed: number): Promise<void> {
    const connection = this.connection;
    if (!connection || this.closing) return;
    const started = performance.now();
    const reader = await connection.runAndReadAll(
      `SELECT epoch_ms(date_trunc('day', e.timestamp)) AS day, count(*) AS n FROM events_in_order e
       WHERE e.project_id = CAST($1 AS UUID) AND e.timestamp < epoch_ms($2)
         AND e.timestamp >= coalesce((SELECT until FROM sorted_until WHERE project_id = CAST($1 AS UUID)), TIMESTAMP '1970-01-01')
       GROUP BY ALL ORDER BY day`,
      [projectId, sealed],
    );
    const minEvents = this.options.minEvents ?? MIN_SORTED_DAY_EVENTS;
    const listed = reader.getRowsJS() as [bigint, bigint][];
    if (listed.length === 0) return;
    const days = listed
      .map(([day, events]) => ({ day: Number(day), events: Number(events) }))
      .filter(({ events }) => events >= minEvents);
    if (days.length > 0)
      this.options.log?.info({ project_id: projectId, days: days.length }, "sorting days by event");
    let sortedDays = 0;
    let sortedEvents = 0;
    for (const { day, events } of days) {
      const parts = Math.ceil(events / (this.options.maxEvents ?? MAX_SORT_EVENTS));
      for (let part = 0; part < parts; part++) {
        if (this.closing) return;
        const from = day + Math.floor((part * DAY_MS) / parts);
        const to = day + Math.floor(((part + 1) * DAY_MS) / parts);
        // A crash between parts sorts the day again from its first part: the same rows, once more.
        await this.options.transaction(async (writer) => {
          const range =
            "project_id = CAST($1 AS UUID) AND timestamp >= epoch_ms($2) AND timestamp < epoch_ms($3)";
          const bounds = [projectId, from, to];
          await writer.run(
            `CREATE OR REPLACE TEMP TABLE sorted_day AS SELECT * FROM events_in_order WHERE ${range} ORDER BY event, timestamp`,
            bounds,
          );
          await writer.run(`DELETE FROM events_in_order WHERE ${range}`, bounds);
          await writer.run("INSERT INTO events_in_order SELECT * FROM temp.sorted_day");
          await writer.run("DROP TABLE temp.sorted_day");
          if (part === parts - 1) await this.saveWatermark(writer, projectId, day + DAY_MS);
        });
      }
      sortedDays++;
      sortedEvents += events;
    }
    if (this.closing) return;
    // Days too small to sort are final too: the next pass starts after them.
    await this.options.transaction((writer) => this.saveWatermark(writer, projectId, sealed));
    if (sortedDays > 0)
      this.options.log?.info(
        {
          project_id: projectId,
          days: sortedDays,
          events: sortedEvents,
          took_ms: Math.round(performance.now() - started),
        },
        "days sorted by event",
      );
  }

  /**
   * Only forward. A project deleted while its days were being sorted may keep its row: one row,
   * under an id no project takes again.
   */
  private async saveWatermark(writer: DuckDBConnection, projectId: string, until: number): Promise<void> {
    await writer.run(
      `INSERT INTO sorted_until VALUES (CAST($1 AS UUID), epoch_ms($2))
       ON CONFLICT (project_id) DO UPDATE SET until = greatest(sorted_until.until, excluded.until)`,
      [projectId, until],
    );
  }
}

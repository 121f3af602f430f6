import type { DuckDBConnection } from "@duckdb/node-api";
import type { Log } from "../../core/log.js";
import { Progress } from "./duckdb.progress.js";
import { LATE_MS } from "./duckdb.schema.js";

export const DAY_MS = 86_400_000;

/**
 * Days with fewer events of a project are left as they are: DuckDB skips the rows of
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
 * How long a final day waits before it is sorted. Mobile clients flush the events they queued
 * offline when the app next opens, often more than LATE_MS later: such a straggler goes to
 * `events_late`, and the day's sort folds it in. Waiting a day more lets most of them arrive
 * first, so that the day is rewritten once rather than again for them. Queries over the last
 * three days rather than two read days not yet sorted.
 */
export const SORT_GRACE_MS = DAY_MS;

/**
 * A sorted day is sorted again, with its late events, once they number at least the day's
 * in-order events divided by this (and minEvents): an import into past days then costs queries
 * little, and a day of N events is rewritten for at least N/16 late ones, not for every few.
 */
export const REFOLD_FRACTION = 16;

/** The end of a project's days that are sorted, given its newest in-order time. */
export function sortedDaysEnd(frontier: number): number {
  return Math.floor((frontier - LATE_MS - SORT_GRACE_MS) / DAY_MS) * DAY_MS;
}

/**
 * Rewrites each UTC day of a project's events, sorted by event id then time, once no in-order event
 * can reach it any more: a commit writes an event more than LATE_MS older than its project's
 * newest to `events_late`, so the days before the newest less LATE_MS are final. The day's late
 * events are folded into it, out of `events_late`, and so are those that reach a sorted day later
 * once they are many (REFOLD_FRACTION): a query then reads one table, skipping what it does not
 * need, rather than a second one it reads whole.
 *
 * Commits append rows in arrival order, so every event name is spread over every part of a
 * day. Sorted, the rows of one event lie together, and a query's scan skips the row groups
 * (ROW_GROUP_ROWS, duckdb.database.ts) whose event filter matches nothing. Queries filter by the
 * event's id (duckdb.event-ids.ts), numbered as names are first seen, so the day is sorted by id:
 * sorted by name, a row group holding two names next to each other by name would span the ids
 * between theirs. Events of a store migrated from schema 8 whose ids are not yet filled sort last,
 * by name. Measured on 10M events
 * (benchmarks/README.md): the 3-step funnel's P99 over HTTP 204 → 135 ms (time order) and
 * 163 → 133 ms (arrival order), a breakdown's 98 → 68, at DuckDB's default row groups; the
 * rewrite cost about 7 µs an event alone and 9 µs beside a bulk load, once. Into row groups of
 * 16,384 rows it costs about 5 µs (9.78M events in 46.5 s), and 10M events sent through the API
 * load at 27.0K events/s (24.1K before days were sorted).
 *
 * A day is rewritten in one transaction with the project's watermark (`sorted_until`): its rows
 * of both tables copied sorted, deleted, and appended to `events_in_order`, so a reader sees the
 * day either way, never both or neither, and a crash leaves it as it was. The rewrites go through
 * the database's write queue, one at a time with its other writes (project deletions, the
 * ledger's compaction, property fills), and after them: each waits while any of those waits
 * (duckdb.write-queue.ts). Commits, which only append, go on beside them.
 */
export class DayOrder {
  private connection?: DuckDBConnection;
  /** Per project, the sealed bound already handed to the queue. */
  private readonly scheduled = new Map<string, number>();
  /** Per project, the late events committed since its last pass looked for days to fold them into. */
  private readonly lateSincePass = new Map<string, number>();
  /** Projects with a pass queued that has not begun. */
  private readonly queued = new Set<string>();
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

  /**
   * `connection` reads which days a project has. Each project's watermark is read here, once:
   * the store then reports every project's newest time, and a project whose days are sorted up
   * to it needs no pass. Every start passed over every project: on a store of 10M events and 451
   * projects that was 5.5 s of CPU in the background after each start, and is 7-18 ms now. A
   * project with enough late events in its sorted days still gets its pass (their fold may not
   * have run before the store closed).
   */
  async open(connection: DuckDBConnection): Promise<void> {
    this.connection = connection;
    const marks = await connection.runAndReadAll(
      `SELECT CAST(s.project_id AS VARCHAR), epoch_ms(s.until) FROM sorted_until s
       LEFT JOIN (SELECT l.project_id, count(*) AS n FROM events_late l JOIN sorted_until w USING (project_id)
         WHERE l.timestamp < w.until GROUP BY ALL) late USING (project_id)
       WHERE coalesce(late.n, 0) < $1`,
      [this.minEvents],
    );
    for (const [projectId, until] of marks.getRowsJS() as [string, bigint][])
      this.scheduled.set(projectId, Number(until));
  }

  /** The project's newest in-order time moved to `frontier`: sorts the days that became final. */
  advanced(projectId: string, frontier: number): void {
    const sealed = sortedDaysEnd(frontier);
    if (sealed <= (this.scheduled.get(projectId) ?? Number.NEGATIVE_INFINITY)) return;
    this.scheduled.set(projectId, sealed);
    this.lateSincePass.delete(projectId);
    this.schedule(projectId);
  }

  /**
   * A commit wrote `events` late events of the project. Once minEvents have gathered since the
   * last pass, a pass looks for sorted days that have enough of them to be sorted again.
   */
  lateArrived(projectId: string, events: number): void {
    const gathered = (this.lateSincePass.get(projectId) ?? 0) + events;
    if (gathered < this.minEvents || !this.scheduled.has(projectId)) {
      this.lateSincePass.set(projectId, gathered);
      return;
    }
    this.lateSincePass.delete(projectId);
    this.schedule(projectId);
  }

  private get minEvents(): number {
    return this.options.minEvents ?? MIN_SORTED_DAY_EVENTS;
  }

  /**
   * Queues a pass over the project, unless one is queued and not yet begun: that one reads the
   * newest bound when it begins, so an import's many commits make one pass, not one each.
   */
  private schedule(projectId: string): void {
    if (this.queued.has(projectId)) return;
    this.queued.add(projectId);
    this.running = this.running
      .then(() => {
        this.queued.delete(projectId);
        const sealed = this.scheduled.get(projectId);
        return sealed === undefined ? undefined : this.sortDays(projectId, sealed);
      })
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
    this.lateSincePass.delete(projectId);
  }

  private async sortDays(projectId: string, sealed: number): Promise<void> {
    const connection = this.connection;
    if (!connection || this.closing) return;
    const started = performance.now();
    // The watermark is read first and given as a constant, which lets the listing skip the row
    // groups outside its time range: as a subquery it was a join, and the pass read the project's
    // column of the whole table (5-10 ms a project on 10M events).
    const marked = await connection.runAndReadAll(
      "SELECT epoch_ms(until) FROM sorted_until WHERE project_id = CAST($1 AS UUID)",
      [projectId],
    );
    const [[mark = 0n] = []] = marked.getRowsJS() as [bigint][];
    const until = Number(mark);
    if (until >= sealed) return this.refold(projectId, connection, until);
    // Both tables: a day's late events count toward its size and are folded in with it.
    const reader = await connection.runAndReadAll(
      `SELECT epoch_ms(date_trunc('day', e.timestamp)) AS day, count(*) AS n FROM events e
       WHERE e.project_id = CAST($1 AS UUID) AND e.timestamp < epoch_ms($2) AND e.timestamp >= epoch_ms($3)
       GROUP BY ALL ORDER BY day`,
      [projectId, sealed, until],
    );
    const listed = reader.getRowsJS() as [bigint, bigint][];
    const days = listed
      .map(([day, events]) => ({ day: Number(day), events: Number(events) }))
      .filter(({ events }) => events >= this.minEvents);
    if (days.length > 0)
      this.options.log?.info({ project_id: projectId, days: days.length }, "sorting days by event");
    let sortedDays = 0;
    let sortedEvents = 0;
    const progress = new Progress(this.options.log, "sorting days by event: progress", {
      project_id: projectId,
    });
    for (const { day, events } of days) {
      if (!(await this.sortDay(projectId, day, events, true))) return;
      sortedDays++;
      sortedEvents += events;
      progress.step(sortedDays, days.length, sortedEvents);
    }
    if (this.closing) return;
    // Days too small to sort, or with no event, are final too: the next pass starts after them.
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
    await this.refold(projectId, connection, sealed);
  }

  /**
   * Sorts again, with their late events, the sorted days (before `until`) that have gathered at
   * least minEvents of them and a REFOLD_FRACTION of their in-order events. The late events are
   * counted first, and a day's in-order events only for the days that have enough: as one
   * statement, the count of in-order events was a join that read the project's whole column even
   * when no day had a late event (about 10 ms a project on 10M events, at every start).
   */
  private async refold(projectId: string, connection: DuckDBConnection, until: number): Promise<void> {
    const started = performance.now();
    const lateDays = await connection.runAndReadAll(
      `SELECT epoch_ms(date_trunc('day', timestamp)) AS day, count(*) AS n FROM events_late
       WHERE project_id = CAST($1 AS UUID) AND timestamp < epoch_ms($2)
       GROUP BY ALL HAVING count(*) >= $3 ORDER BY day`,
      [projectId, until, this.minEvents],
    );
    const days: { day: number; late: number; inOrder: number }[] = [];
    for (const [day, late] of lateDays.getRowsJS() as [bigint, bigint][]) {
      const inOrder = await connection.runAndReadAll(
        `SELECT count(*) FROM events_in_order WHERE project_id = CAST($1 AS UUID)
           AND timestamp >= epoch_ms($2) AND timestamp < epoch_ms($3)`,
        [projectId, Number(day), Number(day) + DAY_MS],
      );
      const [[n = 0n] = []] = inOrder.getRowsJS() as [bigint][];
      if (Number(late) * REFOLD_FRACTION >= Number(n))
        days.push({ day: Number(day), late: Number(late), inOrder: Number(n) });
    }
    let late = 0;
    for (const day of days) {
      if (!(await this.sortDay(projectId, day.day, day.late + day.inOrder, false))) return;
      late += day.late;
    }
    if (days.length > 0)
      this.options.log?.info(
        {
          project_id: projectId,
          days: days.length,
          late_events: late,
          took_ms: Math.round(performance.now() - started),
        },
        "late events folded into their days",
      );
  }

  /**
   * Rewrites one day of the project from both tables into `events_in_order`, sorted by event and
   * time, in parts of at most maxEvents; the last part moves the watermark past it when `mark`.
   * False when the store began to close first.
   */
  private async sortDay(projectId: string, day: number, events: number, mark: boolean): Promise<boolean> {
    const parts = Math.ceil(events / (this.options.maxEvents ?? MAX_SORT_EVENTS));
    for (let part = 0; part < parts; part++) {
      if (this.closing) return false;
      const from = day + Math.floor((part * DAY_MS) / parts);
      const to = day + Math.floor(((part + 1) * DAY_MS) / parts);
      // A crash between parts sorts the day again from its first part: the same rows, once more.
      await this.options.transaction(async (writer) => {
        const range =
          "project_id = CAST($1 AS UUID) AND timestamp >= epoch_ms($2) AND timestamp < epoch_ms($3)";
        const bounds = [projectId, from, to];
        await writer.run(
          `CREATE OR REPLACE TEMP TABLE sorted_day AS
           SELECT * FROM events_in_order WHERE ${range} UNION ALL BY NAME SELECT * FROM events_late WHERE ${range}
           ORDER BY eid, event, timestamp`,
          bounds,
        );
        await writer.run(`DELETE FROM events_in_order WHERE ${range}`, bounds);
        await writer.run(`DELETE FROM events_late WHERE ${range}`, bounds);
        await writer.run("INSERT INTO events_in_order BY NAME SELECT * FROM temp.sorted_day");
        await writer.run("DROP TABLE temp.sorted_day");
        if (mark && part === parts - 1) await this.saveWatermark(writer, projectId, day + DAY_MS);
      });
    }
    return true;
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

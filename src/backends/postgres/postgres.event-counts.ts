import type { StoredEvent } from "../../core/event.js";
import type { Log } from "../../core/log.js";
import type { PostgresDatabase } from "./postgres.database.js";
import { postgresDialect } from "./postgres.dialect.js";

/** pg_advisory_xact_lock key: "tidemark event counts" (one fold at a time, across processes). */
export const FOLD_LOCK_ID = 7_235_003;

const HOUR_MS = 3_600_000;

/**
 * Folds the rows of the given (project, hour)s into one per (project, event, hour), keeping each
 * sum. It reads and deletes only keys with more than one row, so a folded hour is not rewritten.
 * The rows a commit appends after this statement's snapshot stay as they are, for the next fold.
 */
const FOLD = `
  WITH keys AS (
    SELECT DISTINCT project_id, ${postgresDialect.timestampFromMs("hour_ms")} AS hour
    FROM unnest($1::uuid[], $2::bigint[]) AS k(project_id, hour_ms)
  ),
  many AS (
    SELECT c.project_id, c.event, c.hour FROM event_counts c JOIN keys k USING (project_id, hour)
    GROUP BY 1, 2, 3 HAVING count(*) > 1
  ),
  gone AS (
    DELETE FROM event_counts c USING many m
    WHERE c.project_id = m.project_id AND c.event = m.event AND c.hour = m.hour
    RETURNING c.project_id, c.event, c.hour, c.n
  )
  INSERT INTO event_counts (project_id, event, hour, n)
  SELECT project_id, event, hour, sum(n) FROM gone GROUP BY 1, 2, 3`;

export interface EventCountFoldOptions {
  /** Fold after this many commits (or sooner, once maxKeys hours wait). */
  everyCommits: number;
  /** Fold once this many (project, hour)s wait. */
  maxKeys: number;
}

/**
 * Commits between folds. Folding the hours 64 commits touched (500 events each, about an hour of
 * events apiece, 10 names) took 11–21 ms in a table of 4–7K rows, taking it from 4,980–7,470 rows
 * to 4,360–6,850.
 */
export const DEFAULT_FOLD_OPTIONS: EventCountFoldOptions = { everyCommits: 64, maxKeys: 20_000 };

/**
 * Keeps `event_counts` (postgres.migrations.ts, version 2) at about one row per (project, event,
 * hour). Each insert of events appends a row per (project, event, hour) it holds, so without folds
 * the table grows with commits rather than with hours, and a count over 30 days sums them all.
 * This process remembers the hours its commits touched and folds them every few commits, in the
 * background: a fold that fails leaves the rows as they were (the sums are the same, only longer
 * to read) and the next one takes its hours again. One fold runs at a time across every process
 * (FOLD_LOCK_ID); a process that finds the lock taken keeps its hours for its next turn.
 */
export class EventCountFolds {
  /** Per project, the hours (epoch ms) touched since the last fold. */
  private touched = new Map<string, Set<number>>();
  private touchedKeys = 0;
  private commitsSinceFold = 0;
  private running: Promise<void> | undefined;

  constructor(
    private readonly db: PostgresDatabase,
    private readonly options: EventCountFoldOptions = DEFAULT_FOLD_OPTIONS,
    private readonly log?: Log,
  ) {}

  /** A commit stored these events: remembers their hours, and folds when enough have gathered. */
  committed(events: Iterable<StoredEvent>): void {
    for (const e of events) this.touch(e.projectId, Math.floor(e.timestamp / HOUR_MS) * HOUR_MS);
    this.commitsSinceFold++;
    if (this.commitsSinceFold >= this.options.everyCommits || this.touchedKeys >= this.options.maxKeys)
      void this.fold().catch((error: unknown) =>
        this.log?.warn({ err: error }, "folding the hourly event counts failed; the next fold retries"),
      );
  }

  /**
   * Folds the hours touched so far, unless a fold of this process is under way (then resolves when
   * it ends). Resolves to whether it folded: false when another process held the lock.
   */
  fold(): Promise<boolean> {
    if (this.running) return this.running.then(() => false);
    const touched = this.touched;
    if (touched.size === 0) return Promise.resolve(true);
    this.touched = new Map();
    this.touchedKeys = 0;
    this.commitsSinceFold = 0;
    const projects: string[] = [];
    const hours: number[] = [];
    for (const [projectId, projectHours] of touched)
      for (const hour of projectHours) {
        projects.push(projectId);
        hours.push(hour);
      }
    const done = this.db
      .transaction(async (client) => {
        const lock = await client.query<{ locked: boolean }>(
          "SELECT pg_try_advisory_xact_lock($1) AS locked",
          [FOLD_LOCK_ID],
        );
        if (!lock.rows[0]?.locked) return false;
        await client.query(FOLD, [projects, hours]);
        return true;
      })
      .then(
        (folded) => {
          if (!folded) this.keep(touched);
          return folded;
        },
        (error: unknown) => {
          this.keep(touched);
          throw error;
        },
      )
      .finally(() => {
        this.running = undefined;
      });
    this.running = done.then(
      () => undefined,
      () => undefined,
    );
    return done;
  }

  /** Ends with the fold under way, if any. */
  async settled(): Promise<void> {
    await this.running;
  }

  forgetProject(projectId: string): void {
    const hours = this.touched.get(projectId);
    if (!hours) return;
    this.touchedKeys -= hours.size;
    this.touched.delete(projectId);
  }

  /** Hours a fold did not take go back to wait for the next one. */
  private keep(touched: ReadonlyMap<string, ReadonlySet<number>>): void {
    for (const [projectId, hours] of touched) for (const hour of hours) this.touch(projectId, hour);
  }

  private touch(projectId: string, hour: number): void {
    let hours = this.touched.get(projectId);
    if (!hours) {
      hours = new Set();
      this.touched.set(projectId, hours);
    }
    if (hours.has(hour)) return;
    hours.add(hour);
    this.touchedKeys++;
  }
}

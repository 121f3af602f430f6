/** How long a count of a range's events is reused (PlanHints.eventsInRange). */
export const RANGE_COUNT_MAX_AGE_MS = 10_000;

/** Range counts kept at most; past it they are all dropped and read again. */
export const RANGE_COUNTS_KEPT = 1_024;

/**
 * What the store reads to choose how a statement runs, never what it answers: whether
 * `events_late` holds rows (how a funnel's first step groups the tables,
 * SqlQueryBuilder.firstByUser) and how many events of one name a time range holds (whether the
 * step runs where DuckDB may use a perfect hash table, DuckDbEventStore.readerFor). Either choice
 * gives the same answer, so a hint may lag the data a little; reading both anew took 4.5-5.3 ms of
 * an 82-91 ms funnel on 10M events (two statements of their own, each planned and run).
 *
 * Whether `events_late` holds rows is read again after every write that may have changed it (the
 * store calls lateRowsChanged once such a write is visible). A range's count is reused for
 * RANGE_COUNT_MAX_AGE_MS: it only grows while events arrive, and a stale one can at worst pick the
 * slower of the two connections for a few seconds (3 ms more on 2 hours of events, 16 ms less on
 * 30 days, duckdb.event-store.ts).
 */
export class PlanHints {
  private lateVersion = 0;
  private late?: { version: number; holdsRows: boolean };
  private readonly counts = new Map<string, { events: number; readAt: number }>();

  constructor(private readonly now: () => number = Date.now) {}

  /** A write that may have added rows to `events_late` or removed them has become visible. */
  lateRowsChanged(): void {
    this.lateVersion++;
  }

  /** Whether `events_late` holds rows, read with `read` unless known since the last change. */
  async lateRows(read: () => Promise<boolean>): Promise<boolean> {
    const late = this.late;
    if (late?.version === this.lateVersion) return late.holdsRows;
    // Taken before the read: a change while it runs makes the next call read again.
    const version = this.lateVersion;
    const holdsRows = await read();
    this.late = { version, holdsRows };
    return holdsRows;
  }

  /** The events of a project's event name in a range, read with `read` unless read lately. */
  async eventsInRange(
    range: { projectId: string; event: string; fromMs: number; toMs: number },
    read: () => Promise<number>,
  ): Promise<number> {
    const key = `${range.projectId}\n${range.event}\n${range.fromMs}\n${range.toMs}`;
    const now = this.now();
    const kept = this.counts.get(key);
    if (kept && now - kept.readAt < RANGE_COUNT_MAX_AGE_MS) return kept.events;
    const events = await read();
    if (this.counts.size >= RANGE_COUNTS_KEPT) this.counts.clear();
    this.counts.set(key, { events, readAt: now });
    return events;
  }

  /** A project was deleted: its counts go, and `events_late` may have lost rows. */
  projectDeleted(projectId: string): void {
    for (const key of this.counts.keys()) if (key.startsWith(`${projectId}\n`)) this.counts.delete(key);
    this.lateRowsChanged();
  }
}

/** How soon a write waiting in the queue runs: `background` ones only when no `normal` one waits. */
export type WritePriority = "normal" | "background";

interface Job {
  run: () => Promise<void>;
}

/**
 * The database's writes other than commits (projects and keys, property columns filled, the
 * daily users folded, the ledger compacted, days sorted) run here one at a time, since they share
 * one connection and would conflict on the same rows. `normal` jobs run in the order they came;
 * a `background` job runs only when no `normal` one waits.
 *
 * Why two lanes: a property column's fill and the sort of final days each take many writes (a
 * slice of events, a day), and each queues its next write once the last has ended. In one lane
 * they took turns: on 100M events the three columns a query asked for were filled in 334, 472 and
 * 306 s while 87 days were sorted beside them, and in 89, 130 and 77 s with the sorts behind them
 * (benchmarks/README.md). A column turns a property's query from parsing JSON into reading a typed
 * column (top values on 10M events: 2,038 -> 46 ms); a sorted day saves a part of a scan. A normal
 * write, such as a project's creation, waits for the write under way and those queued before it
 * in its lane, never for the sorts queued.
 *
 * A job's next write is queued by the code awaiting the last one, a few promise turns after it
 * ends: the queue starts the next job only after the event loop's current turn (setImmediate), so
 * that a fill's next slice is queued by then and is not passed by a waiting sort.
 */
export class WriteQueue {
  private readonly lanes: Record<WritePriority, Job[]> = { normal: [], background: [] };
  private running = false;
  private idleWaiters: (() => void)[] = [];

  /** Runs `work` once every write before it in its lane (and, for `background`, every `normal` one) has ended. */
  add<T>(work: () => Promise<T>, priority: WritePriority = "normal"): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.lanes[priority].push({
        run: () => Promise.resolve().then(work).then(resolve, reject),
      });
      if (!this.running) {
        this.running = true;
        setImmediate(() => void this.drain());
      }
    });
  }

  /** Resolves when no write is queued or running. */
  idle(): Promise<void> {
    if (!this.running) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private async drain(): Promise<void> {
    for (;;) {
      const job = this.lanes.normal.shift() ?? this.lanes.background.shift();
      if (job === undefined) break;
      await job.run();
      // Let the code that awaited this job queue its next write before the next one is chosen.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    this.running = false;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const resolve of waiters) resolve();
  }
}

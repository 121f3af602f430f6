import { AppError } from "../core/errors.js";
import type { StoredEvent } from "../core/event.js";
import type { EnqueueResult, EventQueue } from "./event-queue.js";
import type { CommitReport, EventStore } from "./event-store.js";

export interface GroupCommitOptions {
  /** Flush as soon as this many events wait. */
  maxEvents: number;
  /** Otherwise flush this long after the first event arrived, to let concurrent requests join. */
  intervalMs: number;
  /** Refuse new events (503) while this many are waiting or being committed. */
  maxPending: number;
  /** Commits that may run at once (the store must accept concurrent `insert` calls). */
  concurrency?: number;
  /** Called after every commit, for metrics. */
  onFlush?: (report: CommitReport) => void;
}

interface Waiter {
  events: readonly StoredEvent[];
  resolve: (result: EnqueueResult) => void;
  reject: (error: unknown) => void;
}

/**
 * Group commit: concurrent requests share one store commit. A request's promise resolves only
 * after the commit holding its events returned, so a 202 always means committed. What arrives
 * while the commits run forms the next one, so commits grow with load by themselves.
 *
 * When a commit of several requests fails, each request is retried alone, so one request the
 * store cannot take does not fail the others that happened to share its commit.
 */
export class GroupCommitQueue implements EventQueue {
  readonly name = "group-commit";
  private waiting: Waiter[] = [];
  private waitingEvents = 0;
  private inFlightEvents = 0;
  private inFlightCommits = 0;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private drained: (() => void) | undefined;
  private readonly concurrency: number;

  constructor(
    private readonly store: EventStore,
    private readonly options: GroupCommitOptions,
  ) {
    this.concurrency = Math.max(1, options.concurrency ?? 1);
  }

  /** The store's own lifecycle is the composition root's; the queue only uses it. */
  async start(): Promise<void> {}

  ready(): Promise<string | undefined> {
    return this.store.ready();
  }

  async depth(): Promise<number> {
    return this.waitingEvents + this.inFlightEvents;
  }

  enqueue(events: readonly StoredEvent[]): Promise<EnqueueResult> {
    if (this.closed)
      return Promise.reject(
        new AppError("unavailable", { message: "Tidemark is shutting down", retryAfter: 1 }),
      );
    if (this.waitingEvents + this.inFlightEvents + events.length > this.options.maxPending) {
      return Promise.reject(new AppError("overloaded", { retryAfter: 1 }));
    }
    return new Promise<EnqueueResult>((resolve, reject) => {
      this.waiting.push({ events, resolve, reject });
      this.waitingEvents += events.length;
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.inFlightCommits >= this.concurrency || this.waiting.length === 0) return;
    if (this.waitingEvents >= this.options.maxEvents || this.options.intervalMs === 0 || this.closed) {
      this.flushNow();
      return;
    }
    this.timer ??= setTimeout(() => this.flushNow(), this.options.intervalMs);
  }

  private flushNow(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    while (this.inFlightCommits < this.concurrency && this.waiting.length > 0) {
      const batch = this.takeBatch();
      this.inFlightCommits++;
      void this.commit(batch).finally(() => {
        this.inFlightCommits--;
        if (this.waiting.length > 0) this.schedule();
        else if (this.inFlightCommits === 0) this.drained?.();
      });
    }
  }

  /** Takes whole requests up to maxEvents (at least one request, however large). */
  private takeBatch(): Waiter[] {
    let count = 0;
    let taken = 0;
    while (taken < this.waiting.length) {
      const size = this.waiting[taken]!.events.length;
      if (taken > 0 && count + size > this.options.maxEvents) break;
      count += size;
      taken++;
    }
    const batch = this.waiting.splice(0, taken);
    this.waitingEvents -= count;
    this.inFlightEvents += count;
    return batch;
  }

  private async commit(batch: Waiter[]): Promise<void> {
    const size = batch.reduce((n, w) => n + w.events.length, 0);
    try {
      if (!(await this.tryCommit(batch)) && batch.length > 1) {
        for (const waiter of batch) await this.tryCommit([waiter]);
      }
    } finally {
      this.inFlightEvents -= size;
    }
  }

  /** Commits and settles the waiters; false when it failed and the waiters are still pending. */
  private async tryCommit(batch: Waiter[]): Promise<boolean> {
    const events = batch.length === 1 ? batch[0]!.events : batch.flatMap((w) => w.events);
    const started = performance.now();
    try {
      const outcome = await this.store.insert(events);
      this.options.onFlush?.({ events: events.length, durationMs: performance.now() - started, outcome });
      // Positions in the commit back to positions in each request: the waiters' events are laid
      // end to end in order, and the positions come sorted.
      let next = 0;
      let offset = 0;
      for (const waiter of batch) {
        const end = offset + waiter.events.length;
        const mine: number[] = [];
        while (next < outcome.duplicates.length && outcome.duplicates[next]! < end) {
          mine.push(outcome.duplicates[next]! - offset);
          next++;
        }
        waiter.resolve({ duplicates: mine });
        offset = end;
      }
      return true;
    } catch (error) {
      this.options.onFlush?.({ events: events.length, durationMs: performance.now() - started, error });
      if (batch.length > 1) return false;
      const failure = new AppError("unavailable", {
        message: "The event store could not commit; retry",
        retryAfter: 1,
        cause: error,
      });
      batch[0]!.reject(failure);
      return true;
    }
  }

  /** Stops taking events and commits everything already accepted. */
  async close(): Promise<void> {
    this.closed = true;
    this.flushNow();
    if (this.inFlightCommits === 0 && this.waiting.length === 0) return;
    await new Promise<void>((resolve) => {
      this.drained = resolve;
    });
  }
}

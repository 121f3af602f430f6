import type { LedgerDelta } from "../core/event.js";
import type { EventStore } from "./event-store.js";
import { mergeLedgerDelta } from "./ledger-rows.js";

/**
 * The API's share of the loss ledger (received, rejected, rate limited), summed in memory and
 * written to the store every `intervalMs` and on close. Accepted and duplicate counts are written
 * by the store itself, in the transaction that stores the events.
 */
export class LedgerRecorder {
  private pending = new Map<string, LedgerDelta>();
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> = Promise.resolve();

  constructor(
    private readonly store: EventStore,
    private readonly intervalMs = 1000,
    private readonly onError: (error: unknown) => void = () => {},
  ) {}

  add(projectId: string, delta: LedgerDelta): void {
    const current = this.pending.get(projectId);
    if (current) mergeLedgerDelta(current, delta);
    else this.pending.set(projectId, mergeLedgerDelta({}, delta));
    this.timer ??= setTimeout(() => void this.flush(), this.intervalMs);
  }

  /** Writes what is pending; on failure the counts are kept for the next try. */
  flush(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    this.writing = this.writing.then(async () => {
      if (this.pending.size === 0) return;
      const batch = this.pending;
      this.pending = new Map();
      try {
        await this.store.recordLedger(batch);
      } catch (error) {
        for (const [projectId, delta] of batch) this.add(projectId, delta);
        this.onError(error);
      }
    });
    return this.writing;
  }

  /** Forgets what is pending for a deleted project. */
  forget(projectId: string): void {
    this.pending.delete(projectId);
  }
}

import type { StoredEvent } from "../core/event.js";
import type { Lifecycle } from "./lifecycle.js";

export interface EnqueueResult {
  /**
   * Positions, in the enqueued events, of the duplicates (see `CommitOutcome.duplicates`), when
   * the pipeline knows at acknowledgement time (embedded, sync); absent when it cannot tell yet.
   */
  duplicates?: number[];
}

/**
 * Where the API hands validated events. `enqueue` resolves only once the events are durable in
 * the pipeline's first store (a commit, or an XADD on a durable Redis), so a 202 is never lost.
 * Many concurrent calls may share one flush.
 *
 * It rejects with `AppError("overloaded")` when too much is waiting (back-pressure, 503 with
 * Retry-After) and with `AppError("unavailable")` when the backend cannot be reached.
 */
export interface EventQueue extends Lifecycle {
  enqueue(events: readonly StoredEvent[]): Promise<EnqueueResult>;
  /** Events accepted by `enqueue` but not yet durable or not yet consumed: for metrics. */
  depth(): Promise<number>;
}

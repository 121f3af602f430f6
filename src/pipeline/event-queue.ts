import type { StoredEvent } from "../core/event.js";
import type { Lifecycle } from "./lifecycle.js";

export interface EnqueueResult {
  /** uuids already stored, when the pipeline knows at acknowledgement time (embedded, sync). */
  duplicateUuids?: string[];
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

import type { StoredEvent } from "../core/event.js";
import type { Lifecycle } from "./lifecycle.js";

/**
 * The analytics store's writer in the cdc pipeline: the sink role hands it the batches it consumed
 * from the event log, and commits its log position only after `write` resolved.
 * Contract: `write` is idempotent by (projectId, uuid) as seen by every query: writing an event
 * again (a replay after a crash) never changes any answer, not even before background merges.
 * It resolves once the store acknowledged the rows; it rejects when they may not be stored.
 */
export interface EventSink extends Lifecycle {
  write(events: readonly StoredEvent[]): Promise<void>;
  /** Removes every event of the project. */
  deleteProject(projectId: string): Promise<void>;
  /** Distinct events the analytics store holds for the project (the ledger shows it, so lag is visible). */
  countEvents(projectId: string): Promise<number>;
}

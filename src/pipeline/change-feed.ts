import type { StoredEvent } from "../core/event.js";
import type { Lifecycle } from "./lifecycle.js";

/**
 * A place in the store of record's commit history (a Postgres LSN). Opaque to callers: compare and
 * order only through the feed that handed it out.
 */
export type FeedPosition = string;

/** Committed events handed out together, with the position that covers them. */
export interface ChangeBatch {
  /** Every event of whole transactions, in commit order; empty when the feed only moved on. */
  readonly events: readonly StoredEvent[];
  /** Acknowledging it confirms every event of this batch and of the batches before it. */
  readonly position: FeedPosition;
  /** Rows the feed could not turn into events (dropped: counted and logged by the feed). */
  readonly dropped: number;
}

/**
 * The committed events of the store of record, in commit order (change data capture).
 *
 * Contract:
 * - `read` returns whole transactions only, each once per connection, in commit order; it waits up
 *   to `waitMs` and resolves with `undefined` when nothing arrived. It never loses a committed
 *   event: events are kept in the store's log until acknowledged.
 * - `acknowledge(position)` tells the store everything up to `position` is safely elsewhere (the
 *   event log acknowledged it); only then may the store discard it. Call it only after that, in
 *   the order positions were handed out; an older position is ignored.
 * - After a restart or a lost connection, reading resumes from the last acknowledged position:
 *   events after it are handed out again (at-least-once). Consumers deduplicate by
 *   (projectId, uuid).
 * - One reader per feed at a time: a second one waits until the first is gone.
 * - `lagBytes` is how much of the store's log is kept for this feed (unacknowledged), for metrics
 *   and the warning past a threshold; undefined when it cannot be measured now.
 */
export interface ChangeFeed extends Lifecycle {
  read(maxEvents: number, waitMs: number): Promise<ChangeBatch | undefined>;
  acknowledge(position: FeedPosition): Promise<void>;
  lagBytes(): Promise<number | undefined>;
}

import type { StoredEvent } from "../core/event.js";
import type { Lifecycle } from "./lifecycle.js";

/**
 * The writing side of the durable event log between the store of record and the analytics store
 * (Kafka in the cdc pipeline).
 *
 * Contract: `publish` resolves only once the log acknowledged every event with all in-sync
 * replicas (acks=all) through an idempotent producer, so a resolved publish survives the loss of
 * the broker process. Events of one project keep their order (one partition per project key).
 * It rejects when any event may not be in the log; the caller publishes the same events again,
 * and the log may then hold some twice: readers deduplicate by (projectId, uuid).
 */
export interface EventLogProducer extends Lifecycle {
  publish(events: readonly StoredEvent[]): Promise<void>;
}

/** A position in the log (offsets per partition), meaningful only to the consumer that read it. */
export interface LogBatch {
  readonly events: readonly StoredEvent[];
  /** Messages that could not be decoded into events: dropped, counted and logged by the consumer. */
  readonly dropped: number;
  /** For metrics: when the oldest message of the batch was appended to the log (epoch ms). */
  readonly oldestAppendMs?: number;
  /** Opaque to the caller: hand it back to `commit`. */
  readonly cursor: unknown;
}

/**
 * The reading side of the event log, as one member of a consumer group: any number of members
 * share the partitions, and a member that joins or leaves moves partitions between them.
 *
 * Contract:
 * - `read` returns the next messages of this member's partitions, up to `maxEvents`, waiting up to
 *   `waitMs` for the first; an empty batch when nothing arrived. With `lingerMs`, once a message
 *   is there it waits for `maxEvents` to gather until the oldest message it holds has waited
 *   `lingerMs` since it arrived (or the member is closing), so a steady flow is read in fewer,
 *   larger batches; a message never waits longer than that in the member.
 * - `commit(batch)` records that the batch's events are written downstream (the sink resolved);
 *   call it only then. After a crash or a rebalance, reading resumes from the last commit, so
 *   events after it are read again (at-least-once): the writer must be idempotent.
 * - A failed commit is not an error for the caller: a later commit covers it, and at worst the
 *   events are read again.
 * - `lag` is the messages in the log not yet committed by the group, for metrics.
 */
export interface EventLogConsumer extends Lifecycle {
  read(maxEvents: number, waitMs: number, lingerMs?: number): Promise<LogBatch>;
  commit(batch: LogBatch): Promise<void>;
  lag(): Promise<number | undefined>;
}

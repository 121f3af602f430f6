import type { StoredEvent } from "../core/event.js";
import type { Lifecycle } from "./lifecycle.js";

/** One message of the ingest queue: the events of one accepted request, or of several. */
export interface QueueMessage {
  /** The queue's id of the message (a Redis Stream entry id). */
  readonly id: string;
  /** The events, or undefined when the message cannot be decoded (see `problem`). */
  readonly events: readonly StoredEvent[] | undefined;
  /** Why the message cannot be decoded; it then goes to the dead-letter queue. */
  readonly problem?: string;
  /** How many times the queue has handed this message to a worker, when it knows. */
  readonly deliveries?: number;
  /**
   * When the message holds several requests (accepted in the same instant): how many of its
   * events each one has, in order. A store that refuses the message is then tried request by
   * request, so only the requests it refuses go to the dead-letter queue.
   */
  readonly requests?: readonly number[];
}

/**
 * The worker's side of the async ingest queue (at-least-once): a message read stays pending until
 * acked; when its worker dies, another worker takes it over once it has been idle long enough.
 *
 * - `read` returns first messages abandoned by dead workers (claimed), then new ones, waiting up to
 *   `blockMs` when there are none. It rejects when the queue is unreachable.
 * - `ack` removes messages whose events are stored; acking twice is harmless.
 * - `deadLetter` moves a message that cannot be stored to the dead-letter queue with its reason,
 *   then acks it.
 * - `deadLetterRequest` moves one request of a message (`requests`) to the dead-letter queue,
 *   without acking the message: the worker acks it once each of its requests is stored or moved.
 * - `touch` tells the queue this worker still holds these messages (a long retry while the store
 *   is down), so they are not taken over while it is alive.
 */
export interface QueueConsumer extends Lifecycle {
  read(maxMessages: number, blockMs: number): Promise<QueueMessage[]>;
  ack(messages: readonly QueueMessage[]): Promise<void>;
  deadLetter(message: QueueMessage, reason: string): Promise<void>;
  deadLetterRequest(
    message: QueueMessage,
    request: { index: number; events: readonly StoredEvent[] },
    reason: string,
  ): Promise<void>;
  touch(messages: readonly QueueMessage[]): Promise<void>;
}

/**
 * Thrown by `EventStore.insert` when the store refuses the events themselves (a value it cannot
 * hold): retrying the same events cannot succeed, so the worker dead-letters them. Any other
 * error is taken as transient and retried.
 */
export class UnstorableEventsError extends Error {
  constructor(message: string, cause?: unknown) {
    super(message, { cause });
    this.name = "UnstorableEventsError";
  }
}

import type { Config } from "../config/config.js";
import type { LedgerDelta, StoredEvent } from "../core/event.js";
import type { Log } from "../core/log.js";
import { deadLetter, ok, retry, type StepResult } from "../core/result.js";
import type { CommitReport, EventStore } from "../pipeline/event-store.js";
import type { PartHooks, PipelineParts } from "../pipeline/parts.js";
import { type QueueConsumer, type QueueMessage, UnstorableEventsError } from "../pipeline/queue-consumer.js";
import { RoleLoop } from "./role-loop.js";

export interface WorkerOptions {
  /** Most events per insert; a message is never split across inserts. */
  batchEvents: number;
  /** Most messages per read. */
  readMessages: number;
  /** How long a read waits for new messages. */
  blockMs: number;
  /**
   * After a read that did not fill a batch, wait this long and read once more, so one insert
   * carries what arrives meanwhile: every insert and ack costs the store and the queue a commit.
   * Delays visibility by at most this much; 0 reads once. (The 202 does not wait on the worker.)
   */
  lingerMs?: number;
  /** A message handed out more often than this without being stored is dead-lettered. */
  maxDeliveries: number;
  /** Backoff between retries while the store or the queue is unreachable. */
  retryMinMs: number;
  retryMaxMs: number;
  /** While retrying, tell the queue this often that the messages are still held. */
  touchEveryMs: number;
  log?: Log;
  /** After every insert attempt, for metrics and tests. */
  onBatch?: (report: CommitReport) => void;
}

export const DEFAULT_WORKER_OPTIONS = {
  readMessages: 200,
  blockMs: 1000,
  lingerMs: 10,
  maxDeliveries: 10,
  retryMinMs: 100,
  retryMaxMs: 5000,
} as const;

/** The worker role's loop, built from the parts the composition root gave this process. */
export function buildWorker(config: Config, parts: PipelineParts, hooks: PartHooks = {}): QueueWorker {
  if (!parts.consumer) throw new Error(`the ${config.pipeline} pipeline gave this process no queue consumer`);
  return new QueueWorker(parts.consumer, parts.events, {
    ...DEFAULT_WORKER_OPTIONS,
    batchEvents: config.flushMaxEvents,
    readMessages: config.workerBatch,
    // Touch well within the claim time, so a live worker's messages are never taken over.
    touchEveryMs: Math.max(100, Math.floor(config.workerClaimIdleMs / 3)),
    log: hooks.log,
    onBatch: hooks.onFlush,
  });
}

/**
 * The async pipeline's worker: reads messages from the ingest queue in batches, stores their
 * events, then acks them. At-least-once: a worker that dies before the ack leaves the messages
 * pending and another takes them over; the store's (project, uuid) key keeps retries from being
 * stored twice, and its ledger counts them as duplicates.
 *
 * - Store unreachable: the batch stays pending and is retried with backoff, never dropped.
 * - Store refuses the events (UnstorableEventsError): the batch is split to find the message at
 *   fault, which goes to the dead-letter queue with the reason, counted in the ledger. A message
 *   holding several requests is then stored request by request, and only the requests refused
 *   are dead-lettered: requests that happened to share a message never fail together.
 * - Undecodable message, or one delivered `maxDeliveries` times: dead-lettered.
 *
 * Closing finishes the batch in hand, unless the store is down: then it stays pending.
 */
export class QueueWorker extends RoleLoop {
  readonly name = "worker";

  constructor(
    private readonly consumer: QueueConsumer,
    private readonly store: EventStore,
    private readonly options: WorkerOptions,
  ) {
    super();
  }

  protected async run(): Promise<void> {
    let backoff = this.options.retryMinMs;
    while (!this.stopping) {
      let messages: QueueMessage[];
      try {
        messages = await this.consumer.read(this.options.readMessages, this.options.blockMs);
        backoff = this.options.retryMinMs;
        messages = await this.linger(messages);
      } catch (error) {
        this.options.log?.warn({ err: error }, "worker cannot read the queue; retrying");
        await this.sleep(backoff);
        backoff = Math.min(backoff * 2, this.options.retryMaxMs);
        continue;
      }
      try {
        if (messages.length > 0) await this.process(messages);
      } catch (error) {
        // Unexpected: the messages stay pending and are taken over; the loop goes on.
        this.options.log?.error({ err: error }, "worker failed on a batch");
        await this.sleep(this.options.retryMaxMs);
      }
    }
  }

  /** The messages read, with those that arrive within `lingerMs` when they did not fill a read. */
  private async linger(messages: QueueMessage[]): Promise<QueueMessage[]> {
    const { lingerMs = 0, readMessages } = this.options;
    if (lingerMs <= 0 || messages.length === 0 || messages.length >= readMessages || this.stopping)
      return messages;
    await this.sleep(lingerMs);
    // What this read misses stays in the queue for the next one; a failure here loses nothing.
    const more = await this.consumer.read(readMessages - messages.length, 1).catch(() => []);
    return more.length > 0 ? [...messages, ...more] : messages;
  }

  private async process(messages: QueueMessage[]): Promise<void> {
    const storable: QueueMessage[] = [];
    for (const message of messages) {
      if (!message.events) await this.deadLetter(message, `undecodable: ${message.problem ?? "unknown"}`);
      else if ((message.deliveries ?? 1) > this.options.maxDeliveries) {
        await this.deadLetter(message, `delivered ${message.deliveries} times without being stored`);
      } else storable.push(message);
    }
    let chunk: QueueMessage[] = [];
    let events = 0;
    for (const message of storable) {
      const size = message.events?.length ?? 0;
      if (chunk.length > 0 && events + size > this.options.batchEvents) {
        await this.storeUntilDone(chunk);
        chunk = [];
        events = 0;
      }
      chunk.push(message);
      events += size;
    }
    if (chunk.length > 0) await this.storeUntilDone(chunk);
  }

  /** Stores one chunk, retrying while the store is unreachable, unless the worker stops. */
  private async storeUntilDone(chunk: QueueMessage[]): Promise<void> {
    const result = await this.insertUntilDecided(chunk, chunk);
    if (result === undefined) return; // stopping: still pending, another worker or a restart takes it
    if (result.kind === "ok") await this.ackUntilDone(chunk);
    else await this.isolate(chunk, result.reason);
  }

  /**
   * Inserts `chunk` until the store takes it (ok) or refuses it (dead_letter), retrying with
   * backoff while the store is unreachable and touching `held` meanwhile; undefined when the
   * worker stops first.
   */
  private async insertUntilDecided(
    chunk: readonly QueueMessage[],
    held: readonly QueueMessage[],
  ): Promise<StepResult<number> | undefined> {
    let backoff = this.options.retryMinMs;
    let lastTouch = Date.now();
    for (;;) {
      const result = await this.insert(chunk);
      if (result.kind !== "retry") return result;
      if (this.stopping) return undefined;
      this.options.log?.warn(
        { err: result.error, events: countEvents(chunk) },
        "worker cannot store; retrying",
      );
      // Never sleep past a touch: other workers would take the messages over as abandoned.
      await this.sleep(Math.min(backoff, this.options.touchEveryMs));
      backoff = Math.min(backoff * 2, this.options.retryMaxMs);
      if (Date.now() - lastTouch >= this.options.touchEveryMs) {
        lastTouch = Date.now();
        await this.consumer.touch(held).catch(() => undefined);
      }
    }
  }

  private async insert(chunk: readonly QueueMessage[]): Promise<StepResult<number>> {
    const events: StoredEvent[] = chunk.flatMap((m) => m.events ?? []);
    const started = performance.now();
    try {
      const outcome = await this.store.insert(events);
      this.options.onBatch?.({ events: events.length, durationMs: performance.now() - started, outcome });
      return ok(outcome.inserted);
    } catch (error) {
      this.options.onBatch?.({ events: events.length, durationMs: performance.now() - started, error });
      if (error instanceof UnstorableEventsError) return deadLetter(error.message);
      return retry("store unavailable", error);
    }
  }

  /** The store refused a chunk: store what it takes, dead-letter the messages at fault. */
  private async isolate(chunk: QueueMessage[], reason: string): Promise<void> {
    if (chunk.length === 1) {
      const message = chunk[0]!;
      if ((message.requests?.length ?? 0) > 1) await this.isolateRequests(message);
      else await this.deadLetter(message, reason);
      return;
    }
    const half = Math.ceil(chunk.length / 2);
    await this.storeUntilDone(chunk.slice(0, half));
    await this.storeUntilDone(chunk.slice(half));
  }

  /**
   * A refused message of several requests: each is stored alone, those refused are dead-lettered,
   * then the message is acked. A worker that dies midway leaves it pending: the next one skips what
   * was stored as duplicates, and may dead-letter a request twice (counted twice, never lost).
   */
  private async isolateRequests(message: QueueMessage): Promise<void> {
    const events = message.events ?? [];
    let offset = 0;
    for (const [index, size] of (message.requests ?? []).entries()) {
      const request = { index, events: events.slice(offset, offset + size) };
      offset += size;
      const alone: QueueMessage = { id: message.id, events: request.events };
      const result = await this.insertUntilDecided([alone], [message]);
      if (result === undefined) return;
      if (result.kind === "ok") continue;
      const { reason } = result;
      this.options.log?.error(
        { id: message.id, request: index, reason, events: size },
        "request moved to the dead-letter queue",
      );
      const moved = await this.countDeadLetters(request.events);
      if (moved === "stopped") return;
      const dead = await this.retrying("dead-letter", () =>
        this.consumer.deadLetterRequest(message, request, reason),
      );
      if (dead === "stopped") return;
    }
    await this.ackUntilDone([message]);
  }

  /**
   * Unacked messages would be redelivered later and skipped by the store as duplicates; retrying
   * the ack here avoids that extra work while the queue comes back.
   */
  private async ackUntilDone(chunk: readonly QueueMessage[]): Promise<void> {
    await this.retrying("ack", () => this.consumer.ack(chunk));
  }

  private async deadLetter(message: QueueMessage, reason: string): Promise<void> {
    this.options.log?.error(
      { id: message.id, reason, events: message.events?.length ?? 0 },
      "message moved to the dead-letter queue",
    );
    if ((await this.countDeadLetters(message.events ?? [])) === "stopped") return;
    await this.retrying("dead-letter", () => this.consumer.deadLetter(message, reason));
  }

  /**
   * Counts events as dead letters in their projects' ledgers, before they are moved: if the worker
   * dies before the move, the message is redelivered and counted again (over-counting a dead
   * letter is safer than losing track of one). A ledger the store refuses (a message naming no
   * valid project) is logged and the move goes on.
   */
  private async countDeadLetters(events: readonly StoredEvent[]): Promise<"done" | "stopped" | "refused"> {
    const perProject = new Map<string, LedgerDelta>();
    for (const e of events) {
      const delta = perProject.get(e.projectId) ?? { rejected: { dead_letter: 0 } };
      delta.rejected!.dead_letter! += 1;
      perProject.set(e.projectId, delta);
    }
    if (perProject.size === 0) return "done";
    return this.retrying("record a dead letter", () => this.store.recordLedger(perProject));
  }

  /**
   * Runs `work` until it succeeds, the worker stops, or the store refuses it for good
   * (UnstorableEventsError, logged), backing off between tries.
   */
  private async retrying(what: string, work: () => Promise<void>): Promise<"done" | "stopped" | "refused"> {
    let backoff = this.options.retryMinMs;
    for (;;) {
      try {
        await work();
        return "done";
      } catch (error) {
        if (error instanceof UnstorableEventsError) {
          this.options.log?.error({ err: error }, `worker cannot ${what}: refused`);
          return "refused";
        }
        if (this.stopping) return "stopped";
        this.options.log?.warn({ err: error }, `worker cannot ${what}; retrying`);
        await this.sleep(backoff);
        backoff = Math.min(backoff * 2, this.options.retryMaxMs);
      }
    }
  }
}

function countEvents(chunk: readonly QueueMessage[]): number {
  return chunk.reduce((n, m) => n + (m.events?.length ?? 0), 0);
}

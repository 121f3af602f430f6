import { AppError } from "../../core/errors.js";
import type { StoredEvent } from "../../core/event.js";
import type { EnqueueResult, EventQueue } from "../../pipeline/event-queue.js";
import { RedisCallGroup } from "./redis.call-group.js";
import { redisReady, redisUnavailable } from "./redis.client.js";
import { type RedisConnection, streamKeys } from "./redis.connection.js";
import { RedisScript } from "./redis.script.js";
import { CODEC_VERSION, encodeEvents, encodeRequests } from "./redis.stream-codec.js";

/**
 * Appends one entry to the stream (the events of one request, or of several with their sizes in
 * `r`), unless the stream already holds `maxlen` entries: then nothing is written and the API
 * answers 503 (back-pressure; the stream is never trimmed, a trim would drop accepted events).
 * The consumer group is created with the stream, from its first entry, so no entry added before
 * the workers start is skipped. The backlog counter holds the number of events not yet stored,
 * for the queue-depth metric.
 */
const ENQUEUE = new RedisScript(
  `
  if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[2], '0', 'MKSTREAM')
  end
  if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then
    return false
  end
  local id
  if ARGV[6] == '' then
    id = redis.call('XADD', KEYS[1], '*', 'v', ARGV[3], 'n', ARGV[5], 'e', ARGV[4])
  else
    id = redis.call('XADD', KEYS[1], '*', 'v', ARGV[3], 'n', ARGV[5], 'e', ARGV[4], 'r', ARGV[6])
  end
  redis.call('INCRBY', KEYS[2], ARGV[5])
  return id
  `,
  2,
);

export interface RedisQueueOptions {
  prefix: string;
  /** Entries the stream may hold before ingest answers 503. */
  maxLength: number;
  /**
   * Requests enqueued in the same instant share an entry of at most this many events; a larger
   * request has one of its own (default SHARED_ENTRY_EVENTS).
   */
  maxEntryEvents?: number;
}

/**
 * Workers read entries by the `TIDEMARK_WORKER_BATCH`, whatever their size, so a shared entry is
 * kept small. Shared entries of up to 1,000 events (a batch's limit) held about 250 events each
 * under 50 clients sending 20-event batches; a worker that had fallen behind then read 2,000 of
 * them at once, and its peak RSS was 736 MB, against 292 MB with an entry per request and 321 MB
 * with this bound. 50 clients sending single events put about 14 requests in an entry.
 */
export const SHARED_ENTRY_EVENTS = 50;

/**
 * The async pipeline's EventQueue: an XADD on a Redis Stream. `enqueue` resolves once Redis has
 * answered, and Redis answers a write only after it is in its append-only file (appendfsync
 * always), so a 202 survives a crash of Redis. Requests enqueued in the same event-loop turn share
 * one script call and one entry (RedisCallGroup), which keeps each one's size: Redis, and the
 * workers who read and ack entries, pay per entry, and a worker still dead-letters only the
 * requests the store refuses, never the others that shared their entry.
 *
 * Duplicates are not known here: the worker's insert counts them in the ledger.
 */
export class RedisStreamQueue implements EventQueue {
  readonly name = "redis-stream";
  private readonly keys: ReturnType<typeof streamKeys>;
  private closed = false;
  private readonly appends: RedisCallGroup<readonly StoredEvent[], boolean>;

  constructor(
    private readonly redis: RedisConnection,
    private readonly options: RedisQueueOptions,
  ) {
    this.keys = streamKeys(options.prefix);
    this.appends = new RedisCallGroup(
      (requests) => this.append(requests),
      options.maxEntryEvents ?? SHARED_ENTRY_EVENTS,
      (events) => events.length,
    );
  }

  start(): Promise<void> {
    return this.redis.open();
  }

  ready(): Promise<string | undefined> {
    return redisReady(this.redis.client, "ingest stream");
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.redis.close();
  }

  async enqueue(events: readonly StoredEvent[]): Promise<EnqueueResult> {
    if (this.closed)
      throw new AppError("unavailable", { message: "Tidemark is shutting down", retryAfter: 1 });
    if (events.length === 0) return {};
    let appended: boolean;
    try {
      appended = await this.appends.add(events);
    } catch (error) {
      throw redisUnavailable(error);
    }
    if (!appended) throw new AppError("overloaded", { retryAfter: 1 });
    return {};
  }

  /** One entry for the events of `requests`: whether it was appended (false: the stream is full). */
  private async append(requests: readonly (readonly StoredEvent[])[]): Promise<boolean[]> {
    const events = requests.length === 1 ? requests[0]! : requests.flat();
    const sizes = requests.length === 1 ? "" : encodeRequests(requests.map((r) => r.length));
    const id = await ENQUEUE.run(
      this.redis.client,
      [this.keys.stream, this.keys.backlog],
      [this.options.maxLength, this.keys.group, CODEC_VERSION, encodeEvents(events), events.length, sizes],
    );
    return requests.map(() => id !== null);
  }

  /** Events accepted and not yet stored by a worker (waiting or being stored). */
  async depth(): Promise<number> {
    try {
      return Math.max(0, Number((await this.redis.client.get(this.keys.backlog)) ?? 0));
    } catch {
      return Number.NaN; // unknown while Redis is unreachable; Prometheus shows NaN
    }
  }
}

import { AppError } from "../../core/errors.js";
import type { StoredEvent } from "../../core/event.js";
import type { EnqueueResult, EventQueue } from "../../pipeline/event-queue.js";
import { RedisCallGroup } from "./redis.call-group.js";
import { redisReady, redisUnavailable } from "./redis.client.js";
import { type RedisConnection, streamKeys } from "./redis.connection.js";
import { RedisScript } from "./redis.script.js";
import { CODEC_VERSION, encodeEvents } from "./redis.stream-codec.js";

/**
 * Appends requests to the stream, one entry each (ARGV: the stream's bound, the group, the codec
 * version, then per request its encoded events and their number), unless the stream already holds
 * `maxlen` entries: then that request is not written and the API answers 503 (back-pressure; the
 * stream is never trimmed, a trim would drop accepted events). The consumer group is created with
 * the stream, from its first entry, so no entry added before the workers start is skipped. The
 * backlog counter holds the number of events not yet stored, for the queue-depth metric. Returns
 * per request its entry's id, or false.
 */
const ENQUEUE = new RedisScript(
  `
  if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[2], '0', 'MKSTREAM')
  end
  local limit = tonumber(ARGV[1])
  local length = redis.call('XLEN', KEYS[1])
  local ids = {}
  for i = 4, #ARGV, 2 do
    if length >= limit then
      ids[#ids + 1] = false
    else
      ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', 'v', ARGV[3], 'n', ARGV[i + 1], 'e', ARGV[i])
      redis.call('INCRBY', KEYS[2], ARGV[i + 1])
      length = length + 1
    end
  end
  return ids
  `,
  2,
);

/**
 * Events appended in one script call at most, a bound on its size rather than on throughput (a
 * request with more has a call of its own).
 */
const MAX_CALL_EVENTS = 2000;

export interface RedisQueueOptions {
  prefix: string;
  /** Entries (requests) the stream may hold before ingest answers 503. */
  maxLength: number;
}

/**
 * The async pipeline's EventQueue: one XADD per request on a Redis Stream. `enqueue` resolves
 * once Redis has answered, and Redis answers a write only after it is in its append-only file
 * (appendfsync always), so a 202 survives a crash of Redis. Requests enqueued in the same
 * event-loop turn share one script call (RedisCallGroup), and Redis fsyncs once for all the
 * writes of one of its turns, so they share the cost of the fsync as a group commit would. Each
 * request keeps its own entry: the worker stores, retries and dead-letters requests, never a
 * group that happened to arrive together.
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
      MAX_CALL_EVENTS,
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

  /** An entry for each of `requests`: whether it was appended (false: the stream was full). */
  private async append(requests: readonly (readonly StoredEvent[])[]): Promise<boolean[]> {
    const args: (string | number)[] = [this.options.maxLength, this.keys.group, CODEC_VERSION];
    for (const events of requests) args.push(encodeEvents(events), events.length);
    const ids = (await ENQUEUE.run(this.redis.client, [this.keys.stream, this.keys.backlog], args)) as (
      | string
      | null
    )[];
    return requests.map((_, i) => typeof ids[i] === "string");
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

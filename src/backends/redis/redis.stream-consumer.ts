import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import type { Redis } from "ioredis";
import type { StoredEvent } from "../../core/event.js";
import type { Log } from "../../core/log.js";
import type { QueueConsumer, QueueMessage } from "../../pipeline/queue-consumer.js";
import { connectRedis, createRedisClient, redisReady } from "./redis.client.js";
import { streamKeys } from "./redis.connection.js";
import { RedisScript } from "./redis.script.js";
import { decodeEvents, decodeRequests, encodeEvents } from "./redis.stream-codec.js";

/**
 * Acknowledges entries and removes them from the stream (so the stream's length is the backlog
 * and the length bound applies to work not yet done), and takes their events off the backlog
 * counter. An entry acked twice (two workers raced after a claim) is counted once.
 * ARGV: id1, n1, id2, n2, ...
 */
const ACK = new RedisScript(
  `
  local done = 0
  for i = 1, #ARGV, 2 do
    if redis.call('XACK', KEYS[1], KEYS[3], ARGV[i]) == 1 then
      redis.call('XDEL', KEYS[1], ARGV[i])
      done = done + tonumber(ARGV[i + 1])
    end
  end
  if done > 0 then redis.call('DECRBY', KEYS[2], done) end
  return done
  `,
  3,
);

/** Flat [field, value, ...] of a stream entry as a lookup. */
function fieldsOf(flat: string[]): Map<string, string> {
  const fields = new Map<string, string>();
  for (let i = 0; i + 1 < flat.length; i += 2) fields.set(flat[i]!, flat[i + 1]!);
  return fields;
}

interface RedisMessage extends QueueMessage {
  readonly fields: Map<string, string>;
  /** Events the entry says it holds (its `n`), for the backlog counter. */
  readonly count: number;
}

export interface RedisConsumerOptions {
  url: string;
  prefix: string;
  /** A pending entry idle this long belongs to a dead worker and is taken over. */
  claimIdleMs: number;
  log?: Log;
}

/**
 * A worker's side of the ingest stream, as one consumer of the `workers` group. Entries read stay
 * in the group's pending list until acked; entries a dead worker left pending for `claimIdleMs`
 * are taken over with XAUTOCLAIM. Messages that cannot be stored go to the dead-letter stream
 * `<prefix>{events}:dead` with their reason and original fields.
 */
export class RedisStreamConsumer implements QueueConsumer {
  readonly name = "redis-stream-consumer";
  readonly consumer = `${hostname()}-${process.pid}-${randomBytes(3).toString("hex")}`;
  private readonly keys: ReturnType<typeof streamKeys>;
  private readonly client: Redis;
  private claimCursor = "0-0";
  private nextClaimAt = 0;
  private readonly claimEveryMs: number;

  constructor(private readonly options: RedisConsumerOptions) {
    this.keys = streamKeys(options.prefix);
    // Its own connection: a blocking XREADGROUP holds the connection while it waits.
    this.client = createRedisClient({
      url: options.url,
      name: `tidemark-worker-${this.consumer}`,
      log: options.log,
      commandTimeoutMs: 30_000,
    });
    this.claimEveryMs = Math.min(5000, Math.max(200, Math.floor(options.claimIdleMs / 2)));
  }

  async start(): Promise<void> {
    if (await connectRedis(this.client, 3000)) await this.ensureGroup().catch(() => undefined);
    else
      this.options.log?.warn(
        { consumer: this.consumer },
        "redis not reachable at start; the worker will keep trying",
      );
  }

  ready(): Promise<string | undefined> {
    return redisReady(this.client, "worker stream");
  }

  async close(): Promise<void> {
    await this.client.quit().catch(() => this.client.disconnect());
  }

  /** From the first entry: a group created after the API accepted events must still see them. */
  private async ensureGroup(): Promise<void> {
    try {
      await this.client.xgroup("CREATE", this.keys.stream, this.keys.group, "0", "MKSTREAM");
    } catch (error) {
      if (!(error instanceof Error) || !error.message.startsWith("BUSYGROUP")) throw error;
    }
  }

  async read(maxMessages: number, blockMs: number): Promise<QueueMessage[]> {
    try {
      return await this.readOnce(maxMessages, blockMs);
    } catch (error) {
      // The stream or group vanished (a Redis without persistence restarted): recreate and go on.
      if (error instanceof Error && error.message.startsWith("NOGROUP")) {
        await this.ensureGroup();
        return [];
      }
      throw error;
    }
  }

  private async readOnce(maxMessages: number, blockMs: number): Promise<QueueMessage[]> {
    if (Date.now() >= this.nextClaimAt) {
      const claimed = await this.claim(maxMessages);
      if (claimed.length > 0) return claimed;
    }
    const reply = (await this.client.xreadgroup(
      "GROUP",
      this.keys.group,
      this.consumer,
      "COUNT",
      maxMessages,
      "BLOCK",
      blockMs,
      "STREAMS",
      this.keys.stream,
      ">",
    )) as [string, [string, string[]][]][] | null;
    const entries = reply?.[0]?.[1] ?? [];
    return entries.map(([id, flat]) => this.message(id, flat, 1));
  }

  /** Takes over entries left pending by dead workers, with how often each was delivered. */
  private async claim(maxMessages: number): Promise<QueueMessage[]> {
    const [next, entries] = (await this.client.xautoclaim(
      this.keys.stream,
      this.keys.group,
      this.consumer,
      this.options.claimIdleMs,
      this.claimCursor,
      "COUNT",
      maxMessages,
    )) as [string, [string, string[] | null][], string[]?];
    this.claimCursor = next;
    // A full sweep done: look again later. Otherwise continue from the cursor on the next read.
    if (next === "0-0") this.nextClaimAt = Date.now() + this.claimEveryMs;
    const live = entries.filter((entry): entry is [string, string[]] => Array.isArray(entry[1]));
    if (live.length === 0) return [];
    this.options.log?.info(
      { consumer: this.consumer, count: live.length },
      "took over messages of a stopped worker",
    );
    const deliveries = new Map<string, number>();
    const pending = (await this.client.xpending(
      this.keys.stream,
      this.keys.group,
      live[0]![0],
      live.at(-1)![0],
      live.length + 1000,
      this.consumer,
    )) as [string, string, number, number][];
    for (const [id, , , count] of pending) deliveries.set(id, Number(count));
    return live.map(([id, flat]) => this.message(id, flat, deliveries.get(id) ?? 1));
  }

  private message(id: string, flat: string[], deliveries: number): RedisMessage {
    const fields = fieldsOf(flat);
    const decoded = decodeEvents(fields.get("v"), fields.get("e"));
    const count = Number(fields.get("n") ?? 0) || 0;
    if (!("events" in decoded))
      return { id, events: undefined, problem: decoded.problem, deliveries, fields, count };
    const requestsField = fields.get("r");
    if (requestsField === undefined) return { id, events: decoded.events, deliveries, fields, count };
    const requests = decodeRequests(requestsField, decoded.events.length);
    return "sizes" in requests
      ? { id, events: decoded.events, requests: requests.sizes, deliveries, fields, count }
      : { id, events: undefined, problem: requests.problem, deliveries, fields, count };
  }

  async ack(messages: readonly QueueMessage[]): Promise<void> {
    if (messages.length === 0) return;
    const args: (string | number)[] = [];
    for (const m of messages) args.push(m.id, (m as RedisMessage).count ?? m.events?.length ?? 0);
    await ACK.run(this.client, [this.keys.stream, this.keys.backlog, this.keys.group], args);
  }

  async deadLetter(message: QueueMessage, reason: string): Promise<void> {
    const original: string[] = [];
    for (const [field, value] of this.fieldsOf(message)) original.push(`original_${field}`, value);
    await this.client.xadd(this.keys.dead, "*", ...this.deadLetterHead(message, reason), ...original);
    await this.ack([message]);
  }

  /** The request's own events, with the entry's id and the request's place in it. */
  async deadLetterRequest(
    message: QueueMessage,
    request: { index: number; events: readonly StoredEvent[] },
    reason: string,
  ): Promise<void> {
    await this.client.xadd(
      this.keys.dead,
      "*",
      ...this.deadLetterHead(message, reason),
      "request",
      String(request.index),
      "original_v",
      this.fieldsOf(message).get("v") ?? "",
      "original_n",
      String(request.events.length),
      "original_e",
      encodeEvents(request.events),
    );
  }

  /** The fields every dead letter starts with: which entry, why, who moved it and when. */
  private deadLetterHead(message: QueueMessage, reason: string): string[] {
    return ["id", message.id, "reason", reason, "consumer", this.consumer, "at", String(Date.now())];
  }

  private fieldsOf(message: QueueMessage): Map<string, string> {
    return (message as RedisMessage).fields ?? new Map<string, string>();
  }

  async touch(messages: readonly QueueMessage[]): Promise<void> {
    if (messages.length === 0) return;
    await this.client.xclaim(
      this.keys.stream,
      this.keys.group,
      this.consumer,
      0,
      ...messages.map((m) => m.id),
      "JUSTID",
    );
  }
}

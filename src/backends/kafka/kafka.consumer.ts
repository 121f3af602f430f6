import { Consumer, type Message, type MessagesStream } from "@platformatic/kafka";
import type { StoredEvent } from "../../core/event.js";
import type { Log } from "../../core/log.js";
import type { EventLogConsumer, LogBatch } from "../../pipeline/event-log.js";
import { decodeEvent } from "./kafka.codec.js";
import { ensureTopic } from "./kafka.topic.js";

export interface KafkaConsumerOptions {
  brokers: string[];
  topic: string;
  partitions: number;
  replicas: number;
  groupId: string;
  /** Messages held in memory before the consumer stops fetching. */
  maxBuffered?: number;
  sessionTimeoutMs?: number;
  log?: Log;
}

type KafkaMessage = Message<Buffer, Buffer, Buffer, Buffer>;

/** The last message of each partition in a batch: committing it commits the batch. */
interface Cursor {
  generation: number;
  last: Map<number, KafkaMessage>;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * One member of the sink's consumer group on the events topic. Messages are fetched into a
 * bounded buffer (fetching pauses when it is full) and handed out by `read`; `commit` commits, per
 * partition, the offset after the batch's last message. No autocommit: an offset moves only once
 * the sink wrote the batch.
 *
 * Rebalances and lost connections: the client rejoins and resumes each partition from its committed
 * offset, so a partition that moved to another member is read again from there; committing a batch
 * of a partition this member no longer owns fails and is only logged (the new owner writes those
 * events again; the sink is idempotent). When the stream fails, the consumer is rebuilt and the
 * buffer discarded, for the same reason.
 */
export class KafkaEventLogConsumer implements EventLogConsumer {
  readonly name = "kafka-consumer";
  private consumer?: Consumer<Buffer, Buffer, Buffer, Buffer>;
  private stream?: MessagesStream<Buffer, Buffer, Buffer, Buffer>;
  private buffer: KafkaMessage[] = [];
  private generation = 0;
  private paused = false;
  private stopping = false;
  /** When the oldest message of the buffer arrived (epoch ms), for `read`'s linger. */
  private oldestArrivedAt = 0;
  /** A `read` waiting until the buffer holds `atLeast` messages (or its timer fires). */
  private waiter?: { atLeast: number; wake: () => void };
  private rebuilding?: Promise<void>;

  constructor(private readonly options: KafkaConsumerOptions) {}

  async start(): Promise<void> {
    await ensureTopic(this.options);
    await this.connect();
  }

  async ready(): Promise<string | undefined> {
    if (this.stopping) return undefined;
    return this.stream && this.consumer?.isActive() ? undefined : "kafka: consumer not connected";
  }

  async close(): Promise<void> {
    this.stopping = true;
    this.waiter?.wake();
    await this.rebuilding;
    await this.disconnect();
  }

  async read(maxEvents: number, waitMs: number, lingerMs = 0): Promise<LogBatch> {
    if (this.buffer.length === 0) await this.bufferHolds(1, waitMs);
    // The buffer never holds more than maxBuffered: a larger batch is not waited for.
    const gather = Math.min(maxEvents, this.maxBuffered());
    if (lingerMs > 0 && this.buffer.length > 0 && this.buffer.length < gather) {
      await this.bufferHolds(gather, this.oldestArrivedAt + lingerMs - Date.now());
    }
    const messages = this.buffer.splice(0, maxEvents);
    if (this.paused && this.buffer.length < this.maxBuffered() / 2) {
      this.paused = false;
      this.stream?.resume();
    }
    const events: StoredEvent[] = [];
    const cursor: Cursor = { generation: this.generation, last: new Map() };
    let dropped = 0;
    let oldestAppendMs: number | undefined;
    for (const message of messages) {
      cursor.last.set(message.partition, message);
      const appended = Number(message.timestamp);
      if (oldestAppendMs === undefined || appended < oldestAppendMs) oldestAppendMs = appended;
      const event = decodeEvent(message.value);
      if (typeof event === "string") {
        dropped++;
        this.options.log?.error(
          { reason: event, partition: message.partition, offset: String(message.offset) },
          "sink dropped a message that is not an event",
        );
      } else events.push(event);
    }
    return { events, dropped, oldestAppendMs, cursor };
  }

  async commit(batch: LogBatch): Promise<void> {
    const cursor = batch.cursor as Cursor;
    if (cursor.generation !== this.generation) return; // read from a consumer since rebuilt
    await Promise.all(
      [...cursor.last.values()].map(async (message) => {
        try {
          await message.commit();
        } catch (error) {
          this.options.log?.warn(
            { err: error, partition: message.partition, offset: String(message.offset) },
            "kafka offset not committed (rebalance or broker away); those events may be written again",
          );
        }
      }),
    );
  }

  async lag(): Promise<number | undefined> {
    try {
      const lag = await this.consumer?.getLag({ topics: [this.options.topic] });
      if (!lag) return undefined;
      let total = 0n;
      for (const partitions of lag.values()) for (const n of partitions) if (n > 0n) total += n;
      return Number(total);
    } catch {
      return undefined;
    }
  }

  /** Resolves once the buffer holds `atLeast` messages, after `ms`, or when closing. */
  private bufferHolds(atLeast: number, ms: number): Promise<void> {
    if (this.stopping || ms <= 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const waiter = {
        atLeast,
        wake: () => {
          clearTimeout(timer);
          if (this.waiter === waiter) this.waiter = undefined;
          resolve();
        },
      };
      const timer = setTimeout(waiter.wake, ms);
      this.waiter = waiter;
    });
  }

  private maxBuffered(): number {
    return this.options.maxBuffered ?? 20_000;
  }

  private async connect(): Promise<void> {
    const consumer = new Consumer<Buffer, Buffer, Buffer, Buffer>({
      clientId: `tidemark-sink-${process.pid}`,
      groupId: this.options.groupId,
      bootstrapBrokers: this.options.brokers,
      sessionTimeout: this.options.sessionTimeoutMs ?? 10_000,
      heartbeatInterval: 1000,
      rebalanceTimeout: 30_000,
      retries: 5,
      retryDelay: 500,
    });
    this.consumer = consumer;
    const stream = await consumer.consume({
      topics: [this.options.topic],
      mode: "committed",
      fallbackMode: "earliest",
      autocommit: false,
      maxWaitTime: 200,
    });
    this.stream = stream;
    stream.on("data", (message: KafkaMessage) => {
      if (this.buffer.length === 0) this.oldestArrivedAt = Date.now();
      this.buffer.push(message);
      if (!this.paused && this.buffer.length >= this.maxBuffered()) {
        this.paused = true;
        stream.pause();
      }
      if (this.waiter && this.buffer.length >= this.waiter.atLeast) this.waiter.wake();
    });
    stream.on("error", (error: Error) => {
      if (this.stopping || this.stream !== stream) return;
      this.options.log?.warn({ err: error }, "kafka consumer stream failed; reconnecting");
      this.rebuilding ??= this.rebuild().finally(() => {
        this.rebuilding = undefined;
      });
    });
  }

  private async disconnect(): Promise<void> {
    const { stream, consumer } = this;
    this.stream = undefined;
    this.consumer = undefined;
    await stream?.close().catch(() => undefined);
    if (consumer) await new Promise<void>((resolve) => consumer.close(true, () => resolve()));
  }

  private async rebuild(): Promise<void> {
    this.generation++;
    this.buffer = [];
    this.paused = false;
    await this.disconnect();
    let backoff = 500;
    while (!this.stopping) {
      try {
        await this.connect();
        return;
      } catch (error) {
        this.options.log?.warn({ err: error, retryInMs: backoff }, "kafka consumer cannot reconnect yet");
        await this.disconnect();
        await sleep(backoff);
        backoff = Math.min(backoff * 2, 5000);
      }
    }
  }
}

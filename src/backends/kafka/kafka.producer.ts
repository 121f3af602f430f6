import { murmur2, ProduceAcks, Producer } from "@platformatic/kafka";
import type { StoredEvent } from "../../core/event.js";
import type { Log } from "../../core/log.js";
import type { EventLogProducer } from "../../pipeline/event-log.js";
import { encodeEvent } from "./kafka.codec.js";
import { ensureTopic } from "./kafka.topic.js";

export interface KafkaProducerOptions {
  brokers: string[];
  topic: string;
  partitions: number;
  replicas: number;
  /** Most bytes of message values in one produce request (the broker refuses batches over 1 MB). */
  maxRequestBytes?: number;
  /** How long one produce request may take before it fails (and is published again). */
  timeoutMs?: number;
  log?: Log;
}

interface OutgoingMessage {
  topic: string;
  key: Buffer;
  value: Buffer;
  partition: number;
}

/**
 * The partition of a project's messages, before the client takes it modulo the topic's partition
 * count: the value the client's default partitioner gives the key (Kafka's murmur2 of the project
 * id's bytes), so a project's partition is the one it always had. The default partitioner hashes
 * every message's key again, in BigInt arithmetic: 2.9 µs a message, a fifteenth of the cdc role's
 * busy thread at 10K events/s (CPU profile); the client's cache of the hash by text (its last
 * 1,000 keys) takes 0.16 µs.
 */
export function partitionOf(projectId: string): number {
  return murmur2(projectId, true) >>> 0;
}

/**
 * Publishes events to one topic, keyed by project id, with acks=all and an idempotent producer.
 *
 * Two limits of @platformatic/kafka 1.35 shape this class (see README.md):
 * - Its idempotent producer numbers a request's records only after the previous request was
 *   answered: two `send` calls in flight reuse the same sequence numbers and the broker discards
 *   the second as a duplicate while both resolve (measured here: 3,000 of 100,000 messages lost
 *   with 4 sends in flight). So sends run strictly one after the other.
 * - After a failed send its producer id and sequence numbers are not reset, so every later send
 *   can fail (OUT_OF_ORDER_SEQUENCE_NUMBER once the broker restarted). So a failed send discards
 *   the producer; the next publish gets a new producer id. A batch published again after a failure
 *   may then be in the log twice: readers deduplicate by (projectId, uuid).
 */
export class KafkaEventLogProducer implements EventLogProducer {
  readonly name = "kafka-producer";
  private producer?: Producer<Buffer, Buffer, Buffer, Buffer>;
  private tail: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: KafkaProducerOptions) {}

  async start(): Promise<void> {
    await ensureTopic(this.options);
  }

  async ready(): Promise<string | undefined> {
    try {
      await this.current().metadata({ topics: [this.options.topic] });
      return undefined;
    } catch (error) {
      return `kafka: ${(error as Error).message}`;
    }
  }

  async close(): Promise<void> {
    await this.tail.catch(() => undefined);
    await this.producer?.close().catch(() => undefined);
    this.producer = undefined;
  }

  publish(events: readonly StoredEvent[]): Promise<void> {
    const run = this.tail.then(
      () => this.sendAll(events),
      () => this.sendAll(events),
    );
    this.tail = run.catch(() => undefined);
    return run;
  }

  private current(): Producer<Buffer, Buffer, Buffer, Buffer> {
    this.producer ??= new Producer({
      clientId: `tidemark-cdc-${process.pid}`,
      bootstrapBrokers: this.options.brokers,
      idempotent: true,
      acks: ProduceAcks.ALL,
      timeout: this.options.timeoutMs ?? 10_000,
      retries: 3,
      retryDelay: 250,
    });
    return this.producer;
  }

  private async sendAll(events: readonly StoredEvent[]): Promise<void> {
    const maxBytes = this.options.maxRequestBytes ?? 512 * 1024;
    let messages: OutgoingMessage[] = [];
    let bytes = 0;
    for (const event of events) {
      const value = encodeEvent(event);
      if (messages.length > 0 && bytes + value.length > maxBytes) {
        await this.send(messages);
        messages = [];
        bytes = 0;
      }
      messages.push({
        topic: this.options.topic,
        key: Buffer.from(event.projectId),
        value,
        partition: partitionOf(event.projectId),
      });
      bytes += value.length;
    }
    if (messages.length > 0) await this.send(messages);
  }

  private async send(messages: OutgoingMessage[]): Promise<void> {
    const producer = this.current();
    try {
      await producer.send({ messages });
    } catch (error) {
      if (this.producer === producer) this.producer = undefined;
      await new Promise<void>((resolve) => producer.close(true, () => resolve()));
      throw error;
    }
  }
}

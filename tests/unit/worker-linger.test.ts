import assert from "node:assert/strict";
import { test } from "node:test";
import type { CommitOutcome, Ledger, StoredEvent } from "../../src/core/event.js";
import type { EventStore } from "../../src/pipeline/event-store.js";
import type { QueueConsumer, QueueMessage } from "../../src/pipeline/queue-consumer.js";
import { QueueWorker } from "../../src/roles/worker.js";

let next = 0;
const message = (): QueueMessage => ({
  id: String(++next),
  events: [
    {
      projectId: "00000000-0000-4000-8000-000000000001",
      uuid: `00000000-0000-4000-8000-${String(next).padStart(12, "0")}`,
      event: "e",
      distinctId: "u",
      timestamp: 1_700_000_000_000,
      properties: "{}",
      receivedAt: 1_700_000_000_000,
    },
  ],
});

/** A queue that has one more message each time it is read, `total` in all, and records the waits asked. */
class OneAtATimeConsumer implements QueueConsumer {
  readonly name = "one-at-a-time";
  readonly acked: string[] = [];
  readonly blocks: number[] = [];
  private left: number;
  constructor(total: number) {
    this.left = total;
  }
  async start(): Promise<void> {}
  async ready(): Promise<string | undefined> {
    return undefined;
  }
  async close(): Promise<void> {}
  async read(_maxMessages: number, blockMs: number): Promise<QueueMessage[]> {
    this.blocks.push(blockMs);
    if (this.left === 0) {
      await new Promise((r) => setTimeout(r, 1));
      return [];
    }
    this.left--;
    return [message()];
  }
  async ack(messages: readonly QueueMessage[]): Promise<void> {
    this.acked.push(...messages.map((m) => m.id));
  }
  async deadLetter(): Promise<void> {}
  async deadLetterRequest(): Promise<void> {}
  async touch(): Promise<void> {}
}

class CountingStore implements EventStore {
  readonly name = "counting";
  readonly inserts: number[] = [];
  async start(): Promise<void> {}
  async ready(): Promise<string | undefined> {
    return undefined;
  }
  async close(): Promise<void> {}
  async insert(events: readonly StoredEvent[]): Promise<CommitOutcome> {
    this.inserts.push(events.length);
    return { inserted: events.length, duplicates: [] };
  }
  async recordLedger(): Promise<void> {}
  async readLedger(): Promise<Ledger> {
    throw new Error("not used");
  }
  async deleteProject(): Promise<void> {}
}

async function store(lingerMs: number): Promise<{ inserts: number[]; blocks: number[] }> {
  const consumer = new OneAtATimeConsumer(40);
  const store = new CountingStore();
  const worker = new QueueWorker(consumer, store, {
    batchEvents: 1000,
    readMessages: 100,
    blockMs: 20,
    lingerMs,
    maxDeliveries: 10,
    retryMinMs: 1,
    retryMaxMs: 5,
    touchEveryMs: 50,
  });
  await worker.start();
  const deadline = Date.now() + 5000;
  while (consumer.acked.length < 40 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  await worker.close();
  assert.equal(consumer.acked.length, 40, "every message is stored and acked");
  return { inserts: store.inserts, blocks: consumer.blocks };
}

test("a read that did not fill a batch is followed, after lingerMs, by one more read whose messages join the same insert", async () => {
  const eager = await store(0);
  assert.equal(eager.inserts.length, 40, "without a linger, one insert per read");
  const lingering = await store(5);
  assert.deepEqual(
    lingering.inserts,
    Array(20).fill(2),
    "each insert holds a read and the read after its linger",
  );
  // The read after the linger does not wait for more: 1 ms (BLOCK 0 would wait forever).
  assert.deepEqual(lingering.blocks.slice(0, 4), [20, 1, 20, 1]);
});

import assert from "node:assert/strict";
import { test } from "node:test";
import type { CommitOutcome, Ledger, LedgerDelta, StoredEvent } from "../../src/core/event.js";
import type { EventStore } from "../../src/pipeline/event-store.js";
import {
  type QueueConsumer,
  type QueueMessage,
  UnstorableEventsError,
} from "../../src/pipeline/queue-consumer.js";
import { QueueWorker } from "../../src/roles/worker.js";

const PROJECT = "00000000-0000-4000-8000-000000000001";
let next = 0;
const event = (name = "ok"): StoredEvent => ({
  projectId: PROJECT,
  uuid: `00000000-0000-4000-8000-${String(++next).padStart(12, "0")}`,
  event: name,
  distinctId: "u",
  timestamp: 1_700_000_000_000,
  properties: "{}",
  receivedAt: 1_700_000_000_000,
});
const message = (
  id: string,
  events: StoredEvent[] | undefined,
  extra: Partial<QueueMessage> = {},
): QueueMessage => ({
  id,
  events,
  ...extra,
});

/** The worker's side of a queue, in memory: hands each message out once, records what happens. */
class FakeConsumer implements QueueConsumer {
  readonly name = "fake-consumer";
  readonly acked: string[] = [];
  readonly dead: { id: string; reason: string }[] = [];
  constructor(private readonly pending: QueueMessage[]) {}
  async start(): Promise<void> {}
  async ready(): Promise<string | undefined> {
    return undefined;
  }
  async close(): Promise<void> {}
  async read(maxMessages: number, blockMs: number): Promise<QueueMessage[]> {
    if (this.pending.length === 0) await new Promise((resolve) => setTimeout(resolve, Math.min(blockMs, 5)));
    return this.pending.splice(0, maxMessages);
  }
  async ack(messages: readonly QueueMessage[]): Promise<void> {
    this.acked.push(...messages.map((m) => m.id));
  }
  async deadLetter(message: QueueMessage, reason: string): Promise<void> {
    this.dead.push({ id: message.id, reason });
  }
  readonly deadRequests: { id: string; index: number; uuids: string[]; reason: string }[] = [];
  async deadLetterRequest(
    message: QueueMessage,
    request: { index: number; events: readonly StoredEvent[] },
    reason: string,
  ): Promise<void> {
    this.deadRequests.push({
      id: message.id,
      index: request.index,
      uuids: request.events.map((e) => e.uuid),
      reason,
    });
  }
  async touch(): Promise<void> {}
  settled(total: number): boolean {
    return this.acked.length + this.dead.length >= total;
  }
}

/** A store that refuses any insert holding an event named "bad", and is down for `outages` inserts. */
class FakeStore implements EventStore {
  readonly name = "fake-store";
  readonly stored: string[] = [];
  readonly inserts: number[] = [];
  readonly ledger: LedgerDelta[] = [];
  constructor(private outages = 0) {}
  async start(): Promise<void> {}
  async ready(): Promise<string | undefined> {
    return undefined;
  }
  async close(): Promise<void> {}
  async insert(events: readonly StoredEvent[]): Promise<CommitOutcome> {
    this.inserts.push(events.length);
    if (this.outages > 0) {
      this.outages--;
      throw new Error("connection refused");
    }
    if (events.some((e) => e.event === "bad"))
      throw new UnstorableEventsError("a value the store cannot hold");
    this.stored.push(...events.map((e) => e.uuid));
    return { inserted: events.length, duplicates: [] };
  }
  async recordLedger(deltas: ReadonlyMap<string, LedgerDelta>): Promise<void> {
    for (const [project, delta] of deltas) {
      assert.equal(project, PROJECT);
      this.ledger.push(delta);
    }
  }
  async readLedger(): Promise<Ledger> {
    throw new Error("not used");
  }
  async deleteProject(): Promise<void> {}
}

async function run(
  consumer: FakeConsumer,
  store: FakeStore,
  total: number,
  maxDeliveries = 10,
): Promise<void> {
  const worker = new QueueWorker(consumer, store, {
    batchEvents: 1000,
    readMessages: 100,
    blockMs: 5,
    maxDeliveries,
    retryMinMs: 1,
    retryMaxMs: 5,
    touchEveryMs: 50,
  });
  await worker.start();
  const deadline = Date.now() + 5000;
  while (!consumer.settled(total) && Date.now() < deadline)
    await new Promise((resolve) => setTimeout(resolve, 2));
  await worker.close();
  assert.ok(consumer.settled(total), "every message was acked or dead-lettered");
}

test("a refused message of several requests is stored request by request: only the refused ones are dead-lettered", async () => {
  const first = [event(), event()];
  const refused = [event(), event("bad")];
  const last = [event()];
  const grouped = message("1", [...first, ...refused, ...last], { requests: [2, 2, 1] });
  const alone = [event()];
  const messages = [grouped, message("2", alone)];
  const consumer = new FakeConsumer(messages);
  const store = new FakeStore();
  await run(consumer, store, messages.length);
  assert.deepEqual(consumer.dead, [], "no whole message is dead-lettered");
  assert.deepEqual(consumer.deadRequests, [
    { id: "1", index: 1, uuids: refused.map((e) => e.uuid), reason: "a value the store cannot hold" },
  ]);
  assert.deepEqual(
    consumer.acked.sort(),
    ["1", "2"],
    "the grouped message is acked once its requests are done",
  );
  assert.deepEqual(
    store.stored.sort(),
    [...first, ...last, ...alone].map((e) => e.uuid).sort(),
    "the requests that shared the refused one's message are stored",
  );
  assert.deepEqual(
    store.ledger,
    [{ rejected: { dead_letter: 2 } }],
    "the refused request's events are counted",
  );
});

test("a message the store refuses is isolated and dead-lettered; the others of its batch are stored", async () => {
  const good = [[event(), event()], [event()], [event()], [event()]];
  const bad = [event(), event("bad")];
  const messages = [
    message("1", good[0]),
    message("2", good[1]),
    message("3", bad),
    message("4", good[2]),
    message("5", good[3]),
  ];
  const consumer = new FakeConsumer(messages);
  const store = new FakeStore();
  await run(consumer, store, messages.length);
  assert.deepEqual(consumer.dead, [{ id: "3", reason: "a value the store cannot hold" }]);
  assert.deepEqual(consumer.acked.sort(), ["1", "2", "4", "5"]);
  assert.deepEqual(
    store.stored.sort(),
    good
      .flat()
      .map((e) => e.uuid)
      .sort(),
    "nothing of the bad message is stored",
  );
  assert.deepEqual(
    store.ledger,
    [{ rejected: { dead_letter: 2 } }],
    "the dead letter is counted in the ledger",
  );
  assert.equal(store.inserts[0], 7, "the batch was tried whole first");
});

test("an undecodable message, or one delivered too often, is dead-lettered without reaching the store", async () => {
  const kept = event();
  const messages = [
    message("1", undefined, { problem: "not JSON" }),
    message("2", [event()], { deliveries: 4 }),
    message("3", [kept], { deliveries: 3 }),
  ];
  const consumer = new FakeConsumer(messages);
  const store = new FakeStore();
  await run(consumer, store, messages.length, 3);
  assert.deepEqual(consumer.dead, [
    { id: "1", reason: "undecodable: not JSON" },
    { id: "2", reason: "delivered 4 times without being stored" },
  ]);
  assert.deepEqual(consumer.acked, ["3"]);
  assert.deepEqual(store.stored, [kept.uuid]);
  assert.deepEqual(store.ledger, [{ rejected: { dead_letter: 1 } }], "the undecodable one names no project");
});

test("a store that is down is retried until it is back: nothing is dropped or dead-lettered", async () => {
  const events = [event(), event()];
  const consumer = new FakeConsumer([message("1", [events[0]!]), message("2", [events[1]!])]);
  const store = new FakeStore(3);
  await run(consumer, store, 2);
  assert.deepEqual(consumer.dead, []);
  assert.deepEqual(consumer.acked, ["1", "2"]);
  assert.deepEqual(
    store.stored,
    events.map((e) => e.uuid),
  );
  assert.equal(store.inserts.length, 4, "three failed tries, then the insert");
});

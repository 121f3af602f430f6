import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { KafkaEventLogConsumer } from "../../src/backends/kafka/kafka.consumer.js";
import { KafkaEventLogProducer } from "../../src/backends/kafka/kafka.producer.js";
import { PostgresChangeFeed } from "../../src/backends/postgres/postgres.change-feed.js";
import { PostgresDatabase } from "../../src/backends/postgres/postgres.database.js";
import { PostgresEventStore } from "../../src/backends/postgres/postgres.event-store.js";
import type { StoredEvent } from "../../src/core/event.js";
import type { ChangeFeed } from "../../src/pipeline/change-feed.js";
import { dropSlot, uniqueCdcNames } from "../helpers/cdc.js";
import { createTestDatabase, requireKafka, requirePostgres } from "../helpers/services.js";

// The cdc pipeline's own parts against the real services: the Postgres change feed (publication,
// pgoutput slot, acknowledgement, reconnection) and the Kafka producer and consumer group.

const projectId = randomUUID();
const makeEvents = (n: number, from = 0): StoredEvent[] =>
  Array.from({ length: n }, (_, i) => ({
    projectId,
    uuid: randomUUID(),
    event: i % 2 ? "Purchase" : "Page View",
    distinctId: `user_${(from + i) % 5}`,
    timestamp: Date.UTC(2026, 10, 1) + (from + i) * 1000,
    properties: JSON.stringify({ i: from + i, 'quote"d': "é\\n", nested: { a: [1, 2.5, null] } }).replace(
      "2.5",
      "2.50",
    ),
    receivedAt: Date.UTC(2026, 10, 1) + (from + i) * 1000 + 7,
  }));

async function readAll(
  feed: ChangeFeed,
  count: number,
): Promise<{ events: StoredEvent[]; position?: string }> {
  const events: StoredEvent[] = [];
  let position: string | undefined;
  const deadline = Date.now() + 20_000;
  while (events.length < count) {
    if (Date.now() > deadline) throw new Error(`read ${events.length} of ${count} events`);
    const batch = await feed.read(1000, 200);
    if (!batch) continue;
    events.push(...batch.events);
    position = batch.position;
  }
  return { events, position };
}

test("postgres change feed: committed events in commit order, resumed from the acknowledged position", {
  timeout: 60_000,
}, async (t) => {
  const postgres = await requirePostgres(t);
  if (!postgres.ok) return;
  const database = await createTestDatabase(postgres.url, "cdc_feed");
  const names = uniqueCdcNames("feed");
  t.after(async () => {
    await dropSlot(database.url, names.slot);
    await database.drop();
  });
  const options = {
    url: database.url,
    ...names,
    lagWarnBytes: 1 << 30,
    log: process.env.DEBUG ? { info: console.log, warn: console.log, error: console.log } : undefined,
  };
  const db = new PostgresDatabase({ url: database.url });
  const store = new PostgresEventStore(db);
  await store.start();
  t.after(() => store.close());

  const feed = new PostgresChangeFeed(new PostgresDatabase({ url: database.url }), options);
  await feed.start();
  const first = makeEvents(300);
  await store.insert(first.slice(0, 100));
  await store.insert(first.slice(100));
  await store.insert(first.slice(0, 10)); // duplicates: not stored again, so not in the feed
  const read = await readAll(feed, 300);
  // Exactly the stored rows, text as stored (JSON spelling kept), times to the millisecond.
  assert.deepEqual(read.events.map((e) => e.uuid).sort(), first.map((e) => e.uuid).sort());
  const byUuid = new Map(read.events.map((e) => [e.uuid, e]));
  for (const e of first) assert.deepEqual(byUuid.get(e.uuid), e);
  assert.equal(await feed.read(1000, 300), undefined, "nothing more");
  await feed.acknowledge(read.position!);
  const lag = await feed.lagBytes();
  assert.ok(lag !== undefined && lag >= 0);

  // Unacknowledged events come back after a restart; acknowledged ones do not.
  const second = makeEvents(50, 300);
  await store.insert(second);
  const unacked = await readAll(feed, 50);
  assert.equal(unacked.events.length, 50);
  await feed.close();
  const again = new PostgresChangeFeed(new PostgresDatabase({ url: database.url }), options);
  await again.start();
  t.after(() => again.close());
  const replay = await readAll(again, 50);
  assert.deepEqual(replay.events.map((e) => e.uuid).sort(), second.map((e) => e.uuid).sort());
  await again.acknowledge(replay.position!);

  // The replication connection dropped (as when Postgres restarts): it reconnects and resumes.
  const admin = new pg.Client({ connectionString: database.url });
  admin.on("error", () => undefined); // the database is dropped with (FORCE) at the end
  await admin.connect();
  t.after(() => admin.end());
  const walsender = await admin.query<{ pid: number }>(
    "SELECT pid FROM pg_stat_activity WHERE backend_type = 'walsender' AND datname = current_database()",
  );
  assert.equal(walsender.rowCount, 1);
  await admin.query("SELECT pg_terminate_backend($1)", [walsender.rows[0]!.pid]);
  const third = makeEvents(20, 400);
  await store.insert(third);
  const resumed = await readAll(again, 20);
  assert.deepEqual(resumed.events.map((e) => e.uuid).sort(), third.map((e) => e.uuid).sort());
});

test("kafka event log: a read with a linger gathers a fuller batch, and returns at once when full or closing", {
  timeout: 90_000,
}, async (t) => {
  const kafka = await requireKafka(t);
  if (!kafka.ok) return;
  const names = uniqueCdcNames("linger");
  const options = { brokers: kafka.url.split(","), topic: names.topic, partitions: 1, replicas: 1 };
  const producer = new KafkaEventLogProducer(options);
  await producer.start();
  t.after(() => producer.close());
  const consumer = new KafkaEventLogConsumer({ ...options, groupId: names.group });
  await consumer.start();
  t.after(() => consumer.close());
  // The member has joined its group and fetches once it read a first event.
  await producer.publish(makeEvents(1));
  const deadline = Date.now() + 30_000;
  for (let batch = await consumer.read(100, 200); ; batch = await consumer.read(100, 200)) {
    if (batch.events.length > 0) {
      await consumer.commit(batch);
      break;
    }
    assert.ok(Date.now() < deadline, "the consumer read nothing in 30 s");
  }

  // Events that arrive while the first ones linger join their batch.
  await producer.publish(makeEvents(3, 1));
  const reading = consumer.read(100, 5000, 3000);
  await sleep(400);
  await producer.publish(makeEvents(3, 4));
  const gathered = await reading;
  assert.equal(gathered.events.length, 6);
  await consumer.commit(gathered);

  // A batch that fills up while it lingers does not wait for the rest of its linger.
  const started = Date.now();
  await producer.publish(makeEvents(5, 7));
  const filling = consumer.read(10, 5000, 30_000);
  await sleep(400);
  await producer.publish(makeEvents(5, 12));
  const full = await filling;
  assert.equal(full.events.length, 10);
  assert.ok(Date.now() - started < 15_000, `a full batch waited ${Date.now() - started} ms`);
  await consumer.commit(full);

  // Closing ends the linger: the read hands over what it holds.
  await producer.publish(makeEvents(2, 17));
  const lingering = consumer.read(100, 5000, 60_000);
  await sleep(1500);
  const closing = Date.now();
  await consumer.close();
  const held = await lingering;
  assert.equal(held.events.length, 2);
  assert.ok(Date.now() - closing < 15_000, `the read returned ${Date.now() - closing} ms after close`);
});

test("kafka event log: published events are consumed by the group; uncommitted ones come back", {
  timeout: 90_000,
}, async (t) => {
  const kafka = await requireKafka(t);
  if (!kafka.ok) return;
  const names = uniqueCdcNames("log");
  const options = { brokers: kafka.url.split(","), topic: names.topic, partitions: 3, replicas: 1 };
  const producer = new KafkaEventLogProducer(options);
  await producer.start();
  t.after(() => producer.close());
  const events = makeEvents(3000);
  await Promise.all([producer.publish(events.slice(0, 1500)), producer.publish(events.slice(1500))]);

  const consume = async (count: number, commit: boolean) => {
    const consumer = new KafkaEventLogConsumer({ ...options, groupId: names.group });
    await consumer.start();
    const seen: StoredEvent[] = [];
    const deadline = Date.now() + 30_000;
    try {
      while (seen.length < count) {
        if (Date.now() > deadline) throw new Error(`consumed ${seen.length} of ${count}`);
        const batch = await consumer.read(500, 200);
        seen.push(...batch.events);
        if (commit) await consumer.commit(batch);
      }
    } finally {
      await consumer.close();
    }
    return seen;
  };
  // Read without committing: a new member of the group reads everything again.
  const uncommitted = await consume(1000, false);
  assert.ok(uncommitted.length >= 1000);
  const all = await consume(3000, true);
  assert.deepEqual([...new Set(all.map((e) => e.uuid))].sort(), events.map((e) => e.uuid).sort());
  const byUuid = new Map(all.map((e) => [e.uuid, e]));
  for (const e of events) assert.deepEqual(byUuid.get(e.uuid), e);
});

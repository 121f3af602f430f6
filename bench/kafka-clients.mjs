#!/usr/bin/env node
// Kafka client comparison behind src/backends/kafka/README.md: produce N messages of ~200 B with
// acks=all and an idempotent producer, in batches, then consume them all with a consumer group.
// kafkajs is not a dependency of Tidemark; to rerun: npm install --no-save kafkajs@2.2.4
// Usage: node bench/kafka-clients.mjs platformatic|kafkajs [--messages 100000] [--batch 1000] [--inflight 1]
import { randomUUID } from "node:crypto";

const args = process.argv.slice(2);
const client = args[0];
const option = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const total = option("messages", 100_000);
const batchSize = option("batch", 1000);
const inflight = option("inflight", 1);
const brokers = (process.env.KAFKA_BROKERS || "127.0.0.1:59092").split(",");
const topic = `bench-${client}-${randomUUID().slice(0, 8)}`;

// ~200 B: a StoredEvent as Tidemark produces it.
const value = (i) =>
  JSON.stringify({
    projectId: "0b7e5a52-3c1d-4c55-9d0e-2f6a1f0c9a11",
    uuid: randomUUID(),
    event: "Page View",
    distinctId: `user_${i % 1000}`,
    timestamp: 1795900000000 + i,
    properties: `{"path":"/p/${i % 50}"}`,
    receivedAt: 1795900000000 + i,
  });
const batches = [];
for (let i = 0; i < total; i += batchSize) {
  batches.push(
    Array.from({ length: Math.min(batchSize, total - i) }, (_, j) => ({
      key: `project-${(i + j) % 8}`,
      value: value(i + j),
    })),
  );
}
const bytes = batches.flat().reduce((n, m) => n + m.value.length, 0);

const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
const summary = (label, count, ms, latencies) => {
  const s = [...latencies].sort((a, b) => a - b);
  return `${label}: ${count} msgs in ${ms.toFixed(0)} ms = ${Math.round((count / ms) * 1000)} msg/s; per batch p50 ${pct(s, 50).toFixed(1)} ms p99 ${pct(s, 99).toFixed(1)} ms max ${s[s.length - 1].toFixed(1)} ms`;
};

async function produceAll(send) {
  // One message first: connecting and fetching metadata are not part of the measured rate.
  await send([{ key: "warm-up", value: "{}" }]);
  const latencies = [];
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: inflight }, async () => {
      while (next < batches.length) {
        const batch = batches[next++];
        const t = performance.now();
        await send(batch);
        latencies.push(performance.now() - t);
      }
    }),
  );
  return summary("produce", total, performance.now() - started, latencies);
}

async function runPlatformatic() {
  const { Admin, Producer, Consumer, stringSerializers, stringDeserializers } = await import(
    "@platformatic/kafka"
  );
  const admin = new Admin({ clientId: "bench-admin", bootstrapBrokers: brokers });
  await admin.createTopics({ topics: [topic], partitions: 4, replicas: 1 });
  await admin.close();
  const producer = new Producer({
    clientId: "bench-producer",
    bootstrapBrokers: brokers,
    serializers: stringSerializers,
    idempotent: true,
    acks: -1,
  });
  const produced = await produceAll((batch) =>
    producer.send({ messages: batch.map((m) => ({ topic, key: m.key, value: m.value })) }),
  );
  await producer.close();
  const consumer = new Consumer({
    clientId: "bench-consumer",
    groupId: `${topic}-group`,
    bootstrapBrokers: brokers,
    deserializers: stringDeserializers,
  });
  const stream = await consumer.consume({ topics: [topic], mode: "earliest", autocommit: false });
  // The clock starts at the first message: joining the group is not part of the measured rate.
  let started = 0;
  let seen = -1; // the warm-up message
  const gaps = [];
  let last = 0;
  await new Promise((resolve) => {
    stream.on("data", () => {
      if (seen === -1) {
        started = performance.now();
        last = started;
      }
      seen++;
      if (seen % batchSize === 0) {
        const now = performance.now();
        gaps.push(now - last);
        last = now;
      }
      if (seen === total) resolve();
    });
  });
  const consumed = summary("consume", seen, performance.now() - started, gaps);
  await stream.close();
  await consumer.close(true);
  return [produced, consumed];
}

async function runKafkajs() {
  const { Kafka, logLevel } = await import("kafkajs");
  const kafka = new Kafka({ clientId: "bench", brokers, logLevel: logLevel.ERROR });
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 4, replicationFactor: 1 }] });
  await admin.disconnect();
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 5 });
  await producer.connect();
  const produced = await produceAll((batch) => producer.send({ topic, acks: -1, messages: batch }));
  await producer.disconnect();
  const consumer = kafka.consumer({ groupId: `${topic}-group` });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  let started = 0;
  let seen = -1; // the warm-up message
  const gaps = [];
  let last = 0;
  await new Promise((resolve) => {
    consumer.run({
      autoCommit: false,
      eachBatch: async ({ batch }) => {
        if (started === 0) {
          started = performance.now();
          last = started;
        }
        seen += batch.messages.length;
        const now = performance.now();
        gaps.push(now - last);
        last = now;
        if (seen >= total) resolve();
      },
    });
  });
  const consumed = summary("consume (per fetched batch)", seen, performance.now() - started, gaps);
  await consumer.disconnect();
  return [produced, consumed];
}

const results = client === "kafkajs" ? await runKafkajs() : await runPlatformatic();
console.log(
  `${client} (${total} msgs, ${Math.round(bytes / total)} B avg, batches of ${batchSize}, ${inflight} in flight)`,
);
for (const line of results) console.log(`  ${line}`);
process.exit(0);

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { Socket } from "node:net";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import {
  clickHouseAnswers,
  connects,
  requireClickHouse,
  requireKafka,
  splitBroker,
  startPrivateServices,
} from "../helpers/services.js";

/**
 * The services of the cdc pipeline answer as the engines they claim to be: ClickHouse runs SQL
 * over HTTP, and the Kafka broker answers the protocol (an ApiVersions request) and Kafka's own
 * TopicCommand. The last test checks what the fault tests rely on: private instances on free
 * ports that can be killed and started again.
 */

const SERVICES_SCRIPT = join(fileURLToPath(new URL("../..", import.meta.url)), "scripts/services.sh");

/**
 * Sends a Kafka ApiVersions v0 request and returns the api keys the broker lists (a Kafka broker
 * answers it before any other request, without authentication).
 */
function kafkaApiVersions(host: string, port: number): Promise<number[]> {
  const clientId = Buffer.from("tidemark-test");
  const body = Buffer.alloc(2 + 2 + 4 + 2 + clientId.length);
  let offset = body.writeInt16BE(18, 0); // api key: ApiVersions
  offset = body.writeInt16BE(0, offset); // api version 0
  offset = body.writeInt32BE(42, offset); // correlation id
  offset = body.writeInt16BE(clientId.length, offset);
  clientId.copy(body, offset);
  const size = Buffer.alloc(4);
  size.writeInt32BE(body.length);
  return new Promise((resolve, reject) => {
    const socket = new Socket();
    let received = Buffer.alloc(0);
    socket.setTimeout(5000, () => socket.destroy(new Error("no ApiVersions answer within 5 s")));
    socket.once("error", reject);
    socket.on("data", (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      if (received.length < 4 || received.length < 4 + received.readInt32BE(0)) return;
      socket.end();
      const correlationId = received.readInt32BE(4);
      const errorCode = received.readInt16BE(8);
      const count = received.readInt32BE(10);
      if (correlationId !== 42) return reject(new Error(`correlation id ${correlationId}`));
      if (errorCode !== 0) return reject(new Error(`ApiVersions error ${errorCode}`));
      const keys: number[] = [];
      for (let i = 0; i < count; i++) keys.push(received.readInt16BE(14 + i * 6));
      resolve(keys);
    });
    socket.connect(port, host, () => socket.write(Buffer.concat([size, body])));
  });
}

test("ClickHouse answers SQL over HTTP, in UTC", async (t) => {
  const clickhouse = await requireClickHouse(t);
  if (!clickhouse.ok) return;
  const response = await fetch(
    `${clickhouse.url}/?query=${encodeURIComponent("SELECT 1 + 1, version(), timezone() FORMAT TabSeparated")}`,
  );
  assert.equal(response.status, 200);
  const [sum, version, zone] = (await response.text()).trim().split("\t");
  assert.equal(sum, "2");
  assert.match(version ?? "", /^\d+\.\d+/);
  assert.match(zone ?? "", /(^|\/)UTC$/);
});

test("the Kafka broker answers the protocol and Kafka's TopicCommand", async (t) => {
  const kafka = await requireKafka(t);
  if (!kafka.ok) return;
  const [host, port] = splitBroker(kafka.url.split(",")[0] ?? "");
  const keys = await kafkaApiVersions(host, port);
  for (const key of [0, 1, 3])
    assert.ok(keys.includes(key), `Produce, Fetch and Metadata (${key}) in ${keys}`);
  const topics = spawnSync("bash", [SERVICES_SCRIPT, "kafka-topics", "--list"], {
    env: { ...process.env, KAFKA_BROKERS: kafka.url },
    encoding: "utf8",
    timeout: 120_000,
  });
  assert.equal(topics.status, 0, topics.stderr);
});

test("private ClickHouse and Kafka on free ports survive kill -9 and start again", async (t) => {
  const services = await startPrivateServices("services", t, ["clickhouse", "kafka"]);
  if (typeof services === "string") return;
  try {
    assert.ok(await clickHouseAnswers(services.clickhouseUrl));
    const [host, port] = splitBroker(services.kafkaBrokers);
    assert.ok((await kafkaApiVersions(host, port)).includes(3));

    await Promise.all([services.kill("clickhouse"), services.kill("kafka")]);
    assert.equal(await clickHouseAnswers(services.clickhouseUrl), false);
    assert.equal(await connects(host, port), false);

    await Promise.all([services.start("clickhouse"), services.start("kafka")]);
    assert.ok(await clickHouseAnswers(services.clickhouseUrl));
    assert.ok((await kafkaApiVersions(host, port)).includes(3));
  } finally {
    services.destroy();
  }
});

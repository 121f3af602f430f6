import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { test } from "node:test";
import { defaultPartitioner, type MessageToProduce } from "@platformatic/kafka";
import { partitionOf } from "../../src/backends/kafka/kafka.producer.js";

test("a project's messages go to the partition the client's default partitioner gives its id", () => {
  const message = {} as MessageToProduce;
  const ids = [...Array.from({ length: 2000 }, () => randomUUID()), "p", "ünïcödé-project", ""];
  // Twice: the second pass reads the client's cache of hashes.
  for (let pass = 0; pass < 2; pass++)
    for (const id of ids) assert.equal(partitionOf(id), defaultPartitioner(message, Buffer.from(id)), id);
});

import assert from "node:assert/strict";
import { connect } from "node:net";
import { after, before, test } from "node:test";
import pino from "pino";
import { startTestTidemark, type TestTidemark } from "../helpers/tidemark.js";

// Every log line the server writes, as it was written.
const lines: string[] = [];
const logger = pino(
  { level: "info" },
  {
    write(line: string) {
      lines.push(line);
    },
  },
);
const parsed = () => lines.map((line) => JSON.parse(line) as Record<string, unknown>);

let tidemark: TestTidemark;
before(async () => {
  tidemark = await startTestTidemark({}, logger);
});
after(() => tidemark.close());

const until = async (check: () => Promise<boolean>, what: string) => {
  const deadline = Date.now() + 10_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
};

test("a refused request logs one warning line with one msg and the reason in its own field", async () => {
  const project = await tidemark.createProject("PRO");
  const response = await tidemark.request("POST", "/api/v1/event", {
    key: project.api_key,
    body: { event: "x" },
  });
  assert.equal(response.status, 400);
  const line = lines.find((l) => l.includes('"validation_failed"'));
  assert.ok(line, "a line for the refused request");
  assert.equal(line.match(/"msg":/g)?.length, 1, `one msg key: ${line}`);
  const entry = JSON.parse(line) as Record<string, unknown>;
  assert.equal(entry.level, 40);
  assert.equal(entry.msg, "request refused");
  assert.equal(entry.reason, "The event is not valid");
  assert.equal(entry.code, "validation_failed");
});

test("a client that leaves mid-upload is counted as client_aborted and logged as info, not as a server fault", async () => {
  const project = await tidemark.createProject("PRO");
  const { port } = new URL(tidemark.url);
  await new Promise<void>((resolve) => {
    const socket = connect(Number(port), "127.0.0.1", () => {
      socket.write(
        "POST /api/v1/event/batch HTTP/1.1\r\nHost: x\r\n" +
          `Authorization: Bearer ${project.api_key}\r\nContent-Type: application/json\r\n` +
          'Content-Length: 100000\r\n\r\n{"events": [{"event": "a", "distinct_id": "u"}',
      );
      // Long enough for the server to start reading the body, then the client goes away.
      setTimeout(() => {
        socket.destroy();
        resolve();
      }, 200);
    });
  });
  const stats = async () =>
    (await tidemark.request("GET", `/api/v1/project/${project.id}/stats`, { key: tidemark.token })).body;
  await until(async () => (await stats()).received === 1, "the ledger to count the request");
  const ledger = await stats();
  assert.deepEqual(ledger.rejected, { client_aborted: 1 });
  const entries = parsed();
  assert.ok(
    entries.some((e) => e.code === "client_aborted" && e.level === 30),
    "an info line says the client left",
  );
  assert.ok(!entries.some((e) => (e.level as number) >= 50), "no error line");
});

import assert from "node:assert/strict";
import { test } from "node:test";
import { loadConfig } from "../../src/config/config.js";
import type { StoredEvent } from "../../src/core/event.js";
import type { EventLogConsumer, LogBatch } from "../../src/pipeline/event-log.js";
import type { EventSink } from "../../src/pipeline/event-sink.js";
import type { PipelineParts } from "../../src/pipeline/parts.js";
import type { ProjectStore } from "../../src/pipeline/project-store.js";
import { buildSink, SinkRole } from "../../src/roles/sink.js";

const event = (projectId: string, uuid: string): StoredEvent => ({
  projectId,
  uuid,
  event: "e",
  distinctId: "u",
  timestamp: 0,
  properties: "{}",
  receivedAt: Date.now(),
});

/** A log that hands out the given batches once, then nothing; records commits. */
function fakeLog(batches: StoredEvent[][]) {
  const committed: LogBatch[] = [];
  const log = {
    name: "fake-log",
    start: async () => undefined,
    ready: async () => undefined,
    close: async () => undefined,
    lag: async () => 0,
    read: async (): Promise<LogBatch> => {
      const events = batches.shift();
      if (!events) await new Promise((resolve) => setTimeout(resolve, 5));
      return { events: events ?? [], dropped: 0, cursor: events };
    },
    commit: async (batch: LogBatch) => {
      committed.push(batch);
    },
  } satisfies EventLogConsumer;
  return { log, committed };
}

function fakeSink() {
  const written: StoredEvent[] = [];
  const deleted: string[] = [];
  let failures = 0;
  const sink = {
    name: "fake-sink",
    start: async () => undefined,
    ready: async () => undefined,
    close: async () => undefined,
    countEvents: async () => written.length,
    deleteProject: async (id: string) => {
      deleted.push(id);
    },
    write: async (events: readonly StoredEvent[]) => {
      if (failures-- > 0) throw new Error("ClickHouse away");
      written.push(...events);
    },
  } satisfies EventSink;
  return { sink, written, deleted, failAfter: (n: number) => (failures = n) };
}

/** Projects that exist, answered by `get` as the store would; `answers` overrides per call. */
function fakeProjects(exists: (id: string, call: number) => boolean): ProjectStore {
  let calls = 0;
  return {
    get: async (id: string) =>
      exists(id, calls++) ? { id, name: id, plan: "FREE", created_at: new Date(0).toISOString() } : undefined,
  } as unknown as ProjectStore;
}

const options = { batchEvents: 100, waitMs: 5, retryMinMs: 1, retryMaxMs: 5 };

async function runUntil(role: SinkRole, done: () => boolean): Promise<void> {
  await role.start();
  const deadline = Date.now() + 5000;
  while (!done() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
  await role.close();
}

test("sink: writes a batch, then commits it; retries while the store is away, never commits before", async () => {
  const { log, committed } = fakeLog([[event("p1", "a"), event("p1", "b")]]);
  const { sink, written, failAfter } = fakeSink();
  failAfter(3);
  const role = new SinkRole(
    log,
    sink,
    fakeProjects(() => true),
    options,
  );
  await runUntil(role, () => committed.length === 1);
  assert.deepEqual(
    written.map((e) => e.uuid),
    ["a", "b"],
  );
  assert.equal(committed.length, 1);
});

test("sink: events of a deleted project are dropped, counted and committed past", async () => {
  const { log, committed } = fakeLog([[event("gone", "a"), event("p1", "b"), event("gone", "c")]]);
  const { sink, written } = fakeSink();
  const dropped: [string, number][] = [];
  const role = new SinkRole(
    log,
    sink,
    fakeProjects((id) => id !== "gone"),
    {
      ...options,
      onDropped: (reason, n) => dropped.push([reason, n]),
    },
  );
  await runUntil(role, () => committed.length === 1);
  assert.deepEqual(
    written.map((e) => e.uuid),
    ["b"],
  );
  assert.deepEqual(dropped, [["deleted_project", 2]]);
});

test("sink: a project deleted while its events were written is deleted again in the store", async () => {
  const { log, committed } = fakeLog([[event("p1", "a")]]);
  const { sink, deleted } = fakeSink();
  // Exists when checked before the write, gone when checked after it.
  const role = new SinkRole(
    log,
    sink,
    fakeProjects((_, call) => call === 0),
    options,
  );
  await runUntil(role, () => committed.length === 1);
  assert.deepEqual(deleted, ["p1"]);
});

test("sink: reads with TIDEMARK_SINK_BATCH and TIDEMARK_SINK_LINGER_MS (250 ms unless set)", async () => {
  const env = {
    TIDEMARK_PIPELINE: "cdc",
    DATABASE_URL: "postgres://localhost/x",
    REDIS_URL: "redis://localhost",
    KAFKA_BROKERS: "localhost:9092",
    CLICKHOUSE_URL: "http://localhost:8123",
  };
  for (const [extra, expected] of [
    [{}, [10_000, 250]],
    [{ TIDEMARK_SINK_BATCH: "500", TIDEMARK_SINK_LINGER_MS: "0" }, [500, 0]],
  ] as const) {
    const reads: [number, number | undefined][] = [];
    const { log } = fakeLog([[event("p1", "a")]]);
    const { sink, written } = fakeSink();
    const parts = {
      logConsumer: {
        ...log,
        read: (maxEvents: number, _waitMs: number, lingerMs?: number) => {
          reads.push([maxEvents, lingerMs]);
          return log.read();
        },
      },
      sink,
      projects: fakeProjects(() => true),
    } as unknown as PipelineParts;
    const role = buildSink(loadConfig({ ...env, ...extra }), parts);
    await runUntil(role, () => written.length === 1);
    assert.deepEqual(reads[0], expected);
  }
  assert.throws(() => loadConfig({ ...env, TIDEMARK_SINK_LINGER_MS: "-1" }), /TIDEMARK_SINK_LINGER_MS/);
});

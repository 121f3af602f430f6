import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { DuckDbDatabase } from "../../src/backends/embedded/duckdb.database.js";
import { DuckDbEventStore } from "../../src/backends/embedded/duckdb.event-store.js";
import type { StoredEvent } from "../../src/core/event.js";

test("a failed ledger compaction is logged as a warning with its error, and commits go on", async () => {
  const dataDir = mkdtempSync(join(tmpdir(), "tidemark-compaction-"));
  const warnings: { obj: { err?: unknown }; msg?: string }[] = [];
  const log = {
    info() {},
    warn(obj: { err?: unknown }, msg?: string) {
      warnings.push({ obj, msg });
    },
    error() {},
  };
  const db = new DuckDbDatabase(dataDir);
  const store = new DuckDbEventStore(db, { compactEvery: 1, log });
  await store.start();
  try {
    const failure = new Error("disk full while compacting");
    // Compaction runs in its own transaction; commits use the writer connections.
    db.transaction = () => Promise.reject(failure);
    const projectId = randomUUID();
    const event = (): StoredEvent => ({
      projectId,
      uuid: randomUUID(),
      event: "x",
      distinctId: "u",
      timestamp: Date.now(),
      properties: "{}",
      receivedAt: Date.now(),
    });
    assert.equal((await store.insert([event()])).inserted, 1);
    for (let i = 0; i < 50 && warnings.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(warnings, [
      { obj: { err: failure }, msg: "ledger compaction failed; the next one retries" },
    ]);
    assert.equal((await store.insert([event()])).inserted, 1, "commits go on after a failed compaction");
    assert.equal((await store.readLedger(projectId)).accepted, 2);
  } finally {
    await store.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
});

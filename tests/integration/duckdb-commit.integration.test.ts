import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { DuckDbDatabase } from "../../src/backends/embedded/duckdb.database.js";
import { DuckDbEventStore } from "../../src/backends/embedded/duckdb.event-store.js";
import type { StoredEvent } from "../../src/core/event.js";

test("a commit DuckDB refuses is rolled back whole, and the next commit goes in", async () => {
  const dataDir = mkdtempSync(join(tmpdir(), "tidemark-commit-"));
  const store = new DuckDbEventStore(new DuckDbDatabase(dataDir));
  await store.start();
  try {
    const projectId = randomUUID();
    const event = (properties = "{}"): StoredEvent => ({
      projectId,
      uuid: randomUUID(),
      event: "x",
      distinctId: `u${Math.random()}`,
      timestamp: Date.now(),
      properties,
      receivedAt: Date.now(),
    });
    // Validation never lets such text through; here it makes DuckDB refuse the commit's insert.
    await assert.rejects(store.insert([event(), event('{"a":')]));
    let ledger = await store.readLedger(projectId);
    assert.equal(ledger.stored, 0, "nothing of the refused commit is stored");
    assert.equal(ledger.accepted, 0);

    for (let i = 0; i < 3; i++) assert.equal((await store.insert([event(), event()])).inserted, 2);
    ledger = await store.readLedger(projectId);
    assert.equal(ledger.stored, 6);
    assert.equal(ledger.accepted, 6);
  } finally {
    await store.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
});

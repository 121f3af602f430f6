import assert from "node:assert/strict";
import { test } from "node:test";
import type { CommitOutcome, Ledger, LedgerDelta, StoredEvent } from "../../src/core/event.js";
import type { CommitReport, EventStore } from "../../src/pipeline/event-store.js";
import { GroupCommitQueue } from "../../src/pipeline/group-commit.queue.js";
import { commitResult, eventKey } from "../../src/pipeline/ledger-rows.js";

/** A store keyed by (project, uuid), as the contract in src/pipeline/event-store.ts says. */
class KeyedStore implements EventStore {
  readonly name = "keyed";
  readonly keys = new Set<string>();
  readonly ledger = new Map<string, LedgerDelta>();
  commits = 0;
  async start(): Promise<void> {}
  async ready(): Promise<string | undefined> {
    return undefined;
  }
  async close(): Promise<void> {}
  async insert(events: readonly StoredEvent[]): Promise<CommitOutcome> {
    this.commits++;
    const inserted = new Set<string>();
    for (const e of events) {
      const key = eventKey(e);
      if (!this.keys.has(key)) {
        this.keys.add(key);
        inserted.add(key);
      }
    }
    const { outcome, ledger } = commitResult(events, inserted);
    for (const [project, delta] of ledger) {
      const total = this.ledger.get(project) ?? { accepted: 0, duplicate: 0 };
      total.accepted = (total.accepted ?? 0) + (delta.accepted ?? 0);
      total.duplicate = (total.duplicate ?? 0) + (delta.duplicate ?? 0);
      this.ledger.set(project, total);
    }
    return outcome;
  }
  async recordLedger(): Promise<void> {}
  async readLedger(): Promise<Ledger> {
    throw new Error("not used");
  }
  async deleteProject(): Promise<void> {}
}

const X = "11111111-1111-4111-8111-111111111111";
const Y = "22222222-2222-4222-8222-222222222222";
const U = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa";
const V = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb";
const event = (projectId: string, uuid: string): StoredEvent => ({
  projectId,
  uuid,
  event: "e",
  distinctId: "d",
  timestamp: 0,
  properties: "{}",
  receivedAt: 0,
});

test("duplicates are per (project, uuid), and each request hears only about its own events", async () => {
  const store = new KeyedStore();
  const reports: CommitReport[] = [];
  const queue = new GroupCommitQueue(store, {
    maxEvents: 1000,
    intervalMs: 20,
    maxPending: 1000,
    onFlush: (report) => reports.push(report),
  });
  assert.deepEqual(await queue.enqueue([event(X, U)]), { duplicates: [] });
  // One commit: X retries U, Y sends U for the first time, Y sends V three times, X sends V once.
  const [xRetry, yFirst, yTriple, xV] = await Promise.all([
    queue.enqueue([event(X, U)]),
    queue.enqueue([event(Y, U)]),
    queue.enqueue([event(Y, V), event(Y, U), event(Y, V), event(Y, V)]),
    queue.enqueue([event(X, V)]),
  ]);
  assert.equal(store.commits, 2, "the four requests shared one commit");
  assert.deepEqual(xRetry, { duplicates: [0] });
  assert.deepEqual(yFirst, { duplicates: [] });
  assert.deepEqual(
    yTriple,
    { duplicates: [1, 2, 3] },
    "U repeats Y's earlier request; V's first copy is stored",
  );
  assert.deepEqual(xV, { duplicates: [] });
  assert.deepEqual(store.ledger.get(X), { accepted: 2, duplicate: 1 });
  assert.deepEqual(store.ledger.get(Y), { accepted: 2, duplicate: 3 });
  // The commit reports carry what the metrics count: the same totals as the ledger.
  const duplicates = reports.reduce((n, r) => n + (r.outcome?.duplicates.length ?? 0), 0);
  const accepted = reports.reduce((n, r) => n + r.events, 0) - duplicates;
  assert.deepEqual({ accepted, duplicates }, { accepted: 4, duplicates: 4 });
  await queue.close();
});

test("commitResult: every event inserted, one refused, and copies in one commit", () => {
  const events = [event(X, U), event(Y, U), event(X, V), event(Y, V), event(X, Y)];
  const keys = events.map(eventKey);
  const all = commitResult(events, new Set(keys));
  assert.deepEqual(all.outcome, { inserted: 5, duplicates: [] });
  assert.deepEqual(Object.fromEntries(all.ledger), {
    [X]: { accepted: 3, duplicate: 0 },
    [Y]: { accepted: 2, duplicate: 0 },
  });
  // The store already held X/V: as many keys as events no longer, so each event is looked up.
  const held = commitResult(events, new Set(keys.filter((key) => key !== eventKey(event(X, V)))));
  assert.deepEqual(held.outcome, { inserted: 4, duplicates: [2] });
  assert.deepEqual(Object.fromEntries(held.ledger), {
    [X]: { accepted: 2, duplicate: 1 },
    [Y]: { accepted: 2, duplicate: 0 },
  });
  // A copy within the commit, and a Map of the inserted rows by key, as the embedded store passes.
  const copies = [event(X, U), event(X, U), event(Y, U)];
  const inserted = new Map(copies.map((e) => [eventKey(e), e]));
  const result = commitResult(copies, inserted);
  assert.deepEqual(result.outcome, { inserted: 2, duplicates: [1] });
  assert.deepEqual(Object.fromEntries(result.ledger), {
    [X]: { accepted: 1, duplicate: 1 },
    [Y]: { accepted: 1, duplicate: 0 },
  });
});

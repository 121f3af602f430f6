import assert from "node:assert/strict";
import { test } from "node:test";
import { AppError } from "../../src/core/errors.js";
import type { CommitOutcome, Ledger, StoredEvent } from "../../src/core/event.js";
import type { EventStore } from "../../src/pipeline/event-store.js";
import { GroupCommitQueue } from "../../src/pipeline/group-commit.queue.js";

let next = 0;
const event = (event = "x"): StoredEvent => ({
  projectId: "00000000-0000-4000-8000-000000000001",
  uuid: `00000000-0000-4000-8000-${String(++next).padStart(12, "0")}`,
  event,
  distinctId: "u",
  timestamp: 1_700_000_000_000,
  properties: "{}",
  receivedAt: 1_700_000_000_000,
});

/**
 * An in-memory store whose commits wait until the test releases them, and which refuses any
 * commit holding an event named "poison".
 */
class GatedStore implements EventStore {
  readonly name = "gated";
  readonly commits: string[][] = [];
  private gates: (() => void)[] = [];
  gated = false;
  async start(): Promise<void> {}
  async ready(): Promise<string | undefined> {
    return undefined;
  }
  async close(): Promise<void> {}
  async insert(events: readonly StoredEvent[]): Promise<CommitOutcome> {
    if (this.gated) await new Promise<void>((resolve) => this.gates.push(resolve));
    this.commits.push(events.map((e) => e.uuid));
    if (events.some((e) => e.event === "poison")) throw new Error("the store refuses this commit");
    return { inserted: events.length, duplicates: [] };
  }
  release(): void {
    for (const open of this.gates.splice(0)) open();
  }
  async waitForGates(n: number): Promise<void> {
    while (this.gates.length < n) await new Promise((resolve) => setImmediate(resolve));
  }
  async recordLedger(): Promise<void> {}
  async readLedger(): Promise<Ledger> {
    throw new Error("not used");
  }
  async deleteProject(): Promise<void> {}
}

const options = { maxEvents: 1000, intervalMs: 5, maxPending: 100, concurrency: 1 };

test("concurrent requests share one commit, and each resolves only after it", async () => {
  const store = new GatedStore();
  const queue = new GroupCommitQueue(store, options);
  const requests = [[event()], [event(), event()], [event()]];
  let settled = 0;
  const answers = requests.map(async (events) => {
    const answer = await queue.enqueue(events);
    settled++;
    return answer;
  });
  store.gated = true;
  await store.waitForGates(1);
  assert.equal(settled, 0, "no request resolves before its commit returned");
  assert.equal(await queue.depth(), 4);
  store.release();
  assert.deepEqual(await Promise.all(answers), [{ duplicates: [] }, { duplicates: [] }, { duplicates: [] }]);
  assert.equal(store.commits.length, 1, "one commit for the three requests");
  assert.deepEqual(
    store.commits[0],
    requests.flat().map((e) => e.uuid),
  );
  assert.equal(await queue.depth(), 0);
  await queue.close();
});

test("commits hold at most maxEvents, never splitting a request", async () => {
  const store = new GatedStore();
  const queue = new GroupCommitQueue(store, { ...options, maxEvents: 3 });
  await Promise.all([
    queue.enqueue([event(), event()]),
    queue.enqueue([event(), event()]),
    queue.enqueue([event()]),
  ]);
  assert.deepEqual(
    store.commits.map((c) => c.length),
    [2, 3],
  );
  await queue.close();
});

test("a failed shared commit retries each request alone: only the one at fault fails", async () => {
  const store = new GatedStore();
  const queue = new GroupCommitQueue(store, options);
  const good = [event(), event()];
  const bad = [event("poison")];
  const other = [event()];
  const outcomes = await Promise.allSettled([queue.enqueue(good), queue.enqueue(bad), queue.enqueue(other)]);
  assert.equal(outcomes[0].status, "fulfilled");
  assert.equal(outcomes[2].status, "fulfilled");
  assert.equal(outcomes[1].status, "rejected");
  const failure = (outcomes[1] as PromiseRejectedResult).reason;
  assert.ok(failure instanceof AppError);
  assert.equal(failure.code, "unavailable");
  assert.equal(failure.retryAfter, 1);
  assert.match(
    String((failure.cause as Error).message),
    /refuses this commit/,
    "the store's error is the cause",
  );
  assert.deepEqual(store.commits, [
    [...good, ...bad, ...other].map((e) => e.uuid),
    good.map((e) => e.uuid),
    bad.map((e) => e.uuid),
    other.map((e) => e.uuid),
  ]);
  await queue.close();
});

test("past maxPending events waiting or committing, enqueue refuses with 503 overloaded", async () => {
  const store = new GatedStore();
  store.gated = true;
  const queue = new GroupCommitQueue(store, { ...options, maxPending: 3 });
  const first = queue.enqueue([event(), event()]);
  await store.waitForGates(1);
  const second = queue.enqueue([event()]);
  await assert.rejects(queue.enqueue([event()]), (error: unknown) => {
    assert.ok(error instanceof AppError);
    assert.equal(error.code, "overloaded");
    assert.equal(error.status, 503);
    assert.equal(error.retryAfter, 1);
    return true;
  });
  store.gated = false;
  store.release();
  await Promise.all([first, second]);
  await queue.enqueue([event(), event(), event()]);
  await queue.close();
});

test("close commits everything already accepted, then refuses new events", async () => {
  const store = new GatedStore();
  // A long interval: without close, these would still be waiting for their commit.
  const queue = new GroupCommitQueue(store, { ...options, intervalMs: 60_000, concurrency: 2 });
  const accepted = [queue.enqueue([event()]), queue.enqueue([event(), event()])];
  store.gated = true;
  const closing = queue.close();
  await store.waitForGates(1);
  let closed = false;
  void closing.then(() => {
    closed = true;
  });
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(closed, false, "close waits for the commit in flight");
  store.release();
  await closing;
  await Promise.all(accepted);
  assert.equal(store.commits.flat().length, 3);
  await assert.rejects(
    queue.enqueue([event()]),
    (error: unknown) => error instanceof AppError && error.code === "unavailable",
  );
});

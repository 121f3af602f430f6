import assert from "node:assert/strict";
import { test } from "node:test";
import {
  PlanHints,
  RANGE_COUNT_MAX_AGE_MS,
  RANGE_COUNTS_KEPT,
} from "../../src/backends/embedded/duckdb.plan-hints.js";

const PROJECT = "11111111-1111-4111-8111-111111111111";
const OTHER = "22222222-2222-4222-8222-222222222222";
const range = (projectId: string, event = "View") => ({ projectId, event, fromMs: 0, toMs: 3_600_000 });

/** A reader that answers `answer` and counts its reads. */
function reader<T>(answer: T) {
  const read = async () => {
    read.calls++;
    return read.answer;
  };
  read.calls = 0;
  read.answer = answer;
  return read;
}

test("whether late events are stored is read again after a change, and a change during the read is not missed", async () => {
  const hints = new PlanHints();
  const read = reader(false);
  assert.equal(await hints.lateRows(read), false);
  assert.equal(await hints.lateRows(read), false);
  assert.equal(read.calls, 1);
  hints.lateRowsChanged();
  read.answer = true;
  assert.equal(await hints.lateRows(read), true);
  assert.equal(read.calls, 2);
  // A commit that lands while the store is asked: what the read saw may be from before it.
  let release: () => void = () => undefined;
  const slow = async () => {
    await new Promise<void>((resolve) => {
      release = resolve;
    });
    return true;
  };
  hints.lateRowsChanged();
  const asked = hints.lateRows(slow);
  hints.lateRowsChanged();
  release();
  assert.equal(await asked, true);
  read.answer = false;
  assert.equal(await hints.lateRows(read), false, "asked again: the change came after the read began");
  assert.equal(read.calls, 3);
});

test("a range's count is reused for RANGE_COUNT_MAX_AGE_MS, per project, name and range", async () => {
  let now = 1_000_000;
  const hints = new PlanHints(() => now);
  const read = reader(10);
  assert.equal(await hints.eventsInRange(range(PROJECT), read), 10);
  read.answer = 20;
  now += RANGE_COUNT_MAX_AGE_MS - 1;
  assert.equal(await hints.eventsInRange(range(PROJECT), read), 10, "still young");
  assert.equal(await hints.eventsInRange(range(PROJECT, "Buy"), read), 20, "another name");
  assert.equal(await hints.eventsInRange({ ...range(PROJECT), toMs: 7_200_000 }, read), 20, "another range");
  assert.equal(await hints.eventsInRange(range(OTHER), read), 20, "another project");
  assert.equal(read.calls, 4);
  now += 1;
  assert.equal(await hints.eventsInRange(range(PROJECT), read), 20, "aged: read again");
  assert.equal(read.calls, 5);
});

test("a deleted project's counts are read again, and the counts kept stay bounded", async () => {
  const hints = new PlanHints(() => 0);
  const read = reader(5);
  await hints.eventsInRange(range(PROJECT), read);
  await hints.eventsInRange(range(OTHER), read);
  const late = reader(true);
  await hints.lateRows(late);
  hints.projectDeleted(PROJECT);
  read.answer = 0;
  assert.equal(await hints.eventsInRange(range(PROJECT), read), 0);
  assert.equal(await hints.eventsInRange(range(OTHER), read), 5, "other projects' counts stay");
  await hints.lateRows(late);
  assert.equal(late.calls, 2, "its late events may have gone with it");

  const bounded = new PlanHints(() => 0);
  const counted = reader(1);
  for (let i = 0; i <= RANGE_COUNTS_KEPT; i++)
    await bounded.eventsInRange({ ...range(PROJECT), fromMs: i }, counted);
  const kept = (bounded as unknown as { counts: Map<string, unknown> }).counts;
  assert.ok(kept.size <= RANGE_COUNTS_KEPT, `${kept.size} kept`);
});

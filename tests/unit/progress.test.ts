import assert from "node:assert/strict";
import { test } from "node:test";
import { Progress } from "../../src/backends/embedded/duckdb.progress.js";

test("a long job logs its progress once an interval, with the time left at the pace after its first part; a short one logs none", () => {
  const lines: { fields: Record<string, unknown>; msg?: string }[] = [];
  const log = {
    info: (fields: object, msg?: string) =>
      void lines.push({ fields: fields as Record<string, unknown>, msg }),
    warn: () => assert.fail("no warning expected"),
    error: () => assert.fail("no error expected"),
  };
  let clock = 1_000;
  const progress = new Progress(
    log,
    "sorting days by event: progress",
    { project_id: "p" },
    10_000,
    () => clock,
  );
  /** `ms` later, part `done` of 10 ends (100 events a part). */
  const partEnds = (ms: number, done: number) => {
    clock += ms;
    progress.step(done, 10, done * 100);
  };
  // The first part waited for the queue: 7 s, where the next ones take 1 s.
  partEnds(7_000, 1);
  partEnds(2_000, 2);
  assert.equal(lines.length, 0, "nothing within the first interval");
  partEnds(1_000, 3);
  assert.equal(lines.length, 1);
  assert.equal(lines[0]!.msg, "sorting days by event: progress");
  assert.deepEqual(lines[0]!.fields, {
    project_id: "p",
    done: 3,
    total: 10,
    events: 300,
    took_ms: 10_000,
    left_ms: 7 * 1_500,
  });
  partEnds(9_999, 4);
  assert.equal(lines.length, 1, "at most one line an interval");
  partEnds(1, 5);
  assert.equal(lines.length, 2);
  assert.equal(lines[1]!.fields.took_ms, 20_000);
  assert.equal(lines[1]!.fields.left_ms, 5 * ((20_000 - 7_000) / 4));
});

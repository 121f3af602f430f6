import assert from "node:assert/strict";
import { test } from "node:test";
import { WriteQueue } from "../../src/backends/embedded/duckdb.write-queue.js";

/** A write that records its start and end, and ends when `release` is called. */
function gate(log: string[], name: string) {
  let release!: () => void;
  const ended = new Promise<void>((resolve) => {
    release = resolve;
  });
  return {
    work: async () => {
      log.push(`${name} start`);
      await ended;
      log.push(`${name} end`);
      return name;
    },
    release,
  };
}

const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

test("writes run one at a time, each lane in order, background ones after every normal one waiting", async () => {
  const queue = new WriteQueue();
  const log: string[] = [];
  const first = gate(log, "sort 1");
  const running = queue.add(first.work, "background");
  await turn();
  const waiting = [
    queue.add(async () => void log.push("sort 2"), "background"),
    queue.add(async () => void log.push("fill 1")),
    queue.add(async () => void log.push("project")),
  ];
  await turn();
  assert.deepEqual(log, ["sort 1 start"], "nothing else starts while a write runs");
  first.release();
  assert.equal(await running, "sort 1");
  await Promise.all(waiting);
  assert.deepEqual(log, ["sort 1 start", "sort 1 end", "fill 1", "project", "sort 2"]);
  await queue.idle();
});

test("a fill's next slice, queued as the last one ends, passes the sorts waiting", async () => {
  const queue = new WriteQueue();
  const log: string[] = [];
  const sorts = Promise.resolve().then(async () => {
    for (let day = 1; day <= 3; day++) await queue.add(async () => void log.push(`day ${day}`), "background");
  });
  // The store's fill reaches the queue through wrappers of its own: a few promise turns a slice.
  const wrapped = async (work: () => Promise<void>) => {
    await Promise.resolve();
    await queue.add(work);
    await Promise.resolve();
  };
  const fill = (async () => {
    for (let slice = 1; slice <= 3; slice++) await wrapped(async () => void log.push(`slice ${slice}`));
  })();
  await Promise.all([sorts, fill]);
  assert.deepEqual(log, ["slice 1", "slice 2", "slice 3", "day 1", "day 2", "day 3"]);
});

test("a failed write rejects its caller and the queue goes on; idle waits for the last write", async () => {
  const queue = new WriteQueue();
  const failed = queue.add(async () => {
    throw new Error("conflict");
  });
  const thrown = queue.add((() => {
    throw new Error("thrown before any await");
  }) as () => Promise<void>);
  let done = false;
  const after = queue.add(async () => {
    await turn();
    done = true;
  }, "background");
  await assert.rejects(failed, /conflict/);
  await assert.rejects(thrown, /thrown before any await/);
  await queue.idle();
  assert.equal(done, true);
  await after;
  assert.equal(await queue.add(async () => 42), 42, "the queue takes writes again once idle");
});

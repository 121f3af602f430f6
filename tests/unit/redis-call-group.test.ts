import assert from "node:assert/strict";
import { test } from "node:test";
import { RedisCallGroup } from "../../src/backends/redis/redis.call-group.js";

/** A group whose sends are recorded and answered with each call doubled, or failed on request. */
function recordingGroup(maxWeight: number, fail = false) {
  const sends: number[][] = [];
  const group = new RedisCallGroup<number, number>(
    async (calls) => {
      sends.push([...calls]);
      if (fail) throw new Error("redis is down");
      return calls.map((c) => c * 2);
    },
    maxWeight,
    (call) => call,
  );
  return { group, sends };
}

test("calls made in one turn are sent together, and each gets its own result", async () => {
  const { group, sends } = recordingGroup(100);
  const results = await Promise.all([1, 2, 3].map((c) => group.add(c)));
  assert.deepEqual(results, [2, 4, 6]);
  assert.deepEqual(sends, [[1, 2, 3]]);
  // A later turn is a later group.
  assert.equal(await group.add(5), 10);
  assert.deepEqual(sends, [[1, 2, 3], [5]]);
});

test("a group is sent once it reaches its bound; a call heavier than the bound goes alone", async () => {
  const { group, sends } = recordingGroup(10);
  const results = await Promise.all([4, 4, 4, 30, 1].map((c) => group.add(c)));
  assert.deepEqual(results, [8, 8, 8, 60, 2]);
  assert.deepEqual(sends, [[4, 4], [4], [30], [1]]);
});

test("when the send fails, every call of the group fails with its error, and the next group is sent", async () => {
  const failing = recordingGroup(100, true);
  const outcomes = await Promise.allSettled([1, 2].map((c) => failing.group.add(c)));
  assert.deepEqual(
    outcomes.map((o) => (o.status === "rejected" ? (o.reason as Error).message : "ok")),
    ["redis is down", "redis is down"],
  );
  const short = new RedisCallGroup<number, number>(async () => [1], 100);
  const mismatched = await Promise.allSettled([1, 2].map((c) => short.add(c)));
  assert.ok(
    mismatched.every((o) => o.status === "rejected"),
    "a reply of the wrong length fails the group",
  );
  assert.equal(await short.add(7), 1, "and the group goes on");
});

import assert from "node:assert/strict";
import { test } from "node:test";
import { REMEMBERED_ROWS, UserDays } from "../../src/backends/embedded/duckdb.user-days.js";
import type { StoredEvent } from "../../src/core/event.js";

const PROJECT = "11111111-1111-4111-8111-111111111111";
const DAY_MS = 86_400_000;

const event = (user: number, name: string, timestamp: number): StoredEvent => ({
  projectId: PROJECT,
  uuid: `00000000-0000-4000-8000-${String(user).padStart(12, "0")}`,
  event: name,
  distinctId: `user_${user}`,
  timestamp,
  properties: "{}",
  receivedAt: timestamp,
});
const uidOf = (e: StoredEvent) => Number(e.distinctId.slice("user_".length)) + 1;

/** A fold's failure: none is expected. */
const foldFailed = (error: unknown) => assert.fail(String(error));

/** A UserDays whose fold never comes due: these tests look at the rows alone. */
const userDays = () =>
  new UserDays(async () => {
    throw new Error("no fold expected");
  }, Number.MAX_SAFE_INTEGER);

test("a commit's pending rows: one per user, event and day; none again once a commit stored it", () => {
  const days = userDays();
  const commit = [
    event(1, "Page View", 1_000),
    event(1, "Page View", 2_000),
    event(1, "Click", 3_000),
    event(2, "Page View", 4_000),
    event(1, "Page View", DAY_MS + 5),
  ];
  const first = days.rows(commit, uidOf);
  assert.deepEqual(first.keys, ["2/0/Page View", "2/0/Click", "3/0/Page View", `2/${DAY_MS}/Page View`]);
  assert.deepEqual(
    first.text.split("\n").map((line) => JSON.parse(line)),
    [
      { p: PROJECT, e: "Page View", d: 0, i: 2 },
      { p: PROJECT, e: "Click", d: 0, i: 2 },
      { p: PROJECT, e: "Page View", d: 0, i: 3 },
      { p: PROJECT, e: "Page View", d: DAY_MS, i: 2 },
    ],
  );
  // Not stored until the commit says so: a commit rolled back must leave its rows to the next.
  assert.deepEqual(days.rows(commit, uidOf).keys, first.keys);
  days.appended(first, foldFailed);
  assert.deepEqual(days.rows(commit, uidOf).keys, []);
  // Another event name, user or day is a row of its own.
  const next = days.rows(
    [event(1, "Page View", 9_000), event(1, "Sign Up", 9_000), event(3, "Click", 2 * DAY_MS)],
    uidOf,
  );
  assert.deepEqual(next.keys, ["2/0/Sign Up", `4/${2 * DAY_MS}/Click`]);
});

test("past REMEMBERED_ROWS the memory is cleared and rows are written again", () => {
  const days = userDays();
  const many = Array.from({ length: REMEMBERED_ROWS }, (_, i) => event(i, "Page View", 0));
  days.appended(days.rows(many, uidOf), foldFailed);
  assert.deepEqual(days.rows(many.slice(0, 3), uidOf).keys, []);
  // One more row would pass the bound: everything remembered is forgotten, that row kept.
  const over = days.rows([event(REMEMBERED_ROWS, "Page View", 0)], uidOf);
  days.appended(over, foldFailed);
  assert.equal(days.rows(many.slice(0, 3), uidOf).keys.length, 3);
  assert.deepEqual(days.rows([event(REMEMBERED_ROWS, "Page View", 0)], uidOf).keys, []);
});

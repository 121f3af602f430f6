import assert from "node:assert/strict";
import { test } from "node:test";
import { MemoryRateLimiter } from "../../src/backends/memory/memory.rate-limiter.js";

test("allows the plan's requests per sliding minute, then refuses with Retry-After", () => {
  const limiter = new MemoryRateLimiter();
  const t0 = 1_000_000;
  for (let i = 0; i < 100; i++) {
    const decision = limiter.consumeSync("p", 100, t0 + i * 100);
    assert.equal(decision.allowed, true);
    assert.equal(decision.remaining, 99 - i);
    assert.equal(decision.limit, 100);
  }
  const refused = limiter.consumeSync("p", 100, t0 + 20_000);
  assert.equal(refused.allowed, false);
  assert.equal(refused.remaining, 0);
  assert.equal(refused.retryAfter, 40, "the oldest request leaves the window at t0 + 60 s");
  assert.equal(refused.resetAt, Math.ceil((t0 + 60_000) / 1000));
});

test("the window slides: at 60 s the first slot frees, not all at once", () => {
  const limiter = new MemoryRateLimiter();
  const t0 = 5_000_000;
  for (let i = 0; i < 10; i++) limiter.consumeSync("p", 10, t0 + i * 1000);
  assert.equal(limiter.consumeSync("p", 10, t0 + 59_999).allowed, false);
  assert.equal(limiter.consumeSync("p", 10, t0 + 60_000).allowed, true);
  assert.equal(limiter.consumeSync("p", 10, t0 + 60_500).allowed, false);
  assert.equal(limiter.consumeSync("p", 10, t0 + 61_000).allowed, true);
});

test("refused requests do not count, projects are independent", () => {
  const limiter = new MemoryRateLimiter();
  const t0 = 9_000_000;
  for (let i = 0; i < 5; i++) limiter.consumeSync("a", 5, t0);
  for (let i = 0; i < 1000; i++) assert.equal(limiter.consumeSync("a", 5, t0 + 1000).allowed, false);
  assert.equal(limiter.consumeSync("a", 5, t0 + 60_001).allowed, true);
  assert.equal(limiter.consumeSync("b", 5, t0).allowed, true);
});

test("a plan change keeps the requests already made", () => {
  const limiter = new MemoryRateLimiter();
  const t0 = 2_000_000;
  for (let i = 0; i < 100; i++) limiter.consumeSync("p", 100, t0);
  const upgraded = limiter.consumeSync("p", 1000, t0 + 1);
  assert.equal(upgraded.allowed, true);
  assert.equal(upgraded.remaining, 899);
  const downgraded = limiter.consumeSync("p", 100, t0 + 2);
  assert.equal(downgraded.allowed, false);
});

test("a released request leaves the window as if never made; releasing twice or late does nothing", () => {
  const limiter = new MemoryRateLimiter();
  const t0 = 3_000_000;
  const slots: string[] = [];
  for (let i = 0; i < 5; i++) slots.push(limiter.consumeSync("p", 5, t0 + i * 1000).slot!);
  assert.equal(limiter.consumeSync("p", 5, t0 + 5000).allowed, false);
  limiter.releaseSync("p", slots[2]!);
  limiter.releaseSync("p", slots[2]!);
  const again = limiter.consumeSync("p", 5, t0 + 6000);
  assert.equal(again.allowed, true);
  assert.equal(again.remaining, 0);
  assert.equal(limiter.consumeSync("p", 5, t0 + 6000).allowed, false, "one release frees one slot");
  // The oldest request now frees its slot at t0 + 60 s, the one after it at t0 + 61 s.
  assert.equal(limiter.consumeSync("p", 5, t0 + 60_000).allowed, true);
  assert.equal(limiter.consumeSync("p", 5, t0 + 60_500).allowed, false);
  limiter.releaseSync("p", String(t0));
  limiter.releaseSync("unknown", slots[0]!);
  assert.equal(limiter.consumeSync("p", 5, t0 + 60_600).allowed, false, "a slot out of the window is gone");
});

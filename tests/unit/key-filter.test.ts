import assert from "node:assert/strict";
import { test } from "node:test";
import { KeyFilter, type KeyHash } from "../../src/backends/embedded/duckdb.key-filter.js";

/** Uniform 32-bit halves, as DuckDB's hash gives them (xorshift: reproducible). */
function hashes(seed: number) {
  let x = seed >>> 0 || 1;
  const next = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
  return (): KeyHash => ({ block: next(), bits: next() });
}

test("every key added is held, across segments as the filter grows, and projects are apart", () => {
  const filter = new KeyFilter({ minCapacity: 1000 });
  const next = hashes(7);
  const added = Array.from({ length: 50_000 }, next);
  for (const key of added) filter.add("p", key);
  assert.ok(added.every((key) => filter.mayHold("p", key)));
  assert.ok(!filter.mayHold("q", added[0]!), "another project holds nothing");
  filter.forgetProject("p");
  assert.ok(!filter.mayHold("p", added[0]!));
});

test("a full filter errs on fewer than one new key in 10,000 at its default size", (t) => {
  // A segment full to its capacity is the worst case: a new segment holds as many keys as all
  // before it, and a store opened sizes its first segment for twice its keys. 349,525 keys x 24 bits =
  // 16,384 blocks of 512 bits.
  const keys = 349_525;
  const filter = new KeyFilter({ minCapacity: keys });
  const next = hashes(11);
  for (let i = 0; i < keys; i++) filter.add("p", next());
  let errors = 0;
  const tries = 1_000_000;
  for (let i = 0; i < tries; i++) if (filter.mayHold("p", next())) errors++;
  t.diagnostic(`false positives: ${errors} of ${tries}; ${filter.size().bytes} bytes for ${keys} keys`);
  assert.ok(errors / tries < 1e-4, `${errors} of ${tries}`);
  assert.ok(filter.size().bytes <= keys * 3 + 1, "3 bytes a key");
});

test("as it grows, the filter takes 3 to 6 bytes a key", () => {
  const filter = new KeyFilter();
  const next = hashes(13);
  for (let keys = 1; keys <= 1_000_000; keys++) {
    filter.add("p", next());
    if (keys % 50_000 !== 0) continue;
    const perKey = filter.size().bytes / keys;
    assert.ok(perKey >= 3 && perKey <= 6.01, `${perKey.toFixed(2)} bytes a key at ${keys} keys`);
  }
});

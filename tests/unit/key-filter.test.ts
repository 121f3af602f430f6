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

test("the segment built at start, full, errs on fewer than one new key in 10,000", (t) => {
  // A segment full to its capacity is the worst case: a store opened sizes the segment it builds
  // for twice its keys, at 24 bits a key when full. Here a segment of that size is filled by add()
  // (which sizes at grownBitsPerKey). 349,525 keys x 24 bits = 16,384 blocks of 512 bits.
  const keys = 349_525;
  const filter = new KeyFilter({ minCapacity: keys, grownBitsPerKey: 24 });
  const next = hashes(11);
  for (let i = 0; i < keys; i++) filter.add("p", next());
  let errors = 0;
  const tries = 1_000_000;
  for (let i = 0; i < tries; i++) if (filter.mayHold("p", next())) errors++;
  t.diagnostic(`false positives: ${errors} of ${tries}; ${filter.size().bytes} bytes for ${keys} keys`);
  assert.ok(errors / tries < 1e-4, `${errors} of ${tries}`);
  assert.ok(filter.size().bytes <= keys * 3 + 1, "3 bytes a key");
});

test("grown from empty, the filter errs on fewer than one new key in 50,000 and takes 5 to 10.5 bytes a key", (t) => {
  // Every segment is checked, so their errors add up: at 24 bits a key the segments of a filter
  // grown to 1M keys erred on one new key in about 1,900.
  const filter = new KeyFilter();
  const next = hashes(13);
  for (let keys = 1; keys <= 1_000_000; keys++) {
    filter.add("p", next());
    if (keys % 50_000 !== 0) continue;
    const perKey = filter.size().bytes / keys;
    assert.ok(perKey >= 5 && perKey <= 10.5, `${perKey.toFixed(2)} bytes a key at ${keys} keys`);
  }
  let errors = 0;
  const tries = 1_000_000;
  for (let i = 0; i < tries; i++) if (filter.mayHold("p", next())) errors++;
  t.diagnostic(`false positives: ${errors} of ${tries}, grown to 1M keys`);
  assert.ok(errors / tries < 2e-5, `${errors} of ${tries}`);
});

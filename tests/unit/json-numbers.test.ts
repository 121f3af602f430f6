import assert from "node:assert/strict";
import { test } from "node:test";
import { inexactIntegers } from "../../src/core/json-numbers.js";

test("integer literals a JSON number cannot carry exactly are found, nothing else", () => {
  const found = (text: string) => [...inexactIntegers(text)];
  assert.deepEqual(found('{"a": 1, "b": 123456789012345}'), []);
  // 2^53 + 1 becomes 2^53; 2^53 itself, 2^60 written out in full, and 2^60 as JavaScript writes
  // it (shortest text that reads back the same double, written back identically) are kept.
  assert.deepEqual(found('{"a": 9007199254740993}'), [2 ** 53]);
  assert.deepEqual(found('{"a": 9007199254740992, "b": 1152921504606846976, "c": 1152921504606847000}'), []);
  assert.deepEqual(found('{"a": -12345678901234567891}'), [Number("-12345678901234567891")]);
  // Inside strings (keys or values), fractions and exponents: not integer literals.
  assert.deepEqual(found('{"12345678901234567891": "12345678901234567891 \\" 98765432109876543211"}'), []);
  assert.deepEqual(found('{"a": 0.12345678901234567891, "b": 1.5e300}'), []);
  assert.deepEqual(found('[1, 12345678901234567891, "x"]'), [Number("12345678901234567891")]);
});

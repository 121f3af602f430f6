import assert from "node:assert/strict";
import { test } from "node:test";
import { constantTimeEqual, generateKey, hashKey, keyKind } from "../../src/core/keys.js";

test("keys carry their kind and environment and are random", () => {
  const write = generateKey("write", "live");
  assert.match(write, /^wk_live_[0-9A-Za-z]{32}$/);
  assert.match(generateKey("read", "dev"), /^rk_dev_[0-9A-Za-z]{32}$/);
  assert.equal(keyKind(write), "write");
  assert.equal(keyKind("xx_1"), undefined);
  const many = new Set(Array.from({ length: 1000 }, () => generateKey("write", "dev")));
  assert.equal(many.size, 1000);
});

test("hashes are stable and not the key; comparison is exact", () => {
  assert.equal(hashKey("wk_dev_a"), hashKey("wk_dev_a"));
  assert.notEqual(hashKey("wk_dev_a"), "wk_dev_a");
  assert.equal(constantTimeEqual("secret", "secret"), true);
  assert.equal(constantTimeEqual("secret", "secreT"), false);
  assert.equal(constantTimeEqual("secret", "secret1"), false);
  assert.equal(constantTimeEqual("", "x"), false);
});

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { ConfigError, ENV_SPEC, loadConfig } from "../../src/config/config.js";

test("defaults give the embedded platform on port 8000", () => {
  const config = loadConfig({});
  assert.equal(config.port, 8000);
  assert.equal(config.pipeline, "embedded");
  assert.equal(config.role, "all");
  assert.equal(config.dataDir, "./data");
  assert.equal(config.keyEnv, "dev");
  assert.ok(Object.isFrozen(config));
});

test("a bad value stops start-up naming the variable", () => {
  const cases: [Record<string, string>, string][] = [
    [{ PORT: "eighty" }, "PORT"],
    [{ PORT: "70000" }, "PORT"],
    [{ TIDEMARK_PIPELINE: "kafka" }, "TIDEMARK_PIPELINE"],
    [{ TIDEMARK_KEY_ENV: "Prod!" }, "TIDEMARK_KEY_ENV"],
    [{ DATABASE_URL: "mysql://x" }, "DATABASE_URL"],
    [{ TIDEMARK_PIPELINE: "sync" }, "DATABASE_URL"],
    [{ TIDEMARK_PIPELINE: "async", DATABASE_URL: "postgres://localhost/x" }, "REDIS_URL"],
    [{ TIDEMARK_FLUSH_MAX_EVENTS: "1.5" }, "TIDEMARK_FLUSH_MAX_EVENTS"],
  ];
  for (const [env, variable] of cases) {
    assert.throws(
      () => loadConfig(env),
      (error: unknown) =>
        error instanceof ConfigError && error.variable === variable && error.message.startsWith(variable),
      JSON.stringify(env),
    );
  }
});

test(".env.example lists every variable with its default", () => {
  const lines = readFileSync(new URL("../../.env.example", import.meta.url), "utf8")
    .split("\n")
    .filter((line) => /^[A-Z_]+=/.test(line));
  const example = Object.fromEntries(
    lines.map((line) => [line.slice(0, line.indexOf("=")), line.slice(line.indexOf("=") + 1)]),
  );
  assert.deepEqual(Object.keys(example).sort(), Object.keys(ENV_SPEC).sort());
  for (const [name, spec] of Object.entries(ENV_SPEC)) assert.equal(example[name], spec.default, name);
});

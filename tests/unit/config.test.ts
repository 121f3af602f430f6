import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { memoryLimitBytes } from "../../src/backends/embedded/duckdb.database.js";
import {
  AVAILABLE_PIPELINES,
  AVAILABLE_ROLES,
  ConfigError,
  ENV_SPEC,
  loadConfig,
  PIPELINE_ROLES,
  processRoles,
} from "../../src/config/config.js";

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

/** Tidemark's part of .env.example: what follows the docker-compose marker is compose's own. */
const tidemarkExample = () =>
  readFileSync(new URL("../../.env.example", import.meta.url), "utf8").split(
    /^# ---- docker-compose\.yml/m,
  )[0] ?? "";

test(".env.example lists every variable with its default", () => {
  const lines = tidemarkExample()
    .split("\n")
    .filter((line) => /^[A-Z_]+=/.test(line));
  const example = Object.fromEntries(
    lines.map((line) => [line.slice(0, line.indexOf("=")), line.slice(line.indexOf("=") + 1)]),
  );
  assert.deepEqual(Object.keys(example).sort(), Object.keys(ENV_SPEC).sort());
  for (const [name, spec] of Object.entries(ENV_SPEC)) assert.equal(example[name], spec.default, name);
});

const services = { DATABASE_URL: "postgres://localhost/x", REDIS_URL: "redis://localhost" };
const cdcServices = { KAFKA_BROKERS: "localhost:9092", CLICKHOUSE_URL: "http://localhost:8123" };

test("an unknown pipeline or role, or one this build lacks, fails naming the variable", () => {
  const cases: [Record<string, string>, string, RegExp][] = [
    [{ TIDEMARK_PIPELINE: "kafka" }, "TIDEMARK_PIPELINE", /must be one of/],
    [{ TIDEMARK_ROLE: "reader" }, "TIDEMARK_ROLE", /must be one of/],
    [{ TIDEMARK_PIPELINE: "cdc", ...services }, "KAFKA_BROKERS", /required/],
    [
      { TIDEMARK_PIPELINE: "cdc", ...services, KAFKA_BROKERS: "127.0.0.1:9092" },
      "CLICKHOUSE_URL",
      /required/,
    ],
    [{ TIDEMARK_PIPELINE: "cdc" }, "DATABASE_URL", /required/],
    [
      { ...services, TIDEMARK_PIPELINE: "cdc", TIDEMARK_CDC_SLOT: "Bad-Slot" },
      "TIDEMARK_CDC_SLOT",
      /must match/,
    ],
    [{ TIDEMARK_ROLE: "worker" }, "TIDEMARK_ROLE", /embedded pipeline has the roles all, api/],
    [{ TIDEMARK_PIPELINE: "sync", TIDEMARK_ROLE: "worker", ...services }, "TIDEMARK_ROLE", /sync/],
    [{ TIDEMARK_PIPELINE: "async", TIDEMARK_ROLE: "cdc", ...services }, "TIDEMARK_ROLE", /async/],
    [{ TIDEMARK_PIPELINE: "async", TIDEMARK_ROLE: "sink", ...services }, "TIDEMARK_ROLE", /async/],
  ];
  for (const [env, variable, message] of cases) {
    assert.throws(
      () => loadConfig(env),
      (error: unknown) =>
        error instanceof ConfigError && error.variable === variable && message.test(error.message),
      JSON.stringify(env),
    );
  }
});

test("each pipeline runs the roles its table lists, and all of them in one process", () => {
  assert.deepEqual(AVAILABLE_PIPELINES, ["embedded", "sync", "async", "cdc"]);
  assert.deepEqual(AVAILABLE_ROLES, ["all", "api", "worker", "cdc", "sink"]);
  for (const pipeline of AVAILABLE_PIPELINES) {
    for (const role of PIPELINE_ROLES[pipeline]) {
      const config = loadConfig({
        TIDEMARK_PIPELINE: pipeline,
        TIDEMARK_ROLE: role,
        ...services,
        ...cdcServices,
      });
      assert.equal(config.role, role);
    }
  }
  const all = loadConfig({ TIDEMARK_PIPELINE: "async", ...services });
  assert.deepEqual(processRoles(all), ["api", "worker"]);
  assert.deepEqual(processRoles(loadConfig({})), ["api"]);
  assert.deepEqual(
    processRoles(loadConfig({ ...services, TIDEMARK_PIPELINE: "async", TIDEMARK_ROLE: "worker" })),
    ["worker"],
  );
  assert.deepEqual(processRoles(loadConfig({ ...services, ...cdcServices, TIDEMARK_PIPELINE: "cdc" })), [
    "api",
    "worker",
    "cdc",
    "sink",
  ]);
});

test(".env.example offers only what this build runs", () => {
  const example = tidemarkExample();
  const doc = (name: string) => {
    const lines = example.split("\n");
    return lines[lines.findIndex((line) => line.startsWith(`${name}=`)) - 1] ?? "";
  };
  assert.match(doc("TIDEMARK_PIPELINE"), /^# embedded \| sync \| async \| cdc \(coming: none\)/);
  assert.match(doc("TIDEMARK_ROLE"), /^# all \| api \| worker \| cdc \| sink:.*\(coming: none\)/);
  assert.equal(doc("TIDEMARK_PIPELINE"), `# ${ENV_SPEC.TIDEMARK_PIPELINE?.doc}`);
  assert.equal(doc("TIDEMARK_ROLE"), `# ${ENV_SPEC.TIDEMARK_ROLE?.doc}`);
});

test("a memory limit in bytes, as DuckDB reads each unit", () => {
  assert.equal(memoryLimitBytes("512MB"), 512_000_000);
  assert.equal(memoryLimitBytes("1GiB"), 2 ** 30);
  assert.equal(memoryLimitBytes("1.5 GB"), 1_500_000_000);
  assert.equal(memoryLimitBytes("300KiB"), 300 * 1024);
  assert.equal(memoryLimitBytes("2TB"), 2e12);
  assert.throws(() => memoryLimitBytes("80%"), /not a memory limit/);
});

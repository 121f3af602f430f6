import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { DuckDbDatabase } from "../../src/backends/embedded/duckdb.database.js";
import { loadConfig } from "../../src/config/config.js";
import { freePort, startChildServer } from "../helpers/child-server.js";
import { ensureFreshBuild } from "../helpers/services.js";

/** The embedded store's file as a long-lived server holds it: memory cap, modes, one holder. */

async function setting(db: DuckDbDatabase, name: "memory_limit" | "threads"): Promise<string> {
  const reader = await db.readConnection().runAndReadAll(`SELECT current_setting('${name}')::VARCHAR`);
  return String((reader.getRowsJS() as [string][])[0]?.[0]);
}

test("DuckDB runs under TIDEMARK_DUCKDB_MEMORY_LIMIT (512MB by default) and TIDEMARK_DUCKDB_THREADS", {
  timeout: 90_000,
}, async (t) => {
  ensureFreshBuild();
  const dataDir = mkdtempSync(join(tmpdir(), "tidemark-duckdb-"));
  t.after(() => rmSync(dataDir, { recursive: true, force: true }));
  const defaults = loadConfig({ TIDEMARK_DATA_DIR: dataDir });
  assert.equal(defaults.duckdbMemoryLimit, "512MB");
  const db = new DuckDbDatabase(dataDir, {
    memoryLimit: defaults.duckdbMemoryLimit,
    threads: defaults.duckdbThreads,
  });
  await db.open();
  try {
    // DuckDB shows the cap in binary units: 512 MB = 488.2 MiB.
    assert.equal(await setting(db, "memory_limit"), "488.2 MiB");
    assert.equal(await setting(db, "threads"), String(defaults.duckdbThreads));
  } finally {
    await db.close();
  }
  const tuned = loadConfig({
    TIDEMARK_DATA_DIR: dataDir,
    TIDEMARK_DUCKDB_MEMORY_LIMIT: "1GiB",
    TIDEMARK_DUCKDB_THREADS: "1",
  });
  const other = new DuckDbDatabase(dataDir, {
    memoryLimit: tuned.duckdbMemoryLimit,
    threads: tuned.duckdbThreads,
  });
  await other.open();
  try {
    assert.equal(await setting(other, "memory_limit"), "1.0 GiB");
    assert.equal(await setting(other, "threads"), "1");
    const memory = await other.memory();
    assert.equal(memory.limitBytes, 2 ** 30);
    assert.equal(memory.spilledBytes, 0);
    assert.ok(memory.usedBytes.has("BASE_TABLE"), "duckdb_memory() names every tag, used or not");
  } finally {
    await other.close();
  }
  // A server applies the configured cap and says so at start.
  const server = await startChildServer({
    TIDEMARK_DATA_DIR: dataDir,
    SECRET_TOKEN: "memory-test-token-0123456789",
    TIDEMARK_LOG_LEVEL: "info",
    TIDEMARK_DUCKDB_MEMORY_LIMIT: "300MB",
  });
  try {
    const line = server
      .output()
      .split("\n")
      .find((l) => l.includes("embedded store open"));
    assert.ok(line, server.output());
    assert.equal(JSON.parse(line).memory_limit, "286.1 MiB");
    // And /metrics shows what DuckDB holds against it, so an operator sees the cap being reached.
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    assert.match(metrics, /^tidemark_store_memory_limit_bytes 300000000$/m);
    assert.match(metrics, /^tidemark_store_spilled_bytes 0$/m);
    assert.match(metrics, /^tidemark_store_memory_bytes\{tag="[A-Z_]+"\} [1-9]\d*$/m);
  } finally {
    server.process.kill("SIGTERM");
    await server.exited;
  }
  for (const bad of ["512", "lots", "-1MB", "80%"]) {
    assert.throws(() => loadConfig({ TIDEMARK_DUCKDB_MEMORY_LIMIT: bad }), /TIDEMARK_DUCKDB_MEMORY_LIMIT/);
  }
});

test("the data folder is 0700, the DuckDB file and every WAL it writes 0600", async (t) => {
  const parent = mkdtempSync(join(tmpdir(), "tidemark-modes-"));
  t.after(() => rmSync(parent, { recursive: true, force: true }));
  const dataDir = join(parent, "data");
  // An installation from before: a folder anyone may enter.
  mkdirSync(dataDir, { mode: 0o755 });
  const db = new DuckDbDatabase(dataDir, { memoryLimit: "256MB", threads: 1 });
  await db.open();
  const mode = (path: string) => statSync(path).mode & 0o777;
  const wal = `${db.path}.wal`;
  try {
    const write = (n: number) =>
      db.write(async (c) => {
        await c.run(`CREATE TABLE IF NOT EXISTS probe (n INTEGER)`);
        await c.run(`INSERT INTO probe VALUES (${n})`);
      });
    await write(1);
    assert.equal(mode(dataDir), 0o700, "data folder");
    assert.equal(mode(db.path), 0o600, "database file");
    assert.ok(existsSync(wal), "a write leaves a WAL");
    assert.equal(mode(wal), 0o600, "WAL");
    // A checkpoint folds the WAL into the file; the next write makes a new WAL.
    await db.write((c) => c.run("CHECKPOINT"));
    await write(2);
    assert.ok(existsSync(wal));
    assert.equal(mode(wal), 0o600, "the WAL written after a checkpoint");
    assert.equal(mode(db.path), 0o600, "database file after a checkpoint");
  } finally {
    await db.close();
  }
});

test("a second process on a held data folder stops with one line naming the holder and what to do", {
  timeout: 90_000,
}, async (t) => {
  const cli = ensureFreshBuild();
  const dataDir = mkdtempSync(join(tmpdir(), "tidemark-lock-"));
  t.after(() => rmSync(dataDir, { recursive: true, force: true }));
  const server = await startChildServer({
    TIDEMARK_DATA_DIR: dataDir,
    SECRET_TOKEN: "lock-test-token-0123456789",
  });
  t.after(async () => {
    server.process.kill("SIGTERM");
    await server.exited;
  });
  const holder = server.process.pid;
  // Another port, so the CLI finds no server there and opens the store itself.
  const env = {
    ...process.env,
    TIDEMARK_DATA_DIR: dataDir,
    PORT: String(await freePort()),
    HOST: "127.0.0.1",
    SECRET_TOKEN: "lock-test-token-0123456789",
    TIDEMARK_LOG_LEVEL: "warn",
  };
  for (const args of [["serve"], ["project", "list"], ["migrate"]]) {
    const run = spawnSync(process.execPath, [cli, ...args], { env, encoding: "utf8", timeout: 30_000 });
    assert.notEqual(run.status, 0, args.join(" "));
    const lines = run.stderr.trim().split("\n");
    assert.equal(lines.length, 1, `${args.join(" ")}: one line, got:\n${run.stderr}`);
    const [line = ""] = lines;
    assert.match(line, new RegExp(`PID ${holder}`), line);
    assert.match(line, /PORT/, line);
    assert.match(line, /TIDEMARK_DATA_DIR/, line);
    assert.doesNotMatch(line, /IO Error|duckdb\.org/, line);
  }
});

test("DuckDB spills what passes its cap into the data folder (tidemark.duckdb.tmp/), never into the working directory", async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), "tidemark-duckdb-"));
  const workingDir = mkdtempSync(join(tmpdir(), "tidemark-cwd-"));
  const cwd = process.cwd();
  t.after(() => {
    process.chdir(cwd);
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(workingDir, { recursive: true, force: true });
  });
  process.chdir(workingDir);
  const db = new DuckDbDatabase(dataDir, { memoryLimit: "64MB", threads: 1 });
  await db.open();
  try {
    // A sort of about 150 MB of rows under a 64 MB cap.
    await db
      .readConnection()
      .run("CREATE TEMP TABLE sorted AS SELECT i, md5(i::VARCHAR) AS m FROM range(3000000) r(i) ORDER BY m");
    assert.ok((await db.memory()).spilledBytes > 0, "the sort spilled");
    assert.equal(db.spillDirectory(), join(dataDir, "tidemark.duckdb.tmp"));
    assert.ok(existsSync(db.spillDirectory()), "the spill files are in the data folder");
    assert.equal(existsSync(join(workingDir, ".tmp")), false, "nothing spilled into the working directory");
  } finally {
    await db.close();
  }
});

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { DuckDBConnection, DuckDBInstance } from "@duckdb/node-api";
import { DuckDbDatabase } from "../../src/backends/embedded/duckdb.database.js";
import { DuckDbEventStore } from "../../src/backends/embedded/duckdb.event-store.js";
import { StatementCache } from "../../src/backends/embedded/duckdb.statement-cache.js";
import type { StoredEvent } from "../../src/core/event.js";
import { parseQuerySpec } from "../../src/query/spec.js";

/** A connection to a fresh in-memory DuckDB whose `prepare` calls are counted. */
async function countedConnection() {
  const instance = await DuckDBInstance.create(":memory:");
  const connection = await instance.connect();
  const prepared: string[] = [];
  const prepare = connection.prepare.bind(connection);
  connection.prepare = (sql: string) => {
    prepared.push(sql);
    return prepare(sql);
  };
  await connection.run("CREATE TABLE t (a INTEGER, b VARCHAR)");
  await connection.run("INSERT INTO t VALUES (1, 'x'), (2, 'y'), (3, 'z')");
  return { instance, connection, prepared };
}

const rows = async (cache: StatementCache, sql: string, params: (number | string)[] = []) =>
  (await cache.read(sql, params)).getRowObjectsJS();

test("a statement is prepared once, reads with each run's values, and sees what changed since", async (t) => {
  const { instance, connection, prepared } = await countedConnection();
  t.after(() => instance.closeSync());
  const cache = new StatementCache(connection);
  const sql = "SELECT * FROM t WHERE a >= CAST($1 AS INTEGER) ORDER BY a";
  assert.deepEqual(await rows(cache, sql, [2]), [
    { a: 2, b: "y" },
    { a: 3, b: "z" },
  ]);
  assert.deepEqual(await rows(cache, sql, [3]), [{ a: 3, b: "z" }]);
  assert.equal(prepared.length, 1, "the second run reused the first's statement");
  // Rows committed and a column added by another connection after the plan was made.
  const other = await instance.connect();
  await other.run("INSERT INTO t VALUES (4, 'w')");
  await other.run("ALTER TABLE t ADD COLUMN c INTEGER");
  await other.run("UPDATE t SET c = a * 10");
  assert.deepEqual(await rows(cache, sql, [3]), [
    { a: 3, b: "z", c: 30 },
    { a: 4, b: "w", c: 40 },
  ]);
  assert.equal(prepared.length, 1);
  // A statement without values is kept as well.
  await rows(cache, "SELECT count(*) AS n FROM t");
  await rows(cache, "SELECT count(*) AS n FROM t");
  assert.equal(prepared.length, 2);
  cache.close();
  await assert.rejects(cache.read(sql, [1]), /closed/);
});

test("runs of one text that overlap each get a statement of their own", async (t) => {
  const { instance, connection, prepared } = await countedConnection();
  t.after(() => instance.closeSync());
  const cache = new StatementCache(connection, { copies: 2 });
  const sql = "SELECT list(b ORDER BY a) AS bs FROM t WHERE a >= CAST($1 AS INTEGER)";
  // Started together: a shared statement would run both with the values bound last.
  const answers = await Promise.all([1, 2, 3, 1, 2, 3].map((a) => rows(cache, sql, [a])));
  assert.deepEqual(
    answers.map((answer) => answer[0]?.bs),
    [["x", "y", "z"], ["y", "z"], ["z"], ["x", "y", "z"], ["y", "z"], ["z"]],
  );
  assert.equal(prepared.length, 6, "no run waited for another's statement");
  // Two copies were kept; the next two overlapping runs take them.
  await Promise.all([rows(cache, sql, [1]), rows(cache, sql, [2])]);
  assert.equal(prepared.length, 6);
});

test("a run that fails leaves no broken statement behind, and the least recently run texts go first", async (t) => {
  const { instance, connection, prepared } = await countedConnection();
  t.after(() => instance.closeSync());
  const cache = new StatementCache(connection, { texts: 3 });
  const sql = "SELECT CAST($1 AS INTEGER) + a AS n FROM t WHERE a = 1";
  assert.deepEqual(await rows(cache, sql, [1]), [{ n: 2 }]);
  await assert.rejects(cache.read(sql, ["not a number"]), /Conversion Error|Could not convert/i);
  assert.deepEqual(await rows(cache, sql, [5]), [{ n: 6 }]);
  assert.equal(prepared.length, 2, "the failed run's statement was dropped, not reused");

  for (const a of [1, 2, 3]) await rows(cache, `SELECT b FROM t WHERE a = ${a}`);
  assert.equal(cache.size(), 3, "at most `texts` texts are kept");
  const before = prepared.length;
  await rows(cache, "SELECT b FROM t WHERE a = 3");
  assert.equal(prepared.length, before, "a recent text is still kept");
  await rows(cache, sql, [1]);
  assert.equal(prepared.length, before + 1, "the oldest text was dropped");
});

test("the embedded store's queries reuse their statements: a kind asked again prepares nothing", async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), "tidemark-statements-"));
  t.after(() => rmSync(dataDir, { recursive: true, force: true }));
  const db = new DuckDbDatabase(dataDir, { memoryLimit: "256MB", threads: 2 });
  const store = new DuckDbEventStore(db);
  await store.start();
  t.after(() => store.close());
  const projectId = randomUUID();
  const at = Date.UTC(2026, 8, 1, 12);
  const event = (name: string, user: string, minutes: number): StoredEvent => ({
    projectId,
    uuid: randomUUID(),
    event: name,
    distinctId: user,
    timestamp: at + minutes * 60_000,
    properties: JSON.stringify({ plan: user.endsWith("1") ? "pro" : "free" }),
    receivedAt: at + minutes * 60_000,
  });
  await store.insert([
    event("View", "u1", 0),
    event("Buy", "u1", 5),
    event("View", "u2", 1),
    event("View", "u3", 2),
    event("Buy", "u3", 90),
  ]);
  const range = { from: "2026-09-01", to: "2026-09-02" };
  const funnel = parseQuerySpec({ kind: "funnel", steps: ["View", "Buy"], window_seconds: 3600, ...range });
  const trend = parseQuerySpec({
    kind: "trends",
    interval: "day",
    breakdown: "plan",
    event: "View",
    ...range,
  });

  // The trend's first answer reads `plan` from the JSON and asks for its column: the statements
  // compared below are the ones that read the column.
  await store.query(projectId, trend);
  await store.propertyColumnsSettled();

  const prepared: string[] = [];
  const original = DuckDBConnection.prototype.prepare;
  DuckDBConnection.prototype.prepare = function (this: DuckDBConnection, sql: string) {
    prepared.push(sql);
    return original.call(this, sql);
  };
  t.after(() => {
    DuckDBConnection.prototype.prepare = original;
  });
  const counts = (answer: unknown) =>
    (answer as { steps: { count: number }[] }).steps.map((step) => step.count);
  assert.deepEqual(counts(await store.query(projectId, funnel)), [3, 1]);
  await store.query(projectId, trend);
  const first = prepared.length;
  assert.ok(first > 0);
  assert.deepEqual(counts(await store.query(projectId, funnel)), [3, 1]);
  await store.query(projectId, trend);
  assert.equal(prepared.length, first, `prepared again: ${prepared.slice(first).join("; ")}`);

  // Events committed since are counted by the kept statements.
  await store.insert([event("View", "u4", 3), event("Buy", "u4", 30)]);
  assert.deepEqual(counts(await store.query(projectId, funnel)), [4, 2]);
});

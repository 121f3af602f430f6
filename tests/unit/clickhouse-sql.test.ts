import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";
import { toClickHouseRow } from "../../src/backends/clickhouse/clickhouse.rows.js";
import { applySchema, rollupsOf } from "../../src/backends/clickhouse/clickhouse.schema.js";
import { ClickHouseQueryBuilder } from "../../src/query/clickhouse-builder.js";
import { parseQuerySpec } from "../../src/query/spec.js";
import { SqlQueryRunner } from "../../src/query/sql-runner.js";
import { makeDataset, storedEvent } from "../conformance/dataset.js";
import { identityCases, identityEvents, makeIdentityDataset } from "../conformance/identity-dataset.js";
import { checkEventsQueries, queryCases } from "../conformance/query-cases.js";
import { Chdb } from "../helpers/chdb.js";

// The ClickHouse SQL (schema and every query kind) on current ClickHouse through chdb: production
// images run current releases, while the integration tests run it on the 18.16 server. The answers
// must be the conformance suite's, not just run.
const chdb = new Chdb();
const database = "tidemark_chdb_test";
const table = `${database}.events`;
const projectId = randomUUID();
const data = makeDataset();
const identityProject = randomUUID();
const people = makeIdentityDataset();
const runner = new SqlQueryRunner(new ClickHouseQueryBuilder(table, rollupsOf(database)), ({ sql, tables }) =>
  chdb.query(sql, tables),
);

before(async () => {
  await applySchema(chdb, database);
  // Twice: the schema is idempotent.
  await applySchema(chdb, database);
  await chdb.insert(
    table,
    data.map((e) => row(projectId, e)),
  );
  await chdb.insert(
    table,
    people.map((e) =>
      toClickHouseRow({
        projectId: identityProject,
        uuid: e.uuid,
        event: e.event,
        distinctId: String(e.distinct_id),
        timestamp: e.timestamp,
        properties: JSON.stringify(e.properties),
        receivedAt: e.timestamp + 1000,
      }),
    ),
  );
});
after(() => chdb.close());

function row(project: string, e: (typeof data)[number]) {
  return toClickHouseRow(storedEvent(project, e));
}

test("chdb: every query kind's ClickHouse SQL gives the conformance answers on current ClickHouse", async (t) => {
  for (const c of queryCases(data)) {
    await t.test(c.name, async () => {
      assert.deepEqual(await runner.query(projectId, parseQuerySpec(c.spec)), c.expected);
    });
  }
  await t.test("events: newest first, cursor pagination, filters", () =>
    checkEventsQueries(data, async (spec) => (await runner.query(projectId, parseQuerySpec(spec))) as never),
  );
});

test("chdb: persons and person properties give the identity conformance answers on current ClickHouse", async (t) => {
  for (const c of identityCases(people)) {
    await t.test(c.name, async () => {
      assert.deepEqual(await runner.query(identityProject, parseQuerySpec(c.spec)), c.expected);
    });
  }
  await t.test("events filtered by a person property", async () => {
    const { expected, actual } = await identityEvents(
      people,
      async (spec) => (await runner.query(identityProject, parseQuerySpec(spec))) as never,
    );
    assert.deepEqual(actual, expected);
  });
});

test("chdb: properties kept as columns of their own give the same answers", async (t) => {
  // Created before the rows go in, so the insert writes the columns (the 18.16 integration test
  // covers columns added after).
  const withColumns = "tidemark_chdb_columns";
  const properties = ["plan", "path", "price", "beta", "odd/name ~ $.x"];
  await applySchema(chdb, withColumns, properties);
  await chdb.insert(
    `${withColumns}.events`,
    data.map((e) => row(projectId, e)),
  );
  const columns = new SqlQueryRunner(
    new ClickHouseQueryBuilder(`${withColumns}.events`, rollupsOf(withColumns), properties),
    ({ sql, tables }) => chdb.query(sql, tables),
  );
  for (const c of queryCases(data)) {
    await t.test(c.name, async () => {
      assert.deepEqual(await columns.query(projectId, parseQuerySpec(c.spec)), c.expected);
    });
  }
  await t.test("events: newest first, cursor pagination, filters", () =>
    checkEventsQueries(data, async (spec) => (await columns.query(projectId, parseQuerySpec(spec))) as never),
  );
});

test("chdb: another project's rows never reach an answer", async () => {
  const answer = await runner.query(
    randomUUID(),
    parseQuerySpec({ kind: "top_events", from: "2000-01-01", to: "2100-01-01" }),
  );
  assert.deepEqual(answer, { events: [] });
});

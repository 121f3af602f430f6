import assert from "node:assert/strict";
import { test } from "node:test";
import { parseQuerySpec, type QuerySpec } from "../../src/query/spec.js";
import { SqlQueryBuilder, type SqlStatement } from "../../src/query/sql-builder.js";
import type { SqlDialect } from "../../src/query/sql-dialect.js";

/** A dialect that writes each operation by name, so the builder's own SQL can be read exactly. */
const dialect: SqlDialect = {
  userColumn: "distinct_id",
  propertyPathValue: (name) => `path:${name}`,
  propertyText: (column, path) => `text(${column}, ${path})`,
  propertyNumber: (column, path) => `num(${column}, ${path})`,
  timestampFromMs: (ref) => `ts(${ref})`,
  epochMs: (expr) => `ms(${expr})`,
  truncate: (unit, expr) => `trunc_${unit}(${expr})`,
  addSeconds: (expr, ref) => `plus(${expr}, ${ref})`,
  uuid: (ref) => `uuid(${ref})`,
  binaryOrder: (expr) => `bin(${expr})`,
  propertyJson: (column, path) => `json(${column}, ${path})`,
  encodePeople: (rows) => JSON.stringify(rows),
  peopleRelation: (ref) => `people(${ref})`,
};
const builder = new SqlQueryBuilder(dialect);
const PROJECT = "00000000-0000-4000-8000-000000000001";
const FROM = Date.UTC(2026, 0, 1);
const TO = Date.UTC(2026, 1, 1);
const range = { from: "2026-01-01", to: "2026-02-01" };
/** A property name written to break out of any quoting: it must only ever be a bound value. */
const HOSTILE = `a'"); DROP TABLE events; -- $1`;

function spec<K extends QuerySpec["kind"]>(
  body: { kind: K } & Record<string, unknown>,
): Extract<QuerySpec, { kind: K }> {
  return parseQuerySpec(body) as Extract<QuerySpec, { kind: K }>;
}

/** Every placeholder the SQL uses is bound, every bound value is used, and no user text is in the SQL. */
function assertBound(statement: SqlStatement, userText: string[] = []): void {
  const used = new Set([...statement.sql.matchAll(/\$(\d+)/g)].map((m) => Number(m[1])));
  assert.deepEqual(
    [...used].sort((a, b) => a - b),
    statement.params.map((_, i) => i + 1),
    "placeholders and parameters match one to one",
  );
  for (const text of userText)
    assert.ok(!statement.sql.includes(text), `${text} is not spliced into the SQL`);
}

test("trends: the range, event, filters, breakdown and limit are all bound parameters", () => {
  const q = spec({
    kind: "trends",
    event: "Buy",
    math: "unique_users",
    interval: "week",
    ...range,
    filters: [
      { property: HOSTILE, op: "eq", value: "x" },
      { property: "price", op: "gt", value: 10 },
      { property: "plan", op: "is_set" },
    ],
    breakdown: HOSTILE,
    limit: 5,
  });
  const statement = builder.trends(PROJECT, q);
  assert.deepEqual(statement.params, [
    PROJECT,
    FROM,
    TO,
    "Buy",
    `path:${HOSTILE}`,
    "x",
    "path:price",
    10,
    "path:plan",
    `path:${HOSTILE}`,
    5,
  ]);
  assert.match(
    statement.sql,
    /project_id = uuid\(\$1\) AND timestamp >= ts\(\$2\) AND timestamp < ts\(\$3\) AND event = \$4 AND text\(properties, \$5\) = \$6 AND num\(properties, \$7\) > \$8 AND text\(properties, \$9\) IS NOT NULL/,
  );
  assert.match(statement.sql, /trunc_week\(timestamp\) AS bucket, text\(properties, \$10\) AS bv/);
  assert.match(statement.sql, /count\(DISTINCT distinct_id\)/);
  assert.match(statement.sql, /LIMIT \$11/);
  assertBound(statement, [HOSTILE, "Buy"]);
});

test("funnel: each step is a bound event within the bound window from the first step", () => {
  const q = spec({ kind: "funnel", steps: ["View", "Cart", "Cart"], window_seconds: 3600, ...range });
  const statement = builder.funnel(PROJECT, q);
  assert.deepEqual(statement.params, [
    3600,
    PROJECT,
    FROM,
    TO,
    "View",
    PROJECT,
    FROM,
    TO,
    "Cart",
    PROJECT,
    FROM,
    TO,
    "Cart",
  ]);
  // The window ends at the first step's time plus the bound window, computed once a user.
  assert.match(statement.sql, /SELECT distinct_id, t, plus\(t, \$1\) AS ends_at FROM/);
  assert.match(statement.sql, /e\.timestamp >= p\.t AND e\.timestamp <= p\.ends_at/);
  assert.equal(statement.userGroups, undefined, "one events table: nothing grouped below a union");
  assert.match(statement.sql, /e\.timestamp > p\.t/, "a repeated step must come strictly later");
  assert.match(statement.sql, /\(SELECT count\(\*\) FROM s2\) AS c2/);
  assertBound(statement, ["View", "Cart"]);
});

test("retention: cohorts by first start event, returns by bound return event and range", () => {
  const q = spec({
    kind: "retention",
    start_event: "Signup",
    return_event: "Login",
    interval: "day",
    periods: 3,
    ...range,
  });
  const cohorts = builder.retentionCohorts(PROJECT, q);
  assert.deepEqual(cohorts.params, [PROJECT, FROM, TO, "Signup"]);
  assert.match(cohorts.sql, /trunc_day\(first_ts\) AS cohort/);
  assertBound(cohorts, ["Signup"]);
  const returns = builder.retentionReturns(PROJECT, q, FROM, TO + 3 * 86_400_000);
  assert.deepEqual(returns.params, [
    PROJECT,
    FROM,
    TO,
    "Signup",
    PROJECT,
    FROM,
    TO + 3 * 86_400_000,
    "Login",
  ]);
  assertBound(returns, ["Signup", "Login"]);
});

test("events: filters, distinct_id and the cursor are bound; one row more than the limit is read", () => {
  const cursor = Buffer.from(`${FROM}:00000000-0000-4000-8000-00000000000a`).toString("base64url");
  const q = spec({
    kind: "events",
    distinct_id: "user'1",
    filters: [{ property: HOSTILE, op: "contains", value: "%" }],
    limit: 20,
    cursor,
  });
  const statement = builder.events(PROJECT, q);
  assert.deepEqual(statement.params, [
    PROJECT,
    "user'1",
    `path:${HOSTILE}`,
    "%",
    FROM,
    "00000000-0000-4000-8000-00000000000a",
    21,
  ]);
  assert.match(statement.sql, /strpos\(text\(properties, \$3\), \$4\) > 0/);
  assert.match(
    statement.sql,
    /\(timestamp < ts\(\$5\) OR \(timestamp = ts\(\$5\) AND uuid < uuid\(\$6\)\)\)/,
  );
  assert.match(statement.sql, /ORDER BY timestamp DESC, uuid DESC LIMIT \$7/);
  assertBound(statement, [HOSTILE, "user'1"]);
});

test("top events and top values: the property is a bound path, never an identifier", () => {
  const top = builder.topEvents(PROJECT, spec({ kind: "top_events", ...range, limit: 3 }));
  assert.deepEqual(top.params, [PROJECT, FROM, TO, 3]);
  assert.match(top.sql, /GROUP BY event ORDER BY count DESC, bin\(event\) ASC LIMIT \$4/);
  assertBound(top);
  const values = builder.topValues(
    PROJECT,
    spec({
      kind: "top_values",
      property: HOSTILE,
      event: "Buy",
      ...range,
      filters: [{ property: "n", op: "neq", value: 1 }],
    }),
  );
  assert.deepEqual(values.params, [PROJECT, FROM, TO, "Buy", "path:n", "1", `path:${HOSTILE}`, 10]);
  assert.match(values.sql, /text\(properties, \$5\) IS DISTINCT FROM \$6/);
  assert.match(values.sql, /SELECT text\(properties, \$7\) AS value/);
  assertBound(values, [HOSTILE]);
});

test("people: bound as one parameter and joined only when the query has rows to join", () => {
  const people = {
    persons: true,
    rows: [{ id: "anon'1", person: "user'1", properties: { plan: HOSTILE } }],
  };
  const q = spec({
    kind: "trends",
    math: "unique_users",
    ...range,
    breakdown: "plan",
    breakdown_type: "person",
    filters: [{ property: HOSTILE, op: "eq", value: "x", type: "person" }],
  });
  const statement = builder.trends(PROJECT, q, people);
  assert.equal(statement.params[0], JSON.stringify(people.rows));
  assert.match(statement.sql, /WITH people AS \(people\(\$1\)\)/);
  assert.match(statement.sql, /FROM events e LEFT JOIN people m ON m\.id = e\.distinct_id/);
  assert.match(statement.sql, /coalesce\(m\.person, e\.distinct_id\) AS distinct_id/);
  assert.match(
    statement.sql,
    /text\(m\.properties, \$\d+\) = \$\d+/,
    "a person filter reads the person's properties",
  );
  assert.match(statement.sql, /text\(m\.properties, \$\d+\) AS bv/);
  assertBound(statement, [HOSTILE, "anon'1", "user'1"]);

  // Ids that are their own person, with a person filter and no person having the property.
  const none = builder.trends(PROJECT, q, { persons: false, rows: [] });
  assert.doesNotMatch(none.sql, /people|JOIN people/);
  assert.match(none.sql, /CAST\(NULL AS VARCHAR\) = \$\d+/);
  assertBound(none, [HOSTILE]);

  // Properties only: the join, but every id counts as itself.
  const propertiesOnly = builder.trends(PROJECT, q, { persons: false, rows: people.rows });
  assert.match(propertiesOnly.sql, /e\.distinct_id AS distinct_id|, e\.distinct_id\n/);
  assert.doesNotMatch(propertiesOnly.sql, /coalesce\(m\.person/);
});

test("people: a funnel's steps and retention's cohorts and returns all follow persons", () => {
  const people = { persons: true, rows: [{ id: "a", person: "b", properties: null }] };
  const funnel = builder.funnel(PROJECT, spec({ kind: "funnel", steps: ["View", "Buy"], ...range }), people);
  assert.match(
    funnel.sql,
    /\(SELECT coalesce\(m\.person, e\.distinct_id\) AS distinct_id, min\(e\.timestamp\) AS t FROM events e LEFT JOIN people m/,
  );
  // Later steps find a person's events by its ids, joining events on their own column.
  assert.match(
    funnel.sql,
    /JOIN \(SELECT person, id FROM people WHERE id <> person UNION ALL SELECT distinct_id, distinct_id FROM s0\) x ON x\.person = p\.distinct_id JOIN events e ON e\.distinct_id = x\.id/,
  );
  assert.equal(funnel.people, true);
  assertBound(funnel, ["View", "Buy"]);
  const q = spec({ kind: "retention", start_event: "S", return_event: "R", ...range });
  for (const statement of [
    builder.retentionCohorts(PROJECT, q, people),
    builder.retentionReturns(PROJECT, q, FROM, TO, people),
    builder.retention(PROJECT, q, FROM, TO, people),
  ]) {
    assert.match(statement.sql, /GROUP BY coalesce\(m\.person, e\.distinct_id\)/);
    assertBound(statement);
  }
  for (const statement of [
    builder.retentionReturns(PROJECT, q, FROM, TO, people),
    builder.retention(PROJECT, q, FROM, TO, people),
  ])
    assert.match(statement.sql, /SELECT DISTINCT coalesce\(m\.person, e\.distinct_id\) AS distinct_id/);
});

test("rollups: unique users and retention read the daily users only where they are exact", () => {
  const rollups = {
    eventCounts: "COUNTS",
    userDays: {
      relation: "USER_DAYS",
      union: (set: string) => `union(${set})`,
      size: (set: string) => `size(${set})`,
      intersect: (a: string, b: string) => `and(${a}, ${b})`,
      minus: (a: string, b: string) => `minus(${a}, ${b})`,
    },
  };
  const rolled = new SqlQueryBuilder(dialect, undefined, {}, rollups);
  const reads = (statement: SqlStatement) => {
    assertBound(statement, ["Buy"]);
    return statement.sql.includes("USER_DAYS");
  };
  const trends = (extra: Record<string, unknown>) =>
    rolled.trends(PROJECT, spec({ kind: "trends", event: "Buy", math: "unique_users", ...range, ...extra }));
  assert.ok(reads(trends({ interval: "day" })));
  assert.ok(reads(trends({ interval: "week" })));
  assert.ok(!reads(trends({ interval: "hour" })), "an hour is not a union of days");
  assert.ok(!reads(trends({ interval: "day", breakdown: "plan" })));
  assert.ok(!reads(trends({ interval: "day", filters: [{ property: "plan", op: "eq", value: "pro" }] })));
  assert.ok(!reads(trends({ interval: "day", from: "2026-01-01T06:00:00Z" })), "a part of a day");
  assert.ok(!reads(trends({ interval: "day", to: "2026-01-31T23:59:59Z" })), "a part of a day");
  assert.ok(!reads(trends({ interval: "day", math: "total" })), "totals read the hourly counts");
  const q = spec({ kind: "trends", event: "Buy", math: "unique_users", interval: "day", ...range });
  const row = { id: "anon", person: "alice", properties: {} };
  assert.ok(!reads(rolled.trends(PROJECT, q, { persons: true, rows: [row] })), "a person merges ids");
  assert.ok(reads(rolled.trends(PROJECT, q, { persons: true, rows: [] })), "no person merges any");
  // The day's sets are read between the bound range, and the range's users united from the buckets.
  const statement = trends({ interval: "week" });
  assert.match(statement.sql, /trunc_week\(day\) AS bucket, chunk, union\(users\)/);
  assert.match(statement.sql, /day >= ts\(\$2\) AND day < ts\(\$3\) AND event = \$4/);
  assert.deepEqual(statement.params, [PROJECT, FROM, TO, "Buy"]);

  const retention = (extra: Record<string, unknown>) => {
    const r = spec({
      kind: "retention",
      start_event: "Buy",
      return_event: "Buy",
      periods: 4,
      ...range,
      ...extra,
    });
    return rolled.retention(PROJECT, r, r.fromMs, r.toMs + 4 * 86_400_000);
  };
  assert.ok(reads(retention({ interval: "day" })));
  assert.ok(reads(retention({ interval: "week" })));
  assert.ok(!reads(retention({ interval: "day", filters: [{ property: "plan", op: "is_set" }] })));
  assert.ok(!reads(retention({ interval: "day", from: "2026-01-01T00:00:01Z" })));
  const cohorts = retention({ interval: "week" }).sql;
  // A user's cohort is the first period holding it: the period's set less those before it.
  assert.match(cohorts, /minus\(users, earlier\)/);
  assert.match(
    cohorts,
    /union\(users\) OVER \(PARTITION BY chunk ORDER BY cohort ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING\)/,
  );
  assert.match(cohorts, /size\(and\(c\.users, r\.users\)\)/);
});

test("events: an engine keeping events in several tables pages each newest-first and merges the pages", () => {
  const split = new SqlQueryBuilder({ ...dialect, eventTables: ["events_a", "events_b"] });
  const q = spec({ kind: "events", event: "Buy", limit: 10 });
  const statement = split.events(PROJECT, q);
  assertBound(statement, ["Buy"]);
  const pages = [
    ...statement.sql.matchAll(
      /FROM (events_\w) WHERE .*? ORDER BY timestamp DESC, uuid DESC LIMIT \$(\d+)\)/gs,
    ),
  ];
  assert.deepEqual(
    pages.map((m) => m[1]),
    ["events_a", "events_b"],
  );
  // The same bound page size for each table and for the merge.
  const limit = `$${statement.params.indexOf(11) + 1}`;
  assert.ok(pages.every((m) => `$${m[2]}` === limit));
  assert.match(statement.sql, new RegExp(`ORDER BY sort_ts DESC, sort_uuid DESC LIMIT \\${limit}\\s*$`));
  // With people, each table is joined to them.
  const people = { persons: true, rows: [{ id: "anon", person: "alice", properties: {} }] };
  const joined = split.events(PROJECT, spec({ kind: "events", distinct_id: "alice", limit: 10 }), people);
  assert.match(joined.sql, /FROM events_a e LEFT JOIN people m ON m\.id = e\.distinct_id/);
  assert.match(joined.sql, /FROM events_b e LEFT JOIN people m ON m\.id = e\.distinct_id/);
});

test("funnel: an engine keeping events in several tables groups the first step in the first table alone", () => {
  const split = new SqlQueryBuilder({ ...dialect, eventTables: ["events_a", "events_b"] });
  const q = spec({ kind: "funnel", steps: ["View", "Buy"], window_seconds: 60, ...range });
  const statement = split.funnel(PROJECT, q);
  assertBound(statement, ["View", "Buy"]);
  // The first table grouped below the union, where its user column keeps its statistics; the
  // other table's users joined to it, each user's first of both.
  assert.match(
    statement.sql,
    /SELECT coalesce\(m\.distinct_id, o\.distinct_id\) AS distinct_id, least\(m\.t, o\.t\) AS t\s+FROM \(SELECT distinct_id, min\(timestamp\) AS t FROM events_a e WHERE (e\.project_id = uuid\(\$2\) AND e\.timestamp >= ts\(\$3\) AND e\.timestamp < ts\(\$4\) AND e\.event = \$5) GROUP BY distinct_id\) m FULL JOIN \(SELECT distinct_id, min\(timestamp\) AS t FROM events_b e WHERE \1 GROUP BY distinct_id\) o ON o\.distinct_id = m\.distinct_id/,
  );
  // Later steps read the union of both.
  assert.match(statement.sql, /FROM s0 p JOIN events e/);
  assert.deepEqual(statement.userGroups, { projectId: PROJECT, event: "View", fromMs: FROM, toMs: TO });
  // With people the first step groups by person, an expression: read through the union, no hint.
  const people = { persons: true, rows: [{ id: "a", person: "b", properties: null }] };
  const joined = split.funnel(PROJECT, q, people);
  assert.match(joined.sql, /min\(e\.timestamp\) AS t FROM events e LEFT JOIN people m/);
  assert.equal(joined.userGroups, undefined);
});

import assert from "node:assert/strict";
import {
  DATASET_START,
  type DataEvent,
  type Filter,
  refEvents,
  refFunnel,
  refRetention,
  refTopEvents,
  refTopValues,
  refTrends,
} from "./dataset.js";

/** One query of the conformance suite and its answer, computed independently (without took_ms). */
export interface QueryCase {
  name: string;
  spec: Record<string, unknown>;
  expected: unknown;
}

/**
 * Every query the conformance suite asks of the conformance dataset, with the expected answers,
 * so a store can be checked directly (tests/integration/clickhouse.integration.test.ts) as well as
 * through a running pipeline (pipeline.conformance.ts).
 */
export function queryCases(data: readonly DataEvent[]): QueryCase[] {
  const from = DATASET_START;
  const to = DATASET_START + 28 * 86_400_000;
  const range = { from: new Date(from).toISOString(), to: new Date(to).toISOString() };
  const cases: QueryCase[] = [];
  const add = (name: string, spec: Record<string, unknown>, expected: unknown) =>
    cases.push({ name, spec, expected });

  for (const interval of ["day", "week"] as const) {
    for (const math of ["total", "unique_users"] as const) {
      add(
        `trends ${math} per ${interval}`,
        { kind: "trends", math, interval, ...range },
        refTrends(data, { math, interval, from, to, limit: 10 }),
      );
      add(
        `trends ${math} per ${interval} of Purchase`,
        { kind: "trends", event: "Purchase", math, interval, ...range },
        refTrends(data, { event: "Purchase", math, interval, from, to, limit: 10 }),
      );
    }
  }
  const day = { from: DATASET_START + 86_400_000, to: DATASET_START + 3 * 86_400_000 };
  add(
    "trends per hour",
    {
      kind: "trends",
      interval: "hour",
      from: new Date(day.from).toISOString(),
      to: new Date(day.to).toISOString(),
    },
    refTrends(data, { math: "total", interval: "hour", ...day, limit: 10 }),
  );

  const filterSets: Filter[][] = [
    [{ property: "plan", op: "eq", value: "pro" }],
    [{ property: "plan", op: "neq", value: "pro" }],
    [{ property: "path", op: "contains", value: "/b" }],
    [{ property: "price", op: "gt", value: 50 }],
    [{ property: "price", op: "lt", value: 50 }],
    [{ property: "beta", op: "is_set" }],
    [{ property: "beta", op: "eq", value: true }],
    [{ property: "odd/name ~ $.x", op: "eq", value: "weird" }],
    [
      { property: "plan", op: "eq", value: "team" },
      { property: "path", op: "neq", value: "/" },
    ],
  ];
  for (const filters of filterSets) {
    add(
      `trends filtered by ${JSON.stringify(filters)}`,
      { kind: "trends", interval: "week", filters, ...range },
      refTrends(data, { math: "total", interval: "week", from, to, filters, limit: 10 }),
    );
  }
  for (const [breakdown, limit] of [
    ["plan", 10],
    ["path", 3],
    ["beta", 10],
    ["price", 5],
  ] as const) {
    add(
      `trends broken down by ${breakdown}`,
      { kind: "trends", interval: "week", breakdown, limit, ...range },
      refTrends(data, { math: "total", interval: "week", from, to, breakdown, limit }),
    );
    add(
      `trends unique users broken down by ${breakdown}`,
      { kind: "trends", math: "unique_users", interval: "day", breakdown, limit, ...range },
      refTrends(data, { math: "unique_users", interval: "day", from, to, breakdown, limit }),
    );
  }

  const funnels = [
    { steps: ["Page View", "Click", "Sign Up"], window_seconds: 3600 },
    { steps: ["Page View", "Click", "Sign Up", "Add To Cart", "Purchase"], window_seconds: 86_400 },
    { steps: ["Page View", "Page View", "Purchase"], window_seconds: 7 * 86_400 },
    { steps: ["Sign Up", "Purchase"], window_seconds: 600 },
  ];
  for (const c of funnels) {
    add(
      `funnel ${c.steps.join(" > ")}`,
      { kind: "funnel", ...c, ...range },
      refFunnel(data, { ...c, from, to }),
    );
  }
  const free: Filter[] = [{ property: "plan", op: "eq", value: "free" }];
  add(
    "funnel with a filter",
    { kind: "funnel", steps: ["Page View", "Click"], window_seconds: 86_400, filters: free, ...range },
    refFunnel(data, { steps: ["Page View", "Click"], window_seconds: 86_400, from, to, filters: free }),
  );

  const retention = [
    { start_event: "Page View", return_event: "Click", interval: "day", periods: 7 },
    { start_event: "Sign Up", return_event: "Purchase", interval: "week", periods: 4 },
  ] as const;
  for (const r of retention) {
    add(
      `retention per ${r.interval}`,
      { kind: "retention", ...r, ...range },
      refRetention(data, { ...r, from, to }),
    );
  }

  add("top events", { kind: "top_events", ...range, limit: 3 }, refTopEvents(data, { from, to, limit: 3 }));
  add(
    "top values of path",
    { kind: "top_values", property: "path", ...range },
    refTopValues(data, { property: "path", from, to, limit: 10 }),
  );
  add(
    "top values of price for Purchase",
    { kind: "top_values", property: "price", event: "Purchase", ...range, limit: 5 },
    refTopValues(data, { property: "price", event: "Purchase", from, to, limit: 5 }),
  );
  return cases;
}

/** The events query: newest first, cursor pagination, a filter; `ask` answers one spec. */
export async function checkEventsQueries(
  data: readonly DataEvent[],
  ask: (spec: Record<string, unknown>) => Promise<{
    events: { uuid: string; properties: unknown; timestamp: string; distinct_id: string }[];
    next_cursor: string | null;
  }>,
): Promise<void> {
  const expected = refEvents(data, { distinct_id: "user_3" });
  const seen: string[] = [];
  let cursor: string | undefined;
  for (let page = 0; page < 50; page++) {
    const answer = await ask({
      kind: "events",
      distinct_id: "user_3",
      limit: 7,
      ...(cursor ? { cursor } : {}),
    });
    seen.push(...answer.events.map((e) => e.uuid));
    cursor = answer.next_cursor ?? undefined;
    if (!cursor) break;
  }
  assert.deepEqual(
    seen,
    expected.map((e) => e.uuid),
  );
  const filters: Filter[] = [{ property: "price", op: "gt", value: 100 }];
  const filtered = await ask({ kind: "events", event: "Purchase", filters, limit: 1000 });
  const expectedFiltered = refEvents(data, { event: "Purchase", filters });
  assert.deepEqual(
    filtered.events.map((e) => e.uuid),
    expectedFiltered.map((e) => e.uuid),
  );
  const first = filtered.events[0];
  const source = expectedFiltered[0];
  assert.ok(first && source);
  assert.deepEqual(first.properties, source.properties);
  assert.equal(first.timestamp, new Date(source.timestamp).toISOString());
  assert.equal(first.distinct_id, source.distinct_id);
}

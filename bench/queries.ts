/**
 * The query of every kind the benchmarks time, over the bench dataset (100K users, 10 event
 * names, 2026-08-01 to 2026-10-30): bench/run.ts (embedded) and bench/clickhouse.ts use the same.
 */
/** The bench dataset's vocabulary: event names (skewed by repetition), paths, plans, browsers. */
export const NAMES = [
  "Page View",
  "Page View",
  "Page View",
  "Click",
  "Click",
  "Sign Up",
  "Add To Cart",
  "Purchase",
  "Search",
  "Logout",
];
export const PATHS = ["/", "/pricing", "/docs", "/blog", "/checkout", "/signup"];
export const PLANS = ["free", "pro", "team"];
export const BROWSERS = ["Chrome", "Firefox", "Safari", "Edge"];
/** The dataset's 90 days, from 2026-08-01 UTC. */
export const DATASET_START_MS = Date.UTC(2026, 7, 1);
export const DATASET_SPAN_MS = 90 * 86_400_000;

export const QUERIES: [string, Record<string, unknown>][] = [
  [
    "trends total/day 30d",
    { kind: "trends", math: "total", interval: "day", from: "2026-09-01", to: "2026-10-01" },
  ],
  [
    "trends unique users/day 30d",
    { kind: "trends", math: "unique_users", interval: "day", from: "2026-09-01", to: "2026-10-01" },
  ],
  [
    "trends Purchase/week 90d",
    { kind: "trends", event: "Purchase", interval: "week", from: "2026-08-01", to: "2026-11-01" },
  ],
  [
    "trends breakdown plan/day 30d",
    {
      kind: "trends",
      event: "Page View",
      interval: "day",
      breakdown: "plan",
      from: "2026-09-01",
      to: "2026-10-01",
    },
  ],
  [
    "trends filter price>100/hour 7d",
    {
      kind: "trends",
      interval: "hour",
      from: "2026-09-01",
      to: "2026-09-08",
      filters: [{ property: "price", op: "gt", value: 100 }],
    },
  ],
  [
    "funnel 3 steps 1d window 30d",
    {
      kind: "funnel",
      steps: ["Page View", "Add To Cart", "Purchase"],
      window_seconds: 86400,
      from: "2026-09-01",
      to: "2026-10-01",
    },
  ],
  [
    "retention week x8 90d",
    {
      kind: "retention",
      start_event: "Sign Up",
      return_event: "Purchase",
      interval: "week",
      periods: 8,
      from: "2026-08-01",
      to: "2026-11-01",
    },
  ],
  ["events newest 100", { kind: "events", limit: 100 }],
  ["events of one user", { kind: "events", distinct_id: "user_42", limit: 100 }],
  ["top events 30d", { kind: "top_events", from: "2026-09-01", to: "2026-10-01" }],
  ["top values path 30d", { kind: "top_values", property: "path", from: "2026-09-01", to: "2026-10-01" }],
];

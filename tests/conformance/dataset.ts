/** A deterministic event dataset for the conformance suite, and reference answers in plain JS. */

import type { StoredEvent } from "../../src/core/event.js";

export interface DataEvent {
  uuid: string;
  event: string;
  distinct_id: string;
  timestamp: number;
  properties: Record<string, string | number | boolean>;
}

/** A dataset event as a store holds it for `projectId`, received `receivedAfterMs` after its time. */
export function storedEvent(projectId: string, e: DataEvent, receivedAfterMs = 1000): StoredEvent {
  return {
    projectId,
    uuid: e.uuid,
    event: e.event,
    distinctId: e.distinct_id,
    timestamp: e.timestamp,
    properties: JSON.stringify(e.properties),
    receivedAt: e.timestamp + receivedAfterMs,
  };
}

function mulberry32(seed: number): () => number {
  let a = seed;
  return () => {
    a |= 0;
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function uuidFrom(random: () => number): string {
  const hex = Array.from({ length: 32 }, () => Math.floor(random() * 16).toString(16)).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-a${hex.slice(17, 20)}-${hex.slice(20)}`;
}

export const DATASET_START = Date.UTC(2026, 9, 5); // a Monday
export const DATASET_DAYS = 21;
const NAMES = ["Page View", "Click", "Sign Up", "Add To Cart", "Purchase"] as const;
const PATHS = ["/", "/pricing", "/docs", "/blog/a/b", "/checkout"];
const PLANS = ["free", "pro", "team"];

/** About 1,500 events by 60 users over three weeks, with funnels and returns in them. */
export function makeDataset(seed = 42): DataEvent[] {
  const random = mulberry32(seed);
  const events: DataEvent[] = [];
  for (let user = 0; user < 60; user++) {
    const distinctId = `user_${user}`;
    const plan = PLANS[user % 3]!;
    const sessions = 1 + Math.floor(random() * 6);
    for (let s = 0; s < sessions; s++) {
      let t = DATASET_START + Math.floor(random() * DATASET_DAYS * 86_400_000);
      const steps = 1 + Math.floor(random() * 8);
      for (let i = 0; i < steps; i++) {
        // Mostly funnel-ordered, sometimes out of order, sometimes far apart.
        const name =
          random() < 0.7
            ? NAMES[Math.min(i, NAMES.length - 1)]!
            : NAMES[Math.floor(random() * NAMES.length)]!;
        t += Math.floor(random() * (random() < 0.1 ? 3 * 86_400_000 : 600_000));
        const properties: DataEvent["properties"] = {
          plan,
          path: PATHS[Math.floor(random() * PATHS.length)]!,
        };
        if (name === "Purchase" || name === "Add To Cart")
          properties.price = Math.round(random() * 20000) / 100;
        if (random() < 0.3) properties.beta = random() < 0.5;
        if (random() < 0.2) properties["odd/name ~ $.x"] = "weird";
        events.push({
          uuid: uuidFrom(random),
          event: name,
          distinct_id: distinctId,
          timestamp: t,
          properties,
        });
      }
    }
  }
  return events;
}

export type Filter = {
  property: string;
  op: "eq" | "neq" | "contains" | "gt" | "lt" | "is_set";
  value?: string | number | boolean;
};

function text(value: unknown): string | null {
  if (value === undefined || value === null) return null;
  return typeof value === "string" ? value : JSON.stringify(value);
}

export function matches(e: DataEvent, filters: readonly Filter[] = []): boolean {
  return filters.every((f) => {
    const raw = e.properties[f.property];
    const t = text(raw);
    switch (f.op) {
      case "eq":
        return t === String(f.value);
      case "neq":
        return t !== String(f.value);
      case "contains":
        return t?.includes(String(f.value)) ?? false;
      case "gt":
        return typeof raw === "number" && raw > Number(f.value);
      case "lt":
        return typeof raw === "number" && raw < Number(f.value);
      case "is_set":
        return t !== null;
    }
    return false;
  });
}

const UNIT_MS = { hour: 3_600_000, day: 86_400_000, week: 604_800_000 };
export function bucket(unit: "hour" | "day" | "week", ms: number): number {
  const offset = unit === "week" ? 4 * 86_400_000 : 0;
  return Math.floor((ms - offset) / UNIT_MS[unit]) * UNIT_MS[unit] + offset;
}
const compareBytes = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));

export function refTrends(
  data: readonly DataEvent[],
  q: {
    event?: string;
    math: "total" | "unique_users";
    interval: "hour" | "day" | "week";
    from: number;
    to: number;
    filters?: Filter[];
    breakdown?: string;
    limit: number;
  },
) {
  const rows = data.filter(
    (e) =>
      e.timestamp >= q.from &&
      e.timestamp < q.to &&
      (!q.event || e.event === q.event) &&
      matches(e, q.filters),
  );
  const groups = new Map<string | null, DataEvent[]>();
  for (const e of rows) {
    const key = q.breakdown ? text(e.properties[q.breakdown]) : null;
    groups.set(key, [...(groups.get(key) ?? []), e]);
  }
  const measure = (list: DataEvent[]) =>
    q.math === "total" ? list.length : new Set(list.map((e) => e.distinct_id)).size;
  const buckets: number[] = [];
  for (let t = bucket(q.interval, q.from); t < q.to; t += UNIT_MS[q.interval]) buckets.push(t);
  let series = [...groups.entries()].map(([key, list]) => ({
    breakdown_value: key,
    total: measure(list),
    points: buckets.map((t) => ({
      t: new Date(t).toISOString(),
      value: measure(list.filter((e) => bucket(q.interval, e.timestamp) === t)),
    })),
  }));
  series.sort(
    (a, b) =>
      b.total - a.total ||
      (a.breakdown_value === null
        ? 1
        : b.breakdown_value === null
          ? -1
          : compareBytes(a.breakdown_value, b.breakdown_value)),
  );
  series = series.slice(0, q.limit);
  if (!q.breakdown && series.length === 0)
    series = [
      {
        breakdown_value: null,
        total: 0,
        points: buckets.map((t) => ({ t: new Date(t).toISOString(), value: 0 })),
      },
    ];
  return { series };
}

export function refFunnel(
  data: readonly DataEvent[],
  q: { steps: string[]; window_seconds: number; from: number; to: number; filters?: Filter[] },
) {
  const inRange = data.filter((e) => e.timestamp >= q.from && e.timestamp < q.to && matches(e, q.filters));
  const byUser = new Map<string, DataEvent[]>();
  for (const e of inRange) byUser.set(e.distinct_id, [...(byUser.get(e.distinct_id) ?? []), e]);
  const counts = q.steps.map(() => 0);
  for (const events of byUser.values()) {
    const firsts = events.filter((e) => e.event === q.steps[0]).map((e) => e.timestamp);
    if (firsts.length === 0) continue;
    const t0 = Math.min(...firsts);
    let previous = t0;
    counts[0]!++;
    for (let i = 1; i < q.steps.length; i++) {
      const strict = q.steps[i] === q.steps[i - 1];
      const candidates = events
        .filter(
          (e) =>
            e.event === q.steps[i] &&
            (strict ? e.timestamp > previous : e.timestamp >= previous) &&
            e.timestamp <= t0 + q.window_seconds * 1000,
        )
        .map((e) => e.timestamp);
      if (candidates.length === 0) break;
      previous = Math.min(...candidates);
      counts[i]!++;
    }
  }
  const first = counts[0] ?? 0;
  return {
    steps: q.steps.map((event, i) => ({
      event,
      count: counts[i]!,
      conversion_rate: first === 0 ? 0 : Math.round((counts[i]! / first) * 10000) / 10000,
      drop_off: (i === 0 ? counts[0]! : counts[i - 1]!) - counts[i]!,
    })),
  };
}

export function refRetention(
  data: readonly DataEvent[],
  q: {
    start_event: string;
    return_event: string;
    interval: "day" | "week";
    periods: number;
    from: number;
    to: number;
    filters?: Filter[];
  },
) {
  const firstSeen = new Map<string, number>();
  for (const e of data) {
    if (e.event !== q.start_event || e.timestamp < q.from || e.timestamp >= q.to || !matches(e, q.filters))
      continue;
    firstSeen.set(
      e.distinct_id,
      Math.min(firstSeen.get(e.distinct_id) ?? Number.POSITIVE_INFINITY, e.timestamp),
    );
  }
  const cohorts: { cohort: string; size: number; values: number[] }[] = [];
  for (let c = bucket(q.interval, q.from); c < q.to; c += UNIT_MS[q.interval]) {
    const users = [...firstSeen.entries()].filter(([, t]) => bucket(q.interval, t) === c).map(([u]) => u);
    const values = Array.from({ length: q.periods }, (_, k) => {
      const period = c + k * UNIT_MS[q.interval];
      return users.filter((u) =>
        data.some(
          (e) =>
            e.distinct_id === u &&
            e.event === q.return_event &&
            matches(e, q.filters) &&
            bucket(q.interval, e.timestamp) === period,
        ),
      ).length;
    });
    cohorts.push({ cohort: new Date(c).toISOString(), size: users.length, values });
  }
  return { cohorts };
}

export function refTopEvents(
  data: readonly DataEvent[],
  q: { from: number; to: number; limit: number; filters?: Filter[] },
) {
  const counts = new Map<string, number>();
  for (const e of data)
    if (e.timestamp >= q.from && e.timestamp < q.to && matches(e, q.filters))
      counts.set(e.event, (counts.get(e.event) ?? 0) + 1);
  return {
    events: [...counts.entries()]
      .sort((a, b) => b[1] - a[1] || compareBytes(a[0], b[0]))
      .slice(0, q.limit)
      .map(([event, count]) => ({ event, count })),
  };
}

export function refTopValues(
  data: readonly DataEvent[],
  q: { property: string; event?: string; from: number; to: number; limit: number; filters?: Filter[] },
) {
  const counts = new Map<string, number>();
  for (const e of data) {
    if (
      e.timestamp < q.from ||
      e.timestamp >= q.to ||
      (q.event && e.event !== q.event) ||
      !matches(e, q.filters)
    )
      continue;
    const value = text(e.properties[q.property]);
    if (value !== null) counts.set(value, (counts.get(value) ?? 0) + 1);
  }
  return {
    values: [...counts.entries()]
      .sort((a, b) => b[1] - a[1] || compareBytes(a[0], b[0]))
      .slice(0, q.limit)
      .map(([value, count]) => ({ value, count })),
  };
}

/** Newest first, ties by uuid descending: the order of the events query. */
export function refEvents(
  data: readonly DataEvent[],
  q: { event?: string; distinct_id?: string; filters?: Filter[] },
) {
  return data
    .filter(
      (e) =>
        (!q.event || e.event === q.event) &&
        (!q.distinct_id || e.distinct_id === q.distinct_id) &&
        matches(e, q.filters),
    )
    .sort((a, b) => b.timestamp - a.timestamp || (a.uuid < b.uuid ? 1 : a.uuid > b.uuid ? -1 : 0));
}

import type { Interval } from "./api/types";

/** Date ranges of the views, in UTC like every bucket Tidemark answers with. */
export type RangeName = "today" | "7d" | "30d" | "90d" | "custom";
export const RANGE_NAMES: readonly RangeName[] = ["today", "7d", "30d", "90d", "custom"];
export const RANGE_LABELS: Record<RangeName, string> = {
  today: "Today",
  "7d": "7 days",
  "30d": "30 days",
  "90d": "90 days",
  custom: "Custom",
};

export interface Range {
  name: RangeName;
  from: Date;
  to: Date;
}

const DAY = 86_400_000;

function startOfUtcDay(ms: number): number {
  return Math.floor(ms / DAY) * DAY;
}

/** `[from, to)`: whole UTC days ending with today; custom takes `YYYY-MM-DD` days, both included. */
export function resolveRange(
  name: RangeName,
  customFrom?: string,
  customTo?: string,
  now = Date.now(),
): Range {
  const tomorrow = startOfUtcDay(now) + DAY;
  const days = name === "today" ? 1 : name === "7d" ? 7 : name === "30d" ? 30 : name === "90d" ? 90 : 0;
  if (name === "custom") {
    const from = Date.parse(`${customFrom ?? ""}T00:00:00Z`);
    const to = Date.parse(`${customTo ?? ""}T00:00:00Z`);
    if (Number.isFinite(from) && Number.isFinite(to) && to >= from) {
      return { name, from: new Date(from), to: new Date(to + DAY) };
    }
    return { name, from: new Date(tomorrow - 7 * DAY), to: new Date(tomorrow) };
  }
  return { name, from: new Date(tomorrow - days * DAY), to: new Date(tomorrow) };
}

/** The same length just before, for comparisons. */
export function previousRange(range: Range): Range {
  const length = range.to.getTime() - range.from.getTime();
  return { name: range.name, from: new Date(range.from.getTime() - length), to: range.from };
}

export function defaultInterval(range: Range): Interval {
  const days = (range.to.getTime() - range.from.getTime()) / DAY;
  return days <= 2 ? "hour" : days <= 120 ? "day" : "week";
}

export function isRangeName(value: string | null): value is RangeName {
  return value !== null && (RANGE_NAMES as readonly string[]).includes(value);
}

export function dayText(date: Date): string {
  return date.toISOString().slice(0, 10);
}

/** A bucket's label: the hour for hourly buckets, the day otherwise. */
export function bucketLabel(t: string, interval: Interval): string {
  const iso = new Date(t).toISOString();
  return interval === "hour" ? `${iso.slice(0, 10)} ${iso.slice(11, 16)}` : iso.slice(0, 10);
}

export function formatNumber(n: number): string {
  return n.toLocaleString("en-US");
}

/** The shapes of Tidemark's public API answers that the dashboard reads (README, "The HTTP API"). */

export type Plan = "FREE" | "PRO" | "ENTERPRISE";
export const PLANS: readonly Plan[] = ["FREE", "PRO", "ENTERPRISE"];

export interface Project {
  id: string;
  name: string;
  plan: Plan;
  rate_limit_rpm: number;
  created_at: string;
}

export interface ProjectWithKeys extends Project {
  api_key: string;
  read_key: string;
}

export interface Ledger {
  received: number;
  accepted: number;
  duplicate: number;
  rate_limited: number;
  rejected: Record<string, number>;
  stored: number;
}

export type FilterOp = "eq" | "neq" | "contains" | "gt" | "lt" | "is_set";
export const FILTER_OPS: readonly FilterOp[] = ["eq", "neq", "contains", "gt", "lt", "is_set"];

export interface Filter {
  property: string;
  op: FilterOp;
  value?: string | number;
}

export type Interval = "hour" | "day" | "week";

export interface TrendsSpec {
  kind: "trends";
  event?: string;
  math: "total" | "unique_users";
  interval: Interval;
  from: string;
  to: string;
  filters?: Filter[];
  breakdown?: string;
  limit?: number;
}
export interface TrendsAnswer {
  series: { breakdown_value: string | null; total: number; points: { t: string; value: number }[] }[];
  took_ms: number;
}

export interface FunnelSpec {
  kind: "funnel";
  steps: string[];
  window_seconds: number;
  from: string;
  to: string;
  filters?: Filter[];
}
export interface FunnelAnswer {
  steps: { event: string; count: number; conversion_rate: number; drop_off: number }[];
  took_ms: number;
}

export interface RetentionSpec {
  kind: "retention";
  start_event: string;
  return_event: string;
  interval: "day" | "week";
  periods: number;
  from: string;
  to: string;
  filters?: Filter[];
}
export interface RetentionAnswer {
  cohorts: { cohort: string; size: number; values: number[] }[];
  took_ms: number;
}

export interface EventsSpec {
  kind: "events";
  event?: string;
  distinct_id?: string;
  limit?: number;
  cursor?: string;
}
export interface StoredEvent {
  uuid: string;
  event: string;
  distinct_id: string;
  timestamp: string;
  properties: Record<string, unknown>;
  received_at: string;
}
export interface EventsAnswer {
  events: StoredEvent[];
  next_cursor: string | null;
  took_ms: number;
}

export interface TopEventsSpec {
  kind: "top_events";
  from: string;
  to: string;
  limit?: number;
}
export interface TopEventsAnswer {
  events: { event: string; count: number }[];
  took_ms: number;
}

export interface TopValuesSpec {
  kind: "top_values";
  property: string;
  event?: string;
  from: string;
  to: string;
  limit?: number;
}
export interface TopValuesAnswer {
  values: { value: string | null; count: number }[];
  took_ms: number;
}

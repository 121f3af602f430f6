export const PLANS = ["FREE", "PRO", "ENTERPRISE"] as const;
export type Plan = (typeof PLANS)[number];

/** Requests per minute per project; a batch counts as one request. */
export const PLAN_RATE_LIMIT_RPM: Readonly<Record<Plan, number>> = Object.freeze({
  FREE: 100,
  PRO: 1000,
  ENTERPRISE: 10000,
});

import type { Lifecycle } from "./lifecycle.js";

export interface RateDecision {
  allowed: boolean;
  limit: number;
  remaining: number;
  /** Epoch seconds at which the next slot frees up. */
  resetAt: number;
  /** Seconds to wait before a retry can succeed; 0 when allowed. */
  retryAfter: number;
}

/**
 * A sliding 60-second window per project: a request is allowed when fewer than `limit` requests
 * were allowed in the last 60 s. Refused requests do not count. Implementations shared by
 * several API processes (Redis) must make the check-and-count atomic.
 */
export interface RateLimiter extends Lifecycle {
  consume(projectId: string, limitPerMinute: number, nowMs: number): Promise<RateDecision>;
}

export const RATE_WINDOW_MS = 60_000;

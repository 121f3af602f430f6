import type { Lifecycle } from "./lifecycle.js";

export interface RateDecision {
  allowed: boolean;
  limit: number;
  remaining: number;
  /** Epoch seconds at which the next slot frees up. */
  resetAt: number;
  /** Seconds to wait before a retry can succeed; 0 when allowed. */
  retryAfter: number;
  /** When allowed and recorded: the request's place in the window, for `release`. */
  slot?: string;
}

/**
 * A sliding 60-second window per project: a request is allowed when fewer than `limit` requests
 * were allowed in the last 60 s. Requests it refuses are not recorded, and an allowed one can be
 * taken back out (`release`). Which requests the API gives back is its policy, stated in the
 * README (src/api/ingest/ingest.routes.ts). Implementations shared by
 * several API processes (Redis) must make the check-and-count atomic.
 */
export interface RateLimiter extends Lifecycle {
  consume(projectId: string, limitPerMinute: number, nowMs: number): Promise<RateDecision>;
  /**
   * `consume` answered at once, by limiters that decide in this process's memory: the ingest
   * hook then runs without a promise, so the request's body is read as it arrives (see
   * src/api/ingest/ingest.routes.ts). Limiters that ask a server leave it out.
   */
  consumeSync?(projectId: string, limitPerMinute: number, nowMs: number): RateDecision;
  /**
   * Takes an allowed request back out of the window, as if it had never been made, so its slot
   * is free again (the ingest API gives back requests it ends up refusing). Releasing a slot
   * twice, or one that has left the window, does nothing. Never throws: a limiter that cannot
   * reach its store leaves the slot counted.
   */
  release(projectId: string, slot: string): Promise<void>;
}

export const RATE_WINDOW_MS = 60_000;

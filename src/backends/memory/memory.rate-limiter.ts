import { RATE_WINDOW_MS, type RateDecision, type RateLimiter } from "../../pipeline/rate-limiter.js";

/** The times of the requests allowed in the last window, oldest first, in a ring. */
interface Window {
  times: Float64Array;
  head: number;
  count: number;
}

/**
 * A sliding-window log per project, in this process's memory: exact, O(1) amortised per request,
 * and correct at window edges. Right for one API process; several share the Redis limiter.
 */
export class MemoryRateLimiter implements RateLimiter {
  readonly name = "memory-rate-limiter";
  private readonly windows = new Map<string, Window>();

  async start(): Promise<void> {}
  async ready(): Promise<string | undefined> {
    return undefined;
  }
  async close(): Promise<void> {}

  async consume(projectId: string, limit: number, nowMs: number): Promise<RateDecision> {
    return this.consumeSync(projectId, limit, nowMs);
  }

  async release(projectId: string, slot: string): Promise<void> {
    this.releaseSync(projectId, slot);
  }

  releaseSync(projectId: string, slot: string): void {
    const window = this.windows.get(projectId);
    if (window) removeTime(window, Number(slot));
  }

  consumeSync(projectId: string, limit: number, nowMs: number): RateDecision {
    let window = this.windows.get(projectId);
    if (!window || window.times.length !== limit) {
      window = resize(window, limit);
      this.windows.set(projectId, window);
    }
    const cutoff = nowMs - RATE_WINDOW_MS;
    while (window.count > 0 && (window.times[window.head] ?? 0) <= cutoff) {
      window.head = (window.head + 1) % limit;
      window.count--;
    }
    if (window.count < limit) {
      window.times[(window.head + window.count) % limit] = nowMs;
      window.count++;
      const oldest = window.times[window.head] ?? nowMs;
      return {
        allowed: true,
        limit,
        remaining: limit - window.count,
        resetAt: Math.ceil((oldest + RATE_WINDOW_MS) / 1000),
        retryAfter: 0,
        slot: String(nowMs),
      };
    }
    const oldest = window.times[window.head] ?? nowMs;
    const freesAt = oldest + RATE_WINDOW_MS;
    return {
      allowed: false,
      limit,
      remaining: 0,
      resetAt: Math.ceil(freesAt / 1000),
      retryAfter: Math.max(1, Math.ceil((freesAt - nowMs) / 1000)),
    };
  }
}

/**
 * Removes one request made at `time` from the window; requests at the same millisecond are
 * interchangeable, so any of them will do. O(limit), and only refused requests pay it.
 */
function removeTime(window: Window, time: number): void {
  const size = window.times.length;
  let found = -1;
  for (let i = window.count - 1; i >= 0; i--) {
    if (window.times[(window.head + i) % size] === time) {
      found = i;
      break;
    }
  }
  if (found < 0) return;
  for (let i = found; i < window.count - 1; i++) {
    window.times[(window.head + i) % size] = window.times[(window.head + i + 1) % size] ?? 0;
  }
  window.count--;
}

/** A new ring of `limit` slots keeping the newest times of the old one (a plan changed). */
function resize(old: Window | undefined, limit: number): Window {
  const next: Window = { times: new Float64Array(limit), head: 0, count: 0 };
  if (!old) return next;
  const keep = Math.min(old.count, limit);
  const size = old.times.length;
  for (let i = old.count - keep; i < old.count; i++) {
    next.times[next.count++] = old.times[(old.head + i) % size] ?? 0;
  }
  return next;
}

/** How a failed request is retried: exponential backoff from `baseMs`, capped at `maxMs`. */
export interface RetryPolicy {
  baseMs: number;
  maxMs: number;
}

/**
 * The wait a `Retry-After` header asks for, in milliseconds: delta-seconds (what Tidemark sends)
 * or an HTTP date. Undefined when absent or unreadable.
 */
export function parseRetryAfter(value: string | null | undefined, now: number): number | undefined {
  if (!value) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/**
 * The wait before retry number `attempt` (0 for the first retry). With a `Retry-After` the server
 * named the time, so the client waits exactly that plus up to `baseMs` of jitter, which spreads
 * clients told the same second. Without one, exponential backoff with "equal jitter": between
 * half and all of min(maxMs, baseMs * 2^attempt), so retries never bunch at zero.
 */
export function retryDelay(
  attempt: number,
  retryAfterMs: number | undefined,
  policy: RetryPolicy,
  random: () => number,
): number {
  if (retryAfterMs !== undefined) return retryAfterMs + random() * policy.baseMs;
  const ceiling = Math.min(policy.maxMs, policy.baseMs * 2 ** attempt);
  return ceiling / 2 + (random() * ceiling) / 2;
}

/**
 * Whether a failed request may succeed if sent again: no answer (status 0: the connection
 * dropped or timed out), 408, 429 and 5xx. Any other 4xx is the request's fault and would fail
 * the same way again.
 */
export function isRetryable(status: number): boolean {
  return status === 0 || status === 408 || status === 429 || status >= 500;
}

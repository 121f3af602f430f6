import { randomBytes } from "node:crypto";
import { AppError } from "../../core/errors.js";
import type { Log } from "../../core/log.js";
import { RATE_WINDOW_MS, type RateDecision, type RateLimiter } from "../../pipeline/rate-limiter.js";
import { redisReady } from "./redis.client.js";
import { type RedisConnection, rateLimitKey } from "./redis.connection.js";
import { RedisScript } from "./redis.script.js";

/**
 * A sliding-window log in a sorted set per project (score = time of an allowed request), checked
 * and updated in one script, so API processes sharing the Redis never both take the last slot.
 * Same semantics as MemoryRateLimiter: a request is allowed when fewer than `limit` requests were
 * allowed in the 60 s before it (times <= now - 60 s have left the window); refused requests are
 * not recorded. Returns {allowed, count after, time of the request whose expiry frees a slot}.
 */
const CONSUME = new RedisScript(
  `
  local now = tonumber(ARGV[1])
  local window = tonumber(ARGV[2])
  local limit = tonumber(ARGV[3])
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  local count = redis.call('ZCARD', KEYS[1])
  if count < limit then
    redis.call('ZADD', KEYS[1], now, ARGV[4])
    redis.call('PEXPIRE', KEYS[1], window)
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {1, count + 1, oldest[2]}
  end
  -- Full (or over, after a plan downgrade): a slot frees when the request at position
  -- count - limit (oldest first) leaves the window.
  local freeing = redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')
  return {0, count, freeing[2]}
  `,
  1,
);

export interface RedisRateLimiterOptions {
  prefix: string;
  /** What to do when Redis is unreachable: let requests through, or answer 503. */
  failMode: "open" | "closed";
  log?: Log;
}

/**
 * The rate limiter shared by every API process. When Redis is unreachable it fails open (the
 * request is allowed, and the headers show the full limit) or closed (503 with Retry-After, not
 * 429: the client did nothing wrong), as TIDEMARK_RATE_LIMIT_FAIL says.
 */
export class RedisRateLimiter implements RateLimiter {
  readonly name = "redis-rate-limiter";
  /** Members must be unique per request: two requests in the same millisecond both count. */
  private readonly instance = randomBytes(6).toString("base64url");
  private sequence = 0;
  private lastWarning = 0;

  constructor(
    private readonly redis: RedisConnection,
    private readonly options: RedisRateLimiterOptions,
  ) {}

  start(): Promise<void> {
    return this.redis.open();
  }

  async ready(): Promise<string | undefined> {
    // Failing open, the API serves without Redis: not a reason to take it out of rotation.
    if (this.options.failMode === "open") return undefined;
    return redisReady(this.redis.client, "rate limiter");
  }

  close(): Promise<void> {
    return this.redis.close();
  }

  async consume(projectId: string, limit: number, nowMs: number): Promise<RateDecision> {
    const now = Math.floor(nowMs);
    const member = `${now}:${this.instance}:${this.sequence++}`;
    let reply: unknown;
    try {
      reply = await CONSUME.run(
        this.redis.client,
        [rateLimitKey(this.options.prefix, projectId)],
        [now, RATE_WINDOW_MS, limit, member],
      );
    } catch (error) {
      return this.unavailable(error, limit, now);
    }
    const [allowed, count, edge] = reply as [number, number, string | null];
    const edgeMs = edge === null ? now : Number(edge);
    const freesAt = edgeMs + RATE_WINDOW_MS;
    if (allowed === 1) {
      return {
        allowed: true,
        limit,
        remaining: Math.max(0, limit - count),
        resetAt: Math.ceil(freesAt / 1000),
        retryAfter: 0,
        slot: member,
      };
    }
    return {
      allowed: false,
      limit,
      remaining: 0,
      resetAt: Math.ceil(freesAt / 1000),
      retryAfter: Math.max(1, Math.ceil((freesAt - now) / 1000)),
    };
  }

  async release(projectId: string, slot: string): Promise<void> {
    try {
      await this.redis.client.zrem(rateLimitKey(this.options.prefix, projectId), slot);
    } catch (error) {
      this.options.log?.warn(
        { err: error },
        "rate limiter cannot reach redis: a refused request stays counted",
      );
    }
  }

  private unavailable(error: unknown, limit: number, now: number): RateDecision {
    if (now - this.lastWarning > 5000) {
      this.lastWarning = now;
      this.options.log?.warn(
        { err: error, failMode: this.options.failMode },
        `rate limiter cannot reach redis: failing ${this.options.failMode}`,
      );
    }
    if (this.options.failMode === "closed") {
      const failure = new AppError("unavailable", {
        message: "The rate limiter is unavailable; retry",
        retryAfter: 1,
        cause: error,
      });
      throw failure;
    }
    return {
      allowed: true,
      limit,
      remaining: limit,
      resetAt: Math.ceil((now + RATE_WINDOW_MS) / 1000),
      retryAfter: 0,
    };
  }
}

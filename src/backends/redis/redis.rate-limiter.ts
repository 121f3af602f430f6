import { randomBytes } from "node:crypto";
import { AppError } from "../../core/errors.js";
import type { Log } from "../../core/log.js";
import { RATE_WINDOW_MS, type RateDecision, type RateLimiter } from "../../pipeline/rate-limiter.js";
import { RedisCallGroup } from "./redis.call-group.js";
import { redisReady } from "./redis.client.js";
import { type RedisConnection, rateLimitKey } from "./redis.connection.js";
import { RedisScript } from "./redis.script.js";

/**
 * A sliding-window log in a sorted set per project (score = time of an allowed request), checked
 * and updated in one script, so API processes sharing the Redis never both take the last slot.
 * Same semantics as MemoryRateLimiter: a request is allowed when fewer than `limit` requests were
 * allowed in the 60 s before it (times <= now - 60 s have left the window); refused requests are
 * not recorded. One call decides several requests, in order, each exactly as if alone (ARGV:
 * the window, then per request the index of its key, its time, its limit and its member).
 * Returns per request {allowed, count after, time of the request whose expiry frees a slot}.
 */
const CONSUME = new RedisScript(
  `
  redis.set_repl(redis.REPL_NONE)
  local window = tonumber(ARGV[1])
  local decisions = {}
  for i = 2, #ARGV, 4 do
    local key = KEYS[tonumber(ARGV[i])]
    local now = tonumber(ARGV[i + 1])
    local limit = tonumber(ARGV[i + 2])
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
    local count = redis.call('ZCARD', key)
    local edge
    if count < limit then
      redis.call('ZADD', key, now, ARGV[i + 3])
      redis.call('PEXPIRE', key, window)
      count = count + 1
      edge = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2]
      decisions[#decisions + 1] = 1
    else
      -- Full (or over, after a plan downgrade): a slot frees when the request at position
      -- count - limit (oldest first) leaves the window.
      edge = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')[2]
      decisions[#decisions + 1] = 0
    end
    decisions[#decisions + 1] = count
    decisions[#decisions + 1] = edge or false
  end
  return decisions
  `,
);

interface ConsumeCall {
  key: string;
  now: number;
  limit: number;
  member: string;
}

type ConsumeReply = [allowed: number, count: number, edge: string | null];

/** Requests decided in one script call at most (a bound on its size, not on throughput). */
const MAX_GROUP = 256;

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
  /** Requests decided in the same event-loop turn share one script call. */
  private readonly decisions = new RedisCallGroup<ConsumeCall, ConsumeReply>(
    (calls) => this.decide(calls),
    MAX_GROUP,
  );

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
    let reply: ConsumeReply;
    try {
      reply = await this.decisions.add({
        key: rateLimitKey(this.options.prefix, projectId),
        now,
        limit,
        member,
      });
    } catch (error) {
      return this.unavailable(error, limit, now);
    }
    const [allowed, count, edge] = reply;
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

  private async decide(calls: readonly ConsumeCall[]): Promise<ConsumeReply[]> {
    const keys: string[] = [];
    const keyIndex = new Map<string, number>();
    const args: (string | number)[] = [RATE_WINDOW_MS];
    for (const call of calls) {
      let index = keyIndex.get(call.key);
      if (index === undefined) {
        index = keys.push(call.key);
        keyIndex.set(call.key, index);
      }
      args.push(index, call.now, call.limit, call.member);
    }
    const flat = (await CONSUME.run(this.redis.client, keys, args)) as (number | string | null)[];
    return calls.map((_, i) => [
      Number(flat[3 * i]),
      Number(flat[3 * i + 1]),
      flat[3 * i + 2] as string | null,
    ]);
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

import { Redis } from "ioredis";
import { AppError } from "../../core/errors.js";
import type { Log } from "../../core/log.js";

export interface RedisClientOptions {
  url: string;
  /** Shown in CLIENT LIST. */
  name: string;
  /** A command that has not answered by then fails (the request gets a 503); undefined: no limit. */
  commandTimeoutMs?: number;
  log?: Log;
}

/**
 * A Redis client that never lets a command wait for a connection: while Redis is unreachable,
 * commands fail at once (the API answers 503) and the client keeps reconnecting in the
 * background, so service resumes by itself when Redis is back. Commands in flight when the
 * connection drops fail too rather than being replayed later, when nobody waits for them.
 */
export function createRedisClient(options: RedisClientOptions): Redis {
  const client = new Redis(options.url, {
    lazyConnect: true,
    connectionName: options.name,
    enableOfflineQueue: false,
    autoResendUnfulfilledCommands: false,
    maxRetriesPerRequest: 0,
    enableAutoPipelining: true,
    commandTimeout: options.commandTimeoutMs,
    connectTimeout: 2000,
    retryStrategy: (attempt) => Math.min(50 * attempt, 1000),
  });
  let lastWarning = 0;
  client.on("error", (error: Error) => {
    // One line per 5 s at most while Redis is down, instead of one per reconnect attempt.
    const now = Date.now();
    if (now - lastWarning < 5000) return;
    lastWarning = now;
    options.log?.warn({ err: error, client: options.name }, "redis unreachable; retrying");
  });
  client.on("ready", () => {
    if (lastWarning > 0) options.log?.info({ client: options.name }, "redis reachable again");
    lastWarning = 0;
  });
  return client;
}

/**
 * Connects, waiting up to `timeoutMs`. Resolves false (and the client keeps trying in the
 * background) when Redis is not reachable yet: a process starts anyway, reports not-ready and
 * answers 503 until Redis is back.
 */
export async function connectRedis(client: Redis, timeoutMs: number): Promise<boolean> {
  if (client.status === "ready") return true;
  if (client.status === "wait") client.connect().catch(() => undefined);
  return new Promise<boolean>((resolve) => {
    const done = (ok: boolean) => {
      clearTimeout(timer);
      client.off("ready", onReady);
      resolve(ok);
    };
    const onReady = () => done(true);
    const timer = setTimeout(() => done(client.status === "ready"), timeoutMs);
    client.on("ready", onReady);
    if (client.status === "ready") done(true);
  });
}

export async function redisReady(client: Redis, what: string): Promise<string | undefined> {
  if (client.status !== "ready") return `${what}: redis ${client.status}`;
  try {
    await client.ping();
    return undefined;
  } catch (error) {
    return `${what}: ${(error as Error).message}`;
  }
}

/** A Redis failure as the API reports it: 503 with Retry-After. */
export function redisUnavailable(error: unknown, what = "The ingest queue"): AppError {
  const failure = new AppError("unavailable", {
    message: `${what} is unavailable; retry`,
    retryAfter: 1,
    cause: error,
  });
  return failure;
}

/**
 * Warns when Redis would not keep an acknowledged event through a crash. Managed Redis often
 * forbids CONFIG; then nothing is said.
 */
export async function checkDurability(client: Redis, log?: Log): Promise<void> {
  try {
    const [, appendonly] = (await client.config("GET", "appendonly")) as string[];
    const [, fsync] = (await client.config("GET", "appendfsync")) as string[];
    if (appendonly !== "yes" || fsync !== "always") {
      log?.warn(
        { appendonly, appendfsync: fsync },
        "redis is not configured for zero loss (appendonly yes, appendfsync always): a crash of Redis can lose acknowledged events",
      );
    }
  } catch {
    // CONFIG disabled: the operator vouches for durability.
  }
}

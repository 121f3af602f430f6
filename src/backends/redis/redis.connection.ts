import type { Redis } from "ioredis";
import { checkDurability, connectRedis, createRedisClient, type RedisClientOptions } from "./redis.client.js";

/**
 * One Redis connection per process for the API's commands (rate limit, XADD), shared by the
 * parts that use it: commands issued in the same tick go out as one pipeline.
 */
export class RedisConnection {
  readonly client: Redis;
  private openCount = 0;
  private opening?: Promise<void>;

  constructor(private readonly options: RedisClientOptions & { connectWaitMs?: number }) {
    this.client = createRedisClient(options);
  }

  async open(): Promise<void> {
    this.openCount++;
    this.opening ??= (async () => {
      if (await connectRedis(this.client, this.options.connectWaitMs ?? 3000))
        await checkDurability(this.client, this.options.log);
      else
        this.options.log?.warn(
          { client: this.options.name },
          "redis not reachable at start; answering 503 until it is",
        );
    })();
    await this.opening;
  }

  async close(): Promise<void> {
    this.openCount--;
    if (this.openCount > 0) return;
    await this.client.quit().catch(() => this.client.disconnect());
  }
}

/** The Redis keys of one Tidemark installation; the prefix lets several share a Redis. */
export function streamKeys(prefix: string) {
  return {
    /** The ingest stream: an entry per accepted request, or per requests accepted together. */
    stream: `${prefix}{events}`,
    /** Events in the stream not yet stored: the queue depth in events. */
    backlog: `${prefix}{events}:backlog`,
    /** Messages that could not be stored, with their reason. */
    dead: `${prefix}{events}:dead`,
    group: "workers",
  };
}

export function rateLimitKey(prefix: string, projectId: string): string {
  return `${prefix}ratelimit:${projectId}`;
}

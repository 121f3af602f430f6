import { createHash } from "node:crypto";
import type { Redis } from "ioredis";

/** A Lua script run by its SHA (EVALSHA), loaded on first use and again after a Redis restart. */
export class RedisScript {
  private readonly sha: string;

  constructor(
    private readonly lua: string,
    /** The keys every call passes; undefined for a script that takes any number of them. */
    private readonly numberOfKeys?: number,
  ) {
    this.sha = createHash("sha1").update(lua).digest("hex");
  }

  async run(client: Redis, keys: readonly string[], args: readonly (string | number)[]): Promise<unknown> {
    if (this.numberOfKeys !== undefined && keys.length !== this.numberOfKeys)
      throw new Error(`script expects ${this.numberOfKeys} keys`);
    try {
      return await client.evalsha(this.sha, keys.length, ...keys, ...args);
    } catch (error) {
      if (!(error instanceof Error) || !error.message.startsWith("NOSCRIPT")) throw error;
      return client.eval(this.lua, keys.length, ...keys, ...args);
    }
  }
}

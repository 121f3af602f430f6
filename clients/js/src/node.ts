import { randomUUID } from "node:crypto";
import { promisify } from "node:util";
import { gzip } from "node:zlib";
import { Client, type TidemarkOptions } from "./client.js";

export type { Properties, TidemarkOptions, TrackOptions, WireEvent } from "./client.js";
export { TidemarkError } from "./client.js";

const compress = promisify(gzip);

/**
 * Tidemark's client for Node.js. Bodies are gzip-compressed with node:zlib. The flush timer does
 * not keep the process alive; instead, when the event loop empties with events still waiting
 * (`beforeExit`), they are flushed, so a script that simply ends loses nothing. `process.exit()`
 * and signals skip `beforeExit`: await `shutdown()` before them.
 */
export class Tidemark extends Client {
  private readonly onBeforeExit = () => {
    void this.flush();
  };

  constructor(options: TidemarkOptions) {
    const send = options.fetch ?? globalThis.fetch;
    super(options, {
      fetch: (url, init) => send(url, init),
      now: Date.now,
      setTimer: (run, ms, background) => {
        const timer = setTimeout(run, ms);
        if (background) timer.unref();
        return timer;
      },
      clearTimer: (timer) => clearTimeout(timer as NodeJS.Timeout),
      random: Math.random,
      uuid: randomUUID,
      gzip: async (body) => new Uint8Array(await compress(body)),
    });
    process.on("beforeExit", this.onBeforeExit);
  }

  override async shutdown(timeoutMs?: number): Promise<void> {
    process.off("beforeExit", this.onBeforeExit);
    await super.shutdown(timeoutMs);
  }
}

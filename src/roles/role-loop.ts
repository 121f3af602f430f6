import type { Lifecycle } from "../pipeline/lifecycle.js";

/**
 * The skeleton every background role shares (worker, cdc, sink): `start` runs the role's loop,
 * `close` asks it to stop, cuts a backoff sleep short and resolves once the loop has returned, so
 * the batch in hand is finished (or left unacknowledged, to be handed out again) before the
 * process closes the parts behind it.
 */
export abstract class RoleLoop implements Lifecycle {
  abstract readonly name: string;
  /** Set by `close`: the loop finishes what it holds and returns. */
  protected stopping = false;
  private loop?: Promise<void>;
  private wake?: () => void;

  async start(): Promise<void> {
    this.loop = this.run();
  }

  async ready(): Promise<string | undefined> {
    return this.stopping ? `${this.name}: stopping` : undefined;
  }

  async close(): Promise<void> {
    this.stopping = true;
    this.wake?.();
    await this.loop;
  }

  /** The role's loop: runs until `stopping` is set, and never throws. */
  protected abstract run(): Promise<void>;

  /** Waits `ms`, or less when `close` is called meanwhile (at once when it already was). */
  protected sleep(ms: number): Promise<void> {
    if (this.stopping) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    });
  }
}

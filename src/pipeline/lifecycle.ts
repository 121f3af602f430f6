/**
 * Every backend part owns its connections and exposes the same lifecycle: `start()` connects and
 * prepares (migrations, consumer groups), `ready()` reports whether it can serve now, `close()`
 * flushes what it holds and releases everything. `close()` may be called once, after `start()`.
 */
export interface Lifecycle {
  readonly name: string;
  start(): Promise<void>;
  /** Resolves with an error message when the backend is unreachable; never throws. */
  ready(): Promise<string | undefined>;
  close(): Promise<void>;
}

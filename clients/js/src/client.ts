import { isRetryable, parseRetryAfter, retryDelay } from "./backoff.js";

export type Properties = Record<string, unknown>;

/** An event as Tidemark's ingest API takes it (README, "Ingest"). */
export interface WireEvent {
  uuid: string;
  event: string;
  distinct_id: string;
  timestamp: string | number;
  properties?: Properties;
}

export interface TidemarkOptions {
  /** The project's write key (`wk_...`). */
  apiKey: string;
  /** Where Tidemark answers, e.g. `https://tidemark.example.com`. */
  host: string;
  /** A flush starts once this many events wait. Default 20. */
  flushAt?: number;
  /** The longest an event waits before a flush starts, in ms. Default 5,000. */
  flushInterval?: number;
  /** Most events in one request. Default 500 (Tidemark takes up to 1,000). */
  maxBatchSize?: number;
  /** Most events waiting; past it, new events are refused and reported to `onError`. Default 10,000. */
  maxQueueSize?: number;
  /** Retries of a request that failed in a retryable way (no answer, 408, 429, 5xx). Default 8. */
  maxRetries?: number;
  /** First backoff step and its cap, in ms. Defaults 1,000 and 30,000. */
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** A request with no answer after this many ms is abandoned and retried. Default 10,000. */
  timeoutMs?: number;
  /** Compress request bodies with gzip where the platform can. Default true. */
  gzip?: boolean;
  /** The id to start with; without it, an anonymous id (kept in localStorage in a browser). */
  distinctId?: string;
  /** Every event Tidemark will not store (refused, or retries spent). Default: console.warn. */
  onError?: (error: TidemarkError) => void;
  /** The fetch to send with (a proxy's, an instrumented one). Default: the global fetch. */
  fetch?: typeof fetch;
}

export interface TrackOptions {
  /** Whose event this is, instead of the client's current id (a server tracking many users). */
  distinctId?: string;
  /** When it happened: a Date, epoch milliseconds or ISO 8601. Default: now. */
  timestamp?: Date | number | string;
  /** The idempotency key. Default: a new uuid, made now, so that every retry carries the same one. */
  uuid?: string;
}

/** Events Tidemark will not store: the server refused them, the retries ran out, or the client did. */
export class TidemarkError extends Error {
  constructor(
    message: string,
    /** The HTTP status of the last answer; 0 when there was none. */
    readonly status: number,
    /** The events concerned, as they would have been sent. */
    readonly events: WireEvent[],
    /** Tidemark's error code (`validation_failed`, `unauthorized`...), when it answered one. */
    readonly code?: string,
  ) {
    super(message);
    this.name = "TidemarkError";
  }
}

/** What the client needs from where it runs; the Node and browser entries each provide one. */
export interface Platform {
  fetch: typeof fetch;
  now(): number;
  /** `background`: a timer that alone must not keep a Node process running. */
  setTimer(run: () => void, ms: number, background?: boolean): unknown;
  clearTimer(timer: unknown): void;
  random(): number;
  uuid(): string;
  /** The body gzip-compressed, or undefined when it cannot be. */
  gzip?: (body: string) => Promise<Uint8Array | undefined>;
  /** Durable key-value storage (localStorage); absent in Node. */
  load?: (key: string) => string | null;
  save?: (key: string, value: string | null) => void;
  /** Requests may use fetch `keepalive`, so they outlive the page (browsers). */
  keepalive?: boolean;
}

interface Identity {
  /** The distinct id events are sent with. */
  id: string;
  /** Whether `id` is an anonymous id this client made (identify then links it). */
  anonymous: boolean;
}

interface Answer {
  status: number;
  retryAfter?: number | undefined;
  text?: string;
}

/**
 * A browser may keep at most 64 KiB of keepalive request bodies in flight (the Fetch standard's
 * limit, which Chromium enforces); the client stays under it with room for headers.
 */
export const KEEPALIVE_BUDGET = 60_000;
/** Tidemark refuses bodies over 1 MiB once decompressed; batches are cut well under it. */
const MAX_BATCH_CHARS = 500_000;
const ID_KEY = "tidemark_id";

const utf8Length = (text: string) => new TextEncoder().encode(text).length;

/**
 * Groups serialized events into request bodies for page unload: each request holds at most
 * `maxCount` events, and all of them together at most `budget` bytes, since keepalive requests
 * share one browser-wide limit. Returns the groups and what did not fit.
 */
export function planUnload(
  events: string[],
  budget: number,
  maxCount: number,
): { requests: string[][]; rest: string[] } {
  const requests: string[][] = [];
  let used = 0;
  let index = 0;
  for (; index < events.length; index++) {
    const event = events[index]!;
    // One byte for the comma; 64 per request for the envelope, {"events":[...],"sent_at":"..."}.
    const size = utf8Length(event) + 1;
    let current = requests[requests.length - 1];
    const opens = !current || current.length >= maxCount;
    if (used + size + (opens ? 64 : 0) > budget) break;
    if (opens) {
      current = [];
      requests.push(current);
      used += 64;
    }
    current!.push(event);
    used += size;
  }
  return { requests, rest: events.slice(index) };
}

/**
 * Tidemark's client, independent of where it runs. Events are serialized when tracked (so later
 * changes to a properties object do not leak in, and each one's uuid is fixed before any send),
 * queued, and sent in batches to `POST /api/v1/event/batch`, one request at a time, in order.
 */
export class Client {
  private queue: string[] = [];
  /** The batch being sent, including while it waits to be retried. */
  private current: string[] = [];
  /** Bytes of keepalive requests not yet answered (see KEEPALIVE_BUDGET). */
  private keepaliveBytes = 0;
  private timer: unknown;
  private draining: Promise<void> | undefined;
  private closed = false;
  /** Set when shutdown gave up waiting: the batch in hand is not retried any more. */
  private stopped = false;
  private identity: Identity;
  private readonly url: string;
  private readonly queueKey: string;
  protected readonly options: Required<Omit<TidemarkOptions, "distinctId" | "fetch">>;

  constructor(
    options: TidemarkOptions,
    protected readonly platform: Platform,
  ) {
    this.options = {
      flushAt: 20,
      flushInterval: 5000,
      maxBatchSize: 500,
      maxQueueSize: 10_000,
      maxRetries: 8,
      retryBaseMs: 1000,
      retryMaxMs: 30_000,
      timeoutMs: 10_000,
      gzip: true,
      onError: (error) => console.warn(`[tidemark] ${error.message}`, error.events),
      ...options,
    };
    this.url = `${options.host.replace(/\/+$/, "")}/api/v1/event/batch`;
    this.queueKey = `tidemark_queue_${options.apiKey}`;
    let stored: Identity | undefined;
    try {
      stored = JSON.parse(platform.load?.(ID_KEY) ?? "null") ?? undefined;
    } catch {
      // unreadable: start anew
    }
    this.identity = options.distinctId
      ? { id: options.distinctId, anonymous: false }
      : stored?.id
        ? stored
        : this.remember({ id: platform.uuid(), anonymous: true });
    // Events a previous page could not send before it closed (see unload).
    const saved = platform.load?.(this.queueKey);
    if (saved) {
      platform.save?.(this.queueKey, null);
      try {
        const events: unknown = JSON.parse(saved);
        if (Array.isArray(events)) this.queue = events.filter((e) => typeof e === "string");
        this.schedule();
      } catch {
        // unreadable: nothing to resend
      }
    }
  }

  /** The id events are sent with: the anonymous id until `identify`. */
  get distinctId(): string {
    return this.identity.id;
  }

  /**
   * Queues an event and returns its uuid (undefined when the client refused it, which `onError`
   * reports). Never throws and never waits.
   */
  track(event: string, properties?: Properties, options: TrackOptions = {}): string | undefined {
    const uuid = options.uuid ?? this.platform.uuid();
    const wire: WireEvent = {
      uuid,
      event,
      distinct_id: options.distinctId ?? this.identity.id,
      timestamp:
        options.timestamp instanceof Date
          ? options.timestamp.toISOString()
          : (options.timestamp ?? new Date(this.platform.now()).toISOString()),
      ...(properties ? { properties } : {}),
    };
    let refused: string | undefined;
    let json = "";
    try {
      json = JSON.stringify(wire);
    } catch (error) {
      refused = `the properties cannot be sent as JSON: ${error}`;
    }
    if (this.closed) refused ??= "the client is shut down";
    if (this.queue.length >= this.options.maxQueueSize)
      refused ??= `${this.queue.length} events already wait to be sent (maxQueueSize)`;
    if (refused) {
      this.options.onError(new TidemarkError(`event not sent: ${refused}`, 0, [wire]));
      return undefined;
    }
    this.queue.push(json);
    if (this.queue.length >= this.options.flushAt) void this.flush();
    else this.schedule();
    return uuid;
  }

  /**
   * Links the current anonymous id to `userId` and sends events as `userId` from now on, as
   * PostHog's identify does: an event `$identify` with distinct_id `userId`, properties
   * `$anon_distinct_id` (the anonymous id, only when the current id is anonymous) and `$set`
   * (`traits`). Identifying as the current id only sends the traits; without traits, nothing.
   */
  identify(userId: string, traits?: Properties): void {
    const { id, anonymous } = this.identity;
    const properties: Properties = {};
    if (anonymous && userId !== id) properties.$anon_distinct_id = id;
    if (traits) properties.$set = traits;
    this.identity = this.remember({ id: userId, anonymous: false });
    if (userId !== id || traits) this.track("$identify", properties);
  }

  /**
   * Says that `alias` and `distinctId` (default: the current id) are one person, as PostHog's
   * alias does: an event `$create_alias` with distinct_id `distinctId` and properties.alias
   * `alias`. The current id does not change.
   */
  alias(alias: string, distinctId: string = this.identity.id): void {
    this.track("$create_alias", { alias }, { distinctId });
  }

  /** Forgets the user (a log-out): events are sent with a new anonymous id. */
  reset(): void {
    this.identity = this.remember({ id: this.platform.uuid(), anonymous: true });
  }

  /**
   * Sends every waiting event, resolving once each is stored or reported to `onError`. Waits for
   * retries as the backoff and `Retry-After` require.
   */
  async flush(): Promise<void> {
    this.platform.clearTimer(this.timer);
    this.timer = undefined;
    while (this.queue.length > 0 || this.draining) {
      this.draining ??= this.drain().finally(() => {
        this.draining = undefined;
      });
      await this.draining;
    }
  }

  /**
   * Refuses new events, sends the waiting ones and resolves when done or after `timeoutMs`
   * (default 10,000); events still unsent then are reported to `onError`. Await it before a
   * process exits.
   */
  async shutdown(timeoutMs = 10_000): Promise<void> {
    this.closed = true;
    let timer: unknown;
    const flushed = await Promise.race([
      this.flush().then(() => true),
      new Promise<false>((resolve) => {
        timer = this.platform.setTimer(() => resolve(false), timeoutMs);
      }),
    ]);
    this.platform.clearTimer(timer);
    if (!flushed) {
      this.stopped = true;
      const left = [...this.current, ...this.queue];
      this.queue = [];
      this.fail(left, `not confirmed by Tidemark within the shutdown's ${timeoutMs} ms`, 0);
    }
  }

  /**
   * The page is going away (pagehide, or hidden, after which a mobile browser may kill it
   * without another event): what waits, including a batch waiting for its retry, is sent now
   * with fetch `keepalive`, which outlives the page. `navigator.sendBeacon` cannot, since it sends
   * no headers and Tidemark needs the write key in one. What does not fit the keepalive budget is
   * kept in localStorage and sent by the next page of the site. A batch whose request is still
   * in flight is left to it (it was sent with keepalive too).
   */
  protected unload(): void {
    const waiting = [...(this.keepaliveBytes > 0 ? [] : this.current), ...this.queue];
    this.queue = [];
    this.platform.clearTimer(this.timer);
    this.timer = undefined;
    const { requests, rest } = planUnload(
      waiting,
      KEEPALIVE_BUDGET - this.keepaliveBytes,
      this.options.maxBatchSize,
    );
    for (const events of requests) {
      this.platform
        .fetch(this.url, {
          method: "POST",
          headers: this.headers(),
          body: this.body(events),
          keepalive: true,
        })
        .catch(() => undefined);
    }
    if (rest.length > 0) this.platform.save?.(this.queueKey, JSON.stringify(rest));
  }

  private remember(identity: Identity): Identity {
    this.platform.save?.(ID_KEY, JSON.stringify(identity));
    return identity;
  }

  private schedule(): void {
    this.timer ??= this.platform.setTimer(
      () => {
        this.timer = undefined;
        void this.flush();
      },
      this.options.flushInterval,
      true,
    );
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0 && !this.stopped) {
      let count = 0;
      let chars = 0;
      while (count < Math.min(this.queue.length, this.options.maxBatchSize)) {
        chars += this.queue[count]!.length;
        if (count > 0 && chars > MAX_BATCH_CHARS) break;
        count++;
      }
      this.current = this.queue.splice(0, count);
      await this.send(this.current);
      this.current = [];
    }
  }

  /** Sends one batch until it is stored, refused, or out of retries. */
  private async send(batch: string[]): Promise<void> {
    for (let attempt = 0; ; ) {
      const answer = await this.post(batch);
      const { status } = answer;
      if (status >= 200 && status < 300) return;
      let error: { code?: string; message?: string; details?: { index?: number; message?: string }[] } = {};
      try {
        error = JSON.parse(answer.text ?? "").error ?? {};
      } catch {
        // not Tidemark's JSON error (a proxy's page): the status says enough
      }
      const reason = `Tidemark answered ${status || "nothing"}${error.message ? `: ${error.message}` : ""}`;
      if (status === 400 && error.details) {
        // A batch is refused whole, with every problem's index: drop the events at fault and send
        // the others again at once, so one bad event does not lose its neighbours.
        const bad = new Set(error.details.map((d) => d.index));
        const kept = batch.filter((_, i) => !bad.has(i));
        if (kept.length > 0 && kept.length < batch.length) {
          this.fail(
            batch.filter((_, i) => bad.has(i)),
            reason,
            status,
            error.code,
          );
          batch = kept;
          continue;
        }
      }
      if (status === 413 && batch.length > 1) {
        // Too large: each half on its own.
        const half = Math.ceil(batch.length / 2);
        await this.send(batch.slice(0, half));
        await this.send(batch.slice(half));
        return;
      }
      if (!isRetryable(status) || attempt >= this.options.maxRetries || this.stopped) {
        this.fail(batch, attempt > 0 ? `${reason} (after ${attempt} retries)` : reason, status, error.code);
        return;
      }
      const delay = retryDelay(
        attempt++,
        answer.retryAfter,
        { baseMs: this.options.retryBaseMs, maxMs: this.options.retryMaxMs },
        this.platform.random,
      );
      await new Promise<void>((resolve) => this.platform.setTimer(resolve, delay));
      if (this.stopped) return;
    }
  }

  private async post(batch: string[]): Promise<Answer> {
    const headers = this.headers();
    let body: string | Uint8Array = this.body(batch);
    if (this.options.gzip && this.platform.gzip) {
      const compressed = await this.platform.gzip(body).catch(() => undefined);
      if (compressed) {
        body = compressed;
        headers["content-encoding"] = "gzip";
      }
    }
    const size = typeof body === "string" ? utf8Length(body) : body.length;
    const keepalive = !!this.platform.keepalive && size <= KEEPALIVE_BUDGET - this.keepaliveBytes;
    const abort = new AbortController();
    const timer = this.platform.setTimer(() => abort.abort(), this.options.timeoutMs);
    if (keepalive) this.keepaliveBytes += size;
    try {
      const response = await this.platform.fetch(this.url, {
        method: "POST",
        headers,
        body: body as BodyInit,
        signal: abort.signal,
        keepalive,
      });
      return {
        status: response.status,
        retryAfter: parseRetryAfter(response.headers.get("retry-after"), this.platform.now()),
        text: await response.text(),
      };
    } catch {
      return { status: 0 };
    } finally {
      this.platform.clearTimer(timer);
      if (keepalive) this.keepaliveBytes -= size;
    }
  }

  private headers(): Record<string, string> {
    return { authorization: `Bearer ${this.options.apiKey}`, "content-type": "application/json" };
  }

  /** The batch body; `sent_at` is the time of this attempt, so Tidemark can correct a wrong clock. */
  private body(events: string[]): string {
    return `{"events":[${events.join(",")}],"sent_at":"${new Date(this.platform.now()).toISOString()}"}`;
  }

  private fail(events: string[], message: string, status: number, code?: string): void {
    if (events.length > 0) {
      this.options.onError(
        new TidemarkError(
          message,
          status,
          events.map((e) => JSON.parse(e)),
          code,
        ),
      );
    }
  }
}

import { Client, type Properties, type TidemarkOptions } from "./client.js";
import { uuidv4 } from "./uuid.js";

export type { Properties, TidemarkOptions, TrackOptions, WireEvent } from "./client.js";
export { TidemarkError } from "./client.js";

function storage(): Storage | undefined {
  try {
    return localStorage;
  } catch {
    // blocked (sandboxed frames, some privacy settings): the ids live as long as the page
    return undefined;
  }
}

/**
 * Tidemark's client for the browser. The anonymous id is kept in localStorage, so a visitor keeps
 * it across pages and visits. Bodies are gzip-compressed with CompressionStream where the browser
 * has it. When the page is hidden or left, waiting events go out with fetch `keepalive`.
 */
export class Tidemark extends Client {
  constructor(options: TidemarkOptions) {
    const send = options.fetch ?? fetch;
    const store = storage();
    super(options, {
      fetch: (url, init) => send(url, init),
      now: Date.now,
      setTimer: (run, ms) => setTimeout(run, ms),
      clearTimer: (timer) => clearTimeout(timer as number),
      random: Math.random,
      uuid: uuidv4,
      gzip:
        typeof CompressionStream === "function"
          ? async (body) =>
              new Uint8Array(
                await new Response(
                  new Blob([body]).stream().pipeThrough(new CompressionStream("gzip")),
                ).arrayBuffer(),
              )
          : undefined,
      load: (key) => {
        try {
          return store?.getItem(key) ?? null;
        } catch {
          return null;
        }
      },
      save: (key, value) => {
        try {
          if (value === null) store?.removeItem(key);
          else store?.setItem(key, value);
        } catch {
          // full or blocked: the id lives as long as the page
        }
      },
      keepalive: true,
    });
    const unload = () => this.unload();
    addEventListener("pagehide", unload);
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "hidden") unload();
    });
  }

  /** Tracks a "Page View" with the page's `path` (the dashboard's default breakdown) and `referrer`. */
  page(properties?: Properties): string | undefined {
    return this.track("Page View", {
      path: location.pathname,
      ...(document.referrer ? { referrer: document.referrer } : {}),
      ...properties,
    });
  }
}

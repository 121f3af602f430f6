import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError } from "./api/client";

/** A query's state: `slow` turns true when it has run for more than 200 ms. */
export interface AsyncState<T> {
  data?: T;
  error?: string;
  loading: boolean;
  slow: boolean;
}

export const SLOW_AFTER_MS = 200;

export function errorText(error: unknown): string {
  if (error instanceof ApiError) return error.describe();
  return error instanceof Error ? error.message : String(error);
}

/**
 * Runs `run` whenever `key` changes (and on `reload()`); an answer that arrives after a newer run
 * started is dropped, so the view never shows a stale answer over a fresh one.
 */
export function useAsync<T>(
  run: (() => Promise<T>) | undefined,
  key: string,
): AsyncState<T> & { reload(): void } {
  const [state, setState] = useState<AsyncState<T>>({ loading: run !== undefined, slow: false });
  const [tick, setTick] = useState(0);
  const generation = useRef(0);
  useEffect(() => {
    if (!run) return;
    const mine = ++generation.current;
    setState((previous) => ({ ...previous, loading: true, slow: false, error: undefined }));
    const timer = setTimeout(() => {
      if (mine === generation.current) setState((previous) => ({ ...previous, slow: true }));
    }, SLOW_AFTER_MS);
    run().then(
      (data) => {
        clearTimeout(timer);
        if (mine === generation.current) setState({ data, loading: false, slow: false });
      },
      (error: unknown) => {
        clearTimeout(timer);
        if (mine === generation.current) setState({ error: errorText(error), loading: false, slow: false });
      },
    );
    return () => clearTimeout(timer);
  }, [key, tick]);
  return { ...state, reload: () => setTick((n) => n + 1) };
}

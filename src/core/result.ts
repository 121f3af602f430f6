/**
 * What a pipeline step reports for a unit of work, instead of throwing: the caller decides what
 * to do and every drop is counted.
 */
export type StepResult<T> =
  | { kind: "ok"; value: T }
  | { kind: "retry"; reason: string; error?: unknown }
  | { kind: "drop"; reason: string }
  | { kind: "dead_letter"; reason: string };

export const ok = <T>(value: T): StepResult<T> => ({ kind: "ok", value });
export const retry = (reason: string, error?: unknown): StepResult<never> => ({
  kind: "retry",
  reason,
  error,
});
export const drop = (reason: string): StepResult<never> => ({ kind: "drop", reason });
export const deadLetter = (reason: string): StepResult<never> => ({ kind: "dead_letter", reason });

/**
 * Event time handling. Clients send ISO 8601 strings or epoch milliseconds; Tidemark stores
 * epoch milliseconds in UTC.
 *
 * - A string without an offset is read as UTC.
 * - Clock skew: when the client also says when it sent the request (`sent_at`, per event or per
 *   batch), the event time is shifted by `received_at - sent_at`, so a device whose clock is an
 *   hour off still records the right time.
 * - Far future: an event more than the tolerance (24 h by default) ahead of receipt is clamped to
 *   the receipt time and the response carries a warning; it is never dropped.
 * - Before 2000-01-01 is rejected: it is almost always seconds sent where milliseconds belong.
 *
 * Both range rules apply to the final time, after the skew correction (`resolveEventTime`), so the
 * time handed to a store always lies between 2000-01-01 and receipt plus the tolerance, whatever
 * `sent_at` says: every store takes it, and a 202 is never followed by a refusal from the store.
 */
export const EARLIEST_TIMESTAMP_MS = Date.UTC(2000, 0, 1);
/** The last millisecond of year 9999: no client time beyond it is read. */
export const LATEST_TIMESTAMP_MS = Date.UTC(9999, 11, 31, 23, 59, 59, 999);
const ISO_8601 =
  /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?(Z|z|[+-]\d{2}(?::?\d{2})?)?$/;
const DIGITS = /^\d{1,16}$/;

export type TimestampParse = { ok: true; ms: number } | { ok: false; message: string };

/** Parses an ISO 8601 string or epoch milliseconds (number or digit string). */
export function parseTimestamp(input: unknown): TimestampParse {
  if (typeof input === "number") return fromEpochMs(input);
  if (typeof input !== "string")
    return { ok: false, message: "must be an ISO 8601 string or epoch milliseconds" };
  if (DIGITS.test(input)) return fromEpochMs(Number(input));
  const match = ISO_8601.exec(input);
  if (!match) return { ok: false, message: "must be an ISO 8601 string or epoch milliseconds" };
  const [, y, mo, d, h = "0", mi = "0", s = "0", frac = "", offset = "Z"] = match;
  const year = Number(y);
  const month = Number(mo);
  const day = Number(d);
  const hour = Number(h);
  const minute = Number(mi);
  const second = Number(s);
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) {
    return { ok: false, message: "is not a valid date and time" };
  }
  const millis = Math.floor(Number(`0.${frac || "0"}`) * 1000);
  let ms = Date.UTC(year, month - 1, day, hour, minute, Math.min(second, 59), millis);
  if (new Date(ms).getUTCDate() !== day) return { ok: false, message: "is not a valid date" };
  if (offset !== "Z" && offset !== "z") {
    const sign = offset.startsWith("-") ? -1 : 1;
    const digits = offset.slice(1).replace(":", "");
    const offsetMinutes = Number(digits.slice(0, 2)) * 60 + Number(digits.slice(2) || "0");
    ms -= sign * offsetMinutes * 60_000;
  }
  return checkRange(ms);
}

function fromEpochMs(ms: number): TimestampParse {
  if (!Number.isFinite(ms)) return { ok: false, message: "must be a finite number of epoch milliseconds" };
  return checkRange(Math.floor(ms));
}

function checkRange(ms: number): TimestampParse {
  if (ms < EARLIEST_TIMESTAMP_MS) {
    return { ok: false, message: "is before 2000-01-01 (epoch seconds instead of milliseconds?)" };
  }
  if (ms > LATEST_TIMESTAMP_MS) return { ok: false, message: "is after year 9999" };
  return { ok: true, ms };
}

export type ResolvedTime =
  | {
      ok: true;
      ms: number;
      /** Set when the time was clamped: a warning for the response. */
      clamped: boolean;
    }
  | { ok: false; message: string };

/**
 * The event time to store: the client's time corrected for skew, clamped to receipt time when
 * it lies further in the future than the tolerance; receipt time when the client sent none.
 * Refused when the correction moves it before 2000-01-01 (a `sent_at` from a clock far ahead).
 */
export function resolveEventTime(
  clientMs: number | undefined,
  sentAtMs: number | undefined,
  receivedAtMs: number,
  futureToleranceMs: number,
): ResolvedTime {
  if (clientMs === undefined) return { ok: true, ms: receivedAtMs, clamped: false };
  const skew = sentAtMs === undefined ? 0 : receivedAtMs - sentAtMs;
  const corrected = clientMs + skew;
  if (corrected > receivedAtMs + futureToleranceMs) return { ok: true, ms: receivedAtMs, clamped: true };
  if (corrected < EARLIEST_TIMESTAMP_MS) {
    return {
      ok: false,
      message:
        sentAtMs === undefined
          ? "is before 2000-01-01"
          : "is before 2000-01-01 once corrected for the clock skew that sent_at gives; check the device clock, or send no sent_at",
    };
  }
  return { ok: true, ms: corrected, clamped: false };
}

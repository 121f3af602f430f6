import type { StoredEvent } from "../../core/event.js";

/** The format of a stream entry's `e` field; bump when it changes, and keep decoding the old one. */
export const CODEC_VERSION = "1";

type Row = [string, string, string, string, number, string, number];

/** Events as one compact JSON array of rows. */
export function encodeEvents(events: readonly StoredEvent[]): string {
  const rows: Row[] = events.map((e) => [
    e.projectId,
    e.uuid,
    e.event,
    e.distinctId,
    e.timestamp,
    e.properties,
    e.receivedAt,
  ]);
  return JSON.stringify(rows);
}

const isString = (v: unknown): v is string => typeof v === "string";
const isNumber = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);

/** The events of an entry, or why they cannot be read (the entry then goes to the dead letters). */
export function decodeEvents(
  version: string | undefined,
  payload: string | undefined,
): { events: StoredEvent[] } | { problem: string } {
  if (version !== CODEC_VERSION) return { problem: `unknown message version ${JSON.stringify(version)}` };
  if (payload === undefined) return { problem: "message without events" };
  let rows: unknown;
  try {
    rows = JSON.parse(payload);
  } catch {
    return { problem: "message is not JSON" };
  }
  if (!Array.isArray(rows) || rows.length === 0) return { problem: "message is not a list of events" };
  const events: StoredEvent[] = [];
  for (const row of rows) {
    if (
      !Array.isArray(row) ||
      row.length !== 7 ||
      !isString(row[0]) ||
      !isString(row[1]) ||
      !isString(row[2]) ||
      !isString(row[3]) ||
      !isNumber(row[4]) ||
      !isString(row[5]) ||
      !isNumber(row[6])
    ) {
      return { problem: "message holds a malformed event" };
    }
    events.push({
      projectId: row[0],
      uuid: row[1],
      event: row[2],
      distinctId: row[3],
      timestamp: row[4],
      properties: row[5],
      receivedAt: row[6],
    });
  }
  return { events };
}

/**
 * The `r` field of an entry holding several requests: each one's number of events, in order
 * (`3,1,1`). Entries of one request have none, and workers that predate it read the entry whole.
 */
export function encodeRequests(sizes: readonly number[]): string {
  return sizes.join(",");
}

/** The sizes of an `r` field, or a problem when they do not describe `events` events. */
export function decodeRequests(field: string, events: number): { sizes: number[] } | { problem: string } {
  const sizes = field.split(",").map(Number);
  if (!sizes.every((n) => Number.isInteger(n) && n > 0) || sizes.reduce((a, b) => a + b, 0) !== events)
    return { problem: `request sizes ${JSON.stringify(field)} do not describe its ${events} events` };
  return { sizes };
}

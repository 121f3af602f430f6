import type { StoredEvent } from "../../core/event.js";

/** A message value is the JSON of one StoredEvent; its key is the project id (one partition per project). */
export function encodeEvent(event: StoredEvent): Buffer {
  return Buffer.from(JSON.stringify(event));
}

/** The event in a message value, or the reason it is not one (the message is then dropped). */
export function decodeEvent(value: Buffer | undefined): StoredEvent | string {
  if (!value) return "empty message";
  let parsed: unknown;
  try {
    parsed = JSON.parse(value.toString("utf8"));
  } catch {
    return "not JSON";
  }
  const e = parsed as Partial<Record<keyof StoredEvent, unknown>>;
  if (
    typeof e !== "object" ||
    e === null ||
    typeof e.projectId !== "string" ||
    typeof e.uuid !== "string" ||
    typeof e.event !== "string" ||
    typeof e.distinctId !== "string" ||
    typeof e.properties !== "string" ||
    typeof e.timestamp !== "number" ||
    typeof e.receivedAt !== "number"
  ) {
    return "not a StoredEvent";
  }
  return {
    projectId: e.projectId,
    uuid: e.uuid,
    event: e.event,
    distinctId: e.distinctId,
    timestamp: e.timestamp,
    properties: e.properties,
    receivedAt: e.receivedAt,
  };
}

import type { CommitOutcome, Ledger, LedgerDelta, StoredEvent } from "../core/event.js";

/**
 * The ledger is stored as (project_id, outcome, n) rows in every SQL backend: `received`,
 * `accepted`, `duplicate`, `rate_limited` and `rejected:<reason>`. These two helpers convert
 * between those rows and the API's shapes.
 */
export function ledgerRows(deltas: ReadonlyMap<string, LedgerDelta>): [string, string, number][] {
  const rows: [string, string, number][] = [];
  for (const [projectId, delta] of deltas) {
    for (const outcome of ["received", "accepted", "duplicate", "rate_limited"] as const) {
      const n = delta[outcome];
      if (n) rows.push([projectId, outcome, n]);
    }
    for (const [reason, n] of Object.entries(delta.rejected ?? {})) {
      if (n) rows.push([projectId, `rejected:${reason}`, n]);
    }
  }
  return rows;
}

export function readLedgerRows(
  rows: Iterable<readonly [string, bigint | number | string]>,
  stored: number,
): Ledger {
  const ledger: Ledger = { received: 0, accepted: 0, duplicate: 0, rate_limited: 0, rejected: {}, stored };
  for (const [outcome, raw] of rows) {
    const n = Number(raw);
    if (outcome.startsWith("rejected:")) ledger.rejected[outcome.slice("rejected:".length)] = n;
    else if (
      outcome === "received" ||
      outcome === "accepted" ||
      outcome === "duplicate" ||
      outcome === "rate_limited"
    ) {
      ledger[outcome] = n;
    }
  }
  return ledger;
}

/** Adds `b` into `a`. */
export function mergeLedgerDelta(a: LedgerDelta, b: LedgerDelta): LedgerDelta {
  for (const key of ["received", "accepted", "duplicate", "rate_limited"] as const) {
    if (b[key]) a[key] = (a[key] ?? 0) + b[key];
  }
  if (b.rejected) {
    a.rejected ??= {};
    for (const [reason, n] of Object.entries(b.rejected)) a.rejected[reason] = (a.rejected[reason] ?? 0) + n;
  }
  return a;
}

/** The key that makes an event a duplicate: its uuid within its project. */
export const eventKey = (e: StoredEvent): string => `${e.projectId}/${e.uuid}`;

/**
 * What one commit did, from the keys (`eventKey`) the store inserted: the first copy of each
 * inserted key is accepted; every other copy (already stored, or repeated in the same commit) is
 * a duplicate. Gives the answer for the caller and the ledger counts per project from the same
 * walk, so the two cannot disagree.
 */
export function commitResult(
  events: readonly StoredEvent[],
  insertedKeys: Pick<ReadonlySet<string>, "has" | "size">,
): { outcome: CommitOutcome; ledger: Map<string, LedgerDelta> } {
  // Each inserted key is one of the events': as many keys as events means every event is inserted
  // and none is a copy, so no key need be built (2.5 µs an event otherwise, 760-event commits).
  if (insertedKeys.size === events.length) return allAccepted(events);
  const ledger = new Map<string, LedgerDelta>();
  const counted = new Set<string>();
  const duplicates: number[] = [];
  events.forEach((e, index) => {
    const key = eventKey(e);
    const delta = ledger.get(e.projectId) ?? { accepted: 0, duplicate: 0 };
    if (insertedKeys.has(key) && !counted.has(key)) {
      counted.add(key);
      delta.accepted = (delta.accepted ?? 0) + 1;
    } else {
      delta.duplicate = (delta.duplicate ?? 0) + 1;
      duplicates.push(index);
    }
    ledger.set(e.projectId, delta);
  });
  return { outcome: { inserted: counted.size, duplicates }, ledger };
}

/** commitResult of a commit whose every event was inserted. */
function allAccepted(events: readonly StoredEvent[]): {
  outcome: CommitOutcome;
  ledger: Map<string, LedgerDelta>;
} {
  const ledger = new Map<string, LedgerDelta>();
  for (const e of events) {
    const delta = ledger.get(e.projectId);
    if (delta) delta.accepted = (delta.accepted ?? 0) + 1;
    else ledger.set(e.projectId, { accepted: 1, duplicate: 0 });
  }
  return { outcome: { inserted: events.length, duplicates: [] }, ledger };
}

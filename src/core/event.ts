/** An event as Tidemark stores it, after validation and timestamp normalisation. */
export interface StoredEvent {
  projectId: string;
  uuid: string;
  event: string;
  distinctId: string;
  /** Epoch milliseconds, UTC, after clock-skew correction and clamping. */
  timestamp: number;
  /** The properties object serialised as JSON text. */
  properties: string;
  /** Epoch milliseconds at which the API received the request. */
  receivedAt: number;
}

/** What happened to each event of a commit, for the response and the ledger. */
export interface CommitOutcome {
  inserted: number;
  /** uuids that were already stored for their project (retries). */
  duplicateUuids: string[];
}

/** Event counters per project: the loss ledger. Every figure counts events. */
export interface LedgerDelta {
  received?: number;
  accepted?: number;
  duplicate?: number;
  rate_limited?: number;
  /** rejected events by reason, e.g. `validation_failed`, `payload_too_large`. */
  rejected?: Record<string, number>;
}

export interface Ledger {
  received: number;
  accepted: number;
  duplicate: number;
  rate_limited: number;
  rejected: Record<string, number>;
  stored: number;
}

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
  /** Events stored by this commit. */
  inserted: number;
  /**
   * Positions, in the events given to the commit and in ascending order, of those not stored: a
   * duplicate is defined per (projectId, uuid), so an event is one when its project already
   * stored its uuid, or when the same project's uuid comes earlier in the same commit (the first
   * copy is the one stored). Another project's use of the uuid makes no duplicate.
   */
  duplicates: number[];
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
  /**
   * cdc: events the analytics store holds for the project (ClickHouse). Below `stored` while the
   * pipeline is catching up, so the lag is visible; absent where one store answers everything.
   */
  analytics_stored?: number;
}

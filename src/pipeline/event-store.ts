import type { CommitOutcome, Ledger, LedgerDelta, StoredEvent } from "../core/event.js";
import type { QueryResult, QuerySpec } from "../query/spec.js";
import type { Lifecycle } from "./lifecycle.js";

/**
 * The store of record for events: the first durable home of an accepted event in the embedded
 * and sync pipelines, the worker's destination in async.
 *
 * Contract:
 * - `insert` is atomic (all or nothing) and idempotent by (projectId, uuid): an event whose uuid
 *   is already stored for its project, or repeats earlier in the same call, is not stored again
 *   and its position is reported in `duplicates`. When it resolves, the rows are durable
 *   (committed).
 * - `insert` adds the accepted and duplicate counts to the ledger in the same transaction, so
 *   `accepted` always equals what was stored through Tidemark.
 * - `recordLedger` adds counts the API knows (received, rejected, rate limited).
 */
/** One store commit as seen by whoever drives it (group commit, worker): for metrics and tests. */
export interface CommitReport {
  events: number;
  durationMs: number;
  /** What the store did, when the commit succeeded. */
  outcome?: CommitOutcome;
  /** Why it failed, when it did. */
  error?: unknown;
}

export interface EventStore extends Lifecycle {
  insert(events: readonly StoredEvent[]): Promise<CommitOutcome>;
  recordLedger(deltas: ReadonlyMap<string, LedgerDelta>): Promise<void>;
  readLedger(projectId: string): Promise<Ledger>;
  /** Removes every event and ledger row of a project. */
  deleteProject(projectId: string): Promise<void>;
}

/**
 * Answers analytics queries for one project. Implementations must give identical answers for the
 * same data (the conformance suite checks this), and never splice user input into SQL.
 */
export interface AnalyticsStore extends Lifecycle {
  query(projectId: string, spec: QuerySpec): Promise<QueryResult>;
}

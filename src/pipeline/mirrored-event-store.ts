import type { CommitOutcome, Ledger, LedgerDelta, StoredEvent } from "../core/event.js";
import type { EventSink } from "./event-sink.js";
import type { EventStore } from "./event-store.js";

/**
 * The store of record as the API of the cdc pipeline sees it: Postgres, plus the analytics store
 * that is fed from it asynchronously.
 *
 * - `readLedger` adds `analytics_stored` (what ClickHouse holds), so the lag is visible.
 * - `deleteProject` deletes from the store of record first, then from the analytics store; the
 *   sink drops events of a deleted project it still meets in the event log, so none come back.
 * - `insert` and `recordLedger` are the store of record's own.
 */
export class MirroredEventStore implements EventStore {
  readonly name: string;

  constructor(
    private readonly record: EventStore,
    private readonly analytics: EventSink,
  ) {
    this.name = `${record.name}+${analytics.name}`;
  }

  async start(): Promise<void> {
    await this.record.start();
    await this.analytics.start();
  }

  async ready(): Promise<string | undefined> {
    return (await this.record.ready()) ?? (await this.analytics.ready());
  }

  async close(): Promise<void> {
    await this.analytics.close();
    await this.record.close();
  }

  insert(events: readonly StoredEvent[]): Promise<CommitOutcome> {
    return this.record.insert(events);
  }

  recordLedger(deltas: ReadonlyMap<string, LedgerDelta>): Promise<void> {
    return this.record.recordLedger(deltas);
  }

  async readLedger(projectId: string): Promise<Ledger> {
    const [ledger, analyticsStored] = await Promise.all([
      this.record.readLedger(projectId),
      this.analytics.countEvents(projectId),
    ]);
    return { ...ledger, analytics_stored: analyticsStored };
  }

  async deleteProject(projectId: string): Promise<void> {
    await this.record.deleteProject(projectId);
    await this.analytics.deleteProject(projectId);
  }
}

import type { Config } from "../config/config.js";
import type { Log } from "../core/log.js";
import { ok, retry, type StepResult } from "../core/result.js";
import type { ChangeBatch, ChangeFeed } from "../pipeline/change-feed.js";
import type { EventLogProducer } from "../pipeline/event-log.js";
import type { PipelineParts } from "../pipeline/parts.js";
import { RoleLoop } from "./role-loop.js";

export interface CdcOptions {
  /** Most events per publish (whole transactions: a larger one is published whole). */
  batchEvents: number;
  /** How long a read waits for committed events. */
  waitMs: number;
  retryMinMs: number;
  retryMaxMs: number;
  log?: Log;
  /** After every batch the event log acknowledged: events published, rows dropped by the feed. */
  onPublished?: (events: number, dropped: number) => void;
}

/** The cdc role of the configured pipeline, from the parts the composition root made. */
export function buildCdc(
  config: Config,
  parts: PipelineParts,
  hooks: Pick<CdcOptions, "log" | "onPublished"> = {},
): CdcRole {
  if (!parts.changeFeed || !parts.eventLog) {
    throw new Error(`the ${config.pipeline} pipeline gave this process no change feed and event log`);
  }
  return new CdcRole(parts.changeFeed, parts.eventLog, {
    batchEvents: config.flushMaxEvents,
    waitMs: 200,
    retryMinMs: 100,
    retryMaxMs: 5000,
    ...hooks,
  });
}

/**
 * The cdc role: moves committed events from the store of record's change feed to the event log,
 * and acknowledges the feed's position only once the log acknowledged the events (acks=all), so a
 * crash at any point replays from the last acknowledged position and loses nothing.
 *
 * One cdc process per replication slot: the feed lets one reader stream at a time, and a second
 * process waits (logging that it waits) until the first is gone. Kafka unreachable: the batch is
 * published again with backoff, never skipped; the slot keeps the WAL meanwhile (its lag is on
 * /metrics, with a warning in the log past TIDEMARK_CDC_SLOT_LAG_WARN_BYTES).
 *
 * Closing finishes the batch in hand, unless Kafka is away: then it is replayed at the next start.
 */
export class CdcRole extends RoleLoop {
  readonly name = "cdc";

  constructor(
    private readonly feed: ChangeFeed,
    private readonly eventLog: EventLogProducer,
    private readonly options: CdcOptions,
  ) {
    super();
  }

  protected async run(): Promise<void> {
    let backoff = this.options.retryMinMs;
    while (!this.stopping) {
      let batch: ChangeBatch | undefined;
      try {
        batch = await this.feed.read(this.options.batchEvents, this.options.waitMs);
        backoff = this.options.retryMinMs;
      } catch (error) {
        this.options.log?.warn({ err: error }, "cdc cannot read the change feed; retrying");
        await this.sleep(backoff);
        backoff = Math.min(backoff * 2, this.options.retryMaxMs);
        continue;
      }
      if (!batch) continue;
      if (!(await this.publishUntilDone(batch))) return;
      try {
        await this.feed.acknowledge(batch.position);
      } catch (error) {
        // The next acknowledgement covers this one; at worst the batch is published again.
        this.options.log?.warn({ err: error }, "cdc could not acknowledge the change feed");
      }
      this.options.onPublished?.(batch.events.length, batch.dropped);
    }
  }

  /** True once the log acknowledged the batch; false when the role stopped first. */
  private async publishUntilDone(batch: ChangeBatch): Promise<boolean> {
    if (batch.events.length === 0) return true;
    let backoff = this.options.retryMinMs;
    for (;;) {
      const result = await this.publish(batch);
      if (result.kind === "ok") return true;
      if (this.stopping) return false; // not acknowledged: the feed hands it out again after restart
      this.options.log?.warn(
        { err: result.kind === "retry" ? result.error : undefined, events: batch.events.length },
        "cdc cannot publish to the event log; retrying",
      );
      await this.sleep(backoff);
      backoff = Math.min(backoff * 2, this.options.retryMaxMs);
    }
  }

  private async publish(batch: ChangeBatch): Promise<StepResult<void>> {
    try {
      await this.eventLog.publish(batch.events);
      return ok(undefined);
    } catch (error) {
      return retry("event log unavailable", error);
    }
  }
}

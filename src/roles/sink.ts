import type { Config } from "../config/config.js";
import type { StoredEvent } from "../core/event.js";
import type { Log } from "../core/log.js";
import { drop, ok, retry, type StepResult } from "../core/result.js";
import type { EventLogConsumer, LogBatch } from "../pipeline/event-log.js";
import type { EventSink } from "../pipeline/event-sink.js";
import type { PipelineParts } from "../pipeline/parts.js";
import type { ProjectStore } from "../pipeline/project-store.js";
import { RoleLoop } from "./role-loop.js";

export interface SinkOptions {
  batchEvents: number;
  waitMs: number;
  /** How long a batch gathers once its first event arrived, unless batchEvents are there first. */
  lingerMs?: number;
  retryMinMs: number;
  retryMaxMs: number;
  /** How long "this project exists" is believed before asking again (a deletion is believed forever). */
  projectCacheMs?: number;
  log?: Log;
  /** After every batch the analytics store acknowledged. */
  onWritten?: (report: SinkReport) => void;
  /** Events dropped, by reason (counted and logged). */
  onDropped?: (reason: string, events: number) => void;
}

export interface SinkReport {
  events: number;
  durationMs: number;
  /** Per event: milliseconds from the API's receipt to the analytics store's acknowledgement. */
  visibilityMs: number[];
}

/** The sink role of the configured pipeline, from the parts the composition root made. */
export function buildSink(
  config: Config,
  parts: PipelineParts,
  hooks: Pick<SinkOptions, "log" | "onWritten" | "onDropped"> = {},
): SinkRole {
  if (!parts.logConsumer || !parts.sink) {
    throw new Error(`the ${config.pipeline} pipeline gave this process no event log consumer and sink`);
  }
  return new SinkRole(parts.logConsumer, parts.sink, parts.projects, {
    batchEvents: config.sinkBatch,
    waitMs: 100,
    lingerMs: config.sinkLingerMs,
    retryMinMs: 100,
    retryMaxMs: 5000,
    ...hooks,
  });
}

/**
 * The sink role: reads the event log in batches as one member of a consumer group, writes each
 * batch to the analytics store, and commits the offsets only once the store acknowledged. Any
 * number of sinks share the partitions; a crash or a rebalance replays from the last commit, and
 * the store's idempotent write (by project and uuid) keeps answers exact.
 *
 * - Store unreachable: the batch is written again with backoff, never skipped or committed.
 * - Events of a deleted project (a replay after the deletion, or events in flight when it
 *   happened) are dropped, counted and logged, so a deleted project never comes back. A project
 *   deleted while its events were being written is checked again after the write (uncached) and
 *   deleted again in the store: the API's delete may have run before the write landed.
 * - Messages that are not events are dropped by the consumer (counted and logged).
 * - A batch lingers (`lingerMs`, TIDEMARK_SINK_LINGER_MS) until `batchEvents` are there or its
 *   oldest event has waited that long. Written as soon as they arrived, the events of the cdc
 *   bench (10K events/s) went to ClickHouse in about 10 inserts a second of about 1,000 rows; every
 *   insert is a new part of each table, and ClickHouse merged 7.5 rows for each row inserted. At
 *   250 ms: about 3 inserts a second, 3.4 merged rows a row, and ClickHouse's query threads used
 *   3.4–5.3 CPU-s instead of 6.0–9.8 in the 30 s run, for 80–180 ms more visibility at P50
 *   (benchmarks/README.md, Stage 3).
 *
 * Closing finishes the batch in hand, unless the store is away: then it is read again after restart.
 */
export class SinkRole extends RoleLoop {
  readonly name = "sink";
  private readonly deleted = new Set<string>();
  private readonly existing = new Map<string, number>();

  constructor(
    private readonly consumer: EventLogConsumer,
    private readonly sink: EventSink,
    private readonly projects: ProjectStore,
    private readonly options: SinkOptions,
  ) {
    super();
  }

  protected async run(): Promise<void> {
    let backoff = this.options.retryMinMs;
    while (!this.stopping) {
      let batch: LogBatch;
      try {
        batch = await this.consumer.read(
          this.options.batchEvents,
          this.options.waitMs,
          this.options.lingerMs,
        );
        backoff = this.options.retryMinMs;
      } catch (error) {
        this.options.log?.warn({ err: error }, "sink cannot read the event log; retrying");
        await this.sleep(backoff);
        backoff = Math.min(backoff * 2, this.options.retryMaxMs);
        continue;
      }
      if (batch.events.length === 0 && batch.dropped === 0) continue;
      if (batch.dropped > 0) this.options.onDropped?.("undecodable", batch.dropped);
      if (!(await this.writeUntilDone(batch.events))) return;
      await this.consumer.commit(batch);
    }
  }

  /** True once the batch is in the analytics store; false when the role stopped first. */
  private async writeUntilDone(events: readonly StoredEvent[]): Promise<boolean> {
    let backoff = this.options.retryMinMs;
    for (;;) {
      const result = await this.write(events);
      if (result.kind === "ok" || result.kind === "drop") return true;
      if (this.stopping) return false;
      this.options.log?.warn(
        { err: result.kind === "retry" ? result.error : undefined, events: events.length },
        "sink cannot write to the analytics store; retrying",
      );
      await this.sleep(backoff);
      backoff = Math.min(backoff * 2, this.options.retryMaxMs);
    }
  }

  private async write(events: readonly StoredEvent[]): Promise<StepResult<number>> {
    let kept: StoredEvent[];
    try {
      kept = await this.withoutDeletedProjects(events);
    } catch (error) {
      return retry("project store unavailable", error);
    }
    if (kept.length === 0) return events.length === 0 ? ok(0) : drop("deleted project");
    const started = performance.now();
    try {
      await this.sink.write(kept);
    } catch (error) {
      return retry("analytics store unavailable", error);
    }
    const now = Date.now();
    this.options.onWritten?.({
      events: kept.length,
      durationMs: performance.now() - started,
      visibilityMs: kept.map((e) => now - e.receivedAt),
    });
    try {
      await this.undoIfDeletedMeanwhile(kept);
    } catch (error) {
      // Written again after the retry, then checked again: the batch is not committed until then.
      return retry("could not check for deletions after the write", error);
    }
    return ok(kept.length);
  }

  /**
   * A project deleted while its events were being written: the API's delete in the analytics
   * store may have run before this write landed, so delete again. Asked without the cache: a
   * deletion that happens after this check runs its own delete after the write.
   */
  private async undoIfDeletedMeanwhile(written: readonly StoredEvent[]): Promise<void> {
    const projects = [...new Set(written.map((e) => e.projectId))];
    const found = await Promise.all(projects.map((id) => this.projects.get(id)));
    for (const [i, projectId] of projects.entries()) {
      if (found[i]) continue;
      this.deleted.add(projectId);
      this.existing.delete(projectId);
      await this.sink.deleteProject(projectId);
      const events = written.filter((e) => e.projectId === projectId).length;
      this.options.onDropped?.("deleted_project", events);
      this.options.log?.warn(
        { projectId, events },
        "sink deleted events of a project deleted while they were written",
      );
    }
  }

  private async withoutDeletedProjects(events: readonly StoredEvent[]): Promise<StoredEvent[]> {
    const now = Date.now();
    const ttl = this.options.projectCacheMs ?? 2000;
    // Asked all at once, as undoIfDeletedMeanwhile does: one after the other, a batch of the cdc
    // bench's 50 projects waited for 50 round trips to Postgres every other batch.
    const unsure = [...new Set(events.map((e) => e.projectId))].filter(
      (projectId) => !this.deleted.has(projectId) && (this.existing.get(projectId) ?? 0) <= now,
    );
    const found = await Promise.all(unsure.map((projectId) => this.projects.get(projectId)));
    for (const [i, projectId] of unsure.entries()) {
      if (found[i]) this.existing.set(projectId, now + ttl);
      else {
        this.existing.delete(projectId);
        this.deleted.add(projectId);
      }
    }
    const kept = events.filter((e) => !this.deleted.has(e.projectId));
    if (kept.length < events.length) {
      const dropped = events.length - kept.length;
      this.options.onDropped?.("deleted_project", dropped);
      this.options.log?.warn(
        {
          events: dropped,
          projects: [...new Set(events.filter((e) => this.deleted.has(e.projectId)).map((e) => e.projectId))],
        },
        "sink dropped events of deleted projects",
      );
    }
    return kept;
  }
}

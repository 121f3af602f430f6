import type { DuckDBConnection } from "@duckdb/node-api";
import type { Log } from "../../core/log.js";
import { Dictionary, EVENT_NAMES } from "./duckdb.dictionary.js";
import { Progress } from "./duckdb.progress.js";
import { FillQueue, rewriteInTimeSlices, SLICE_EVENTS } from "./duckdb.time-slices.js";

/**
 * Event names as integers (schema 9): the `eid` every commit writes beside an event's name, and
 * which queries filter by instead of the name once every stored event of the project has one.
 *
 * Every event committed since schema 9 has its `eid`. A store migrated from schema 8 lists its
 * projects in `event_ids_pending`: their older events have none yet, and a background fill writes
 * them, a project at a time, in slices of time on the write queue (duckdb.time-slices.ts); the
 * project leaves the list when its last slice is written. Until then its queries filter by name,
 * which answers the same.
 */
export class EventIds {
  readonly names = new Dictionary(EVENT_NAMES);
  private readonly pending = new Set<string>();
  private readonly fills = new FillQueue();
  private readonly serialWrites: (work: () => Promise<void>) => Promise<void>;
  private readonly sliceEvents: number;
  private readonly log?: Log;

  constructor(options: {
    /** Runs `work` in turn with the store's other writers of stored rows (duckdb.write-queue.ts). */
    serialWrites: (work: () => Promise<void>) => Promise<void>;
    /** Events a fill writes in one transaction (SLICE_EVENTS by default; tests make it small). */
    sliceEvents?: number;
    log?: Log;
  }) {
    this.serialWrites = options.serialWrites;
    this.sliceEvents = options.sliceEvents ?? SLICE_EVENTS;
    this.log = options.log;
  }

  /**
   * Loads the names and the pending projects, then fills those in the background on `connection`
   * (the fills' own; a stop interrupts it).
   */
  async open(reader: DuckDBConnection, connection: DuckDBConnection): Promise<void> {
    await this.names.open(reader);
    const pending = await reader.runAndReadAll("SELECT CAST(project_id AS VARCHAR) FROM event_ids_pending");
    this.pending.clear();
    for (const [projectId] of pending.getRowsJS() as [string][]) this.pending.add(projectId);
    this.fills.use(connection);
    if (this.pending.size === 0) return;
    // One line for the whole fill: a store may hold thousands of projects (each long one also
    // says its progress every 10 s).
    const started = performance.now();
    const filled = { projects: 0, events: 0 };
    for (const projectId of this.pending)
      void this.fills.add(
        async () => {
          filled.events += await this.fill(connection, projectId);
          filled.projects++;
        },
        (error) =>
          this.log?.warn(
            { err: error, project_id: projectId },
            "filling the event ids failed; queries filter by name until the next start retries it",
          ),
      );
    void this.fills.settled().then(() => {
      if (filled.projects > 0)
        this.log?.info(
          { ...filled, pending: this.pending.size, took_ms: Math.round(performance.now() - started) },
          "event ids filled",
        );
    });
  }

  /**
   * The id to filter a project's events by for `event`: undefined while some stored event of the
   * project may lack its id, or for a name the store has never seen (its events, if a commit
   * stores some meanwhile, are found by name).
   */
  idOf(projectId: string, event: string): number | undefined {
    if (this.pending.has(projectId)) return undefined;
    return this.names.get(`${projectId}/${event}`);
  }

  forgetProject(projectId: string): void {
    this.names.forgetProject(projectId);
    this.pending.delete(projectId);
  }

  /** Stops a running fill (the next start resumes it) and waits for the queue to end. */
  close(): Promise<void> {
    return this.fills.close();
  }

  /** Resolves when every pending project's fill has ended. */
  settled(): Promise<void> {
    return this.fills.settled();
  }

  /**
   * Writes the id of every stored event of the project that has none, and returns how many it
   * wrote. Commits since the store opened write theirs, so once this is done every event has one.
   * A stop midway leaves the project pending, and the next start fills what is left. On 10M
   * events of one project: 1.9 s, the process's peak RSS 586 MB (at the default 512MB cap).
   */
  private async fill(connection: DuckDBConnection, projectId: string): Promise<number> {
    const rows = await rewriteInTimeSlices({
      connection,
      projectId,
      sliceEvents: this.sliceEvents,
      serialWrites: this.serialWrites,
      progress: new Progress(this.log, "filling the event ids: progress", { project_id: projectId }),
      stopping: () => this.fills.closing,
      update: (table, time) => ({
        sql: `UPDATE ${table} SET eid = n.eid FROM event_names n
          WHERE ${[
            `${table}.project_id = CAST($1 AS UUID)`,
            `${table}.eid IS NULL`,
            ...time,
            `n.project_id = ${table}.project_id`,
            `n.event = ${table}.event`,
          ].join(" AND ")}`,
        params: [projectId],
      }),
    });
    await this.serialWrites(async () => {
      await connection.run("DELETE FROM event_ids_pending WHERE project_id = CAST($1 AS UUID)", [projectId]);
    });
    this.pending.delete(projectId);
    return rows;
  }
}

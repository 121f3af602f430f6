import type { DuckDBConnection } from "@duckdb/node-api";
import type { Log } from "../../core/log.js";
import type { PropertyColumns } from "../../query/sql-builder.js";
import { hasOversizedRowGroups } from "./duckdb.database.js";
import { jsonPointer } from "./duckdb.dialect.js";
import { Progress } from "./duckdb.progress.js";
import { type EventTable, PROPERTY_SLOTS, slotColumns } from "./duckdb.schema.js";
import { FillQueue, rewriteInTimeSlices, SLICE_EVENTS } from "./duckdb.time-slices.js";

interface Slot {
  name: string;
  slot: number;
  /** Every stored event of the project has the slot filled: queries may read it. */
  ready: boolean;
}

/** DuckDB's json_type names of JSON numbers, as the dialect's propertyNumber reads them. */
const NUMBER_TYPES = "('BIGINT', 'UBIGINT', 'DOUBLE', 'HUGEINT')";

/**
 * Which properties of each project are kept as typed columns (slots) beside the JSON, as PostHog
 * materializes the properties its queries read most.
 *
 * A property earns a slot the first time a query reads it, while the project has a free one (of
 * PROPERTY_SLOTS). From then on every commit fills the slot, and a background fill writes it for
 * the events stored before; once that is done the slot is `ready` and queries read the column
 * instead of parsing JSON (on 10M events: top values of a property 2,038 → 46 ms, a breakdown
 * 189 → 40 ms). Until then, and for properties without a slot, queries read the JSON: the answer
 * is the same either way, since the column holds exactly what the JSON functions return.
 */
export class PropertyColumnRegistry {
  private readonly byProject = new Map<string, Slot[]>();
  private readonly fills = new FillQueue();
  private readonly requested = new Set<string>();
  private readonly full = new Set<string>();

  /** Slot columns the event tables have: 0..columnsPresent-1 (PRESET_SLOTS, then added as needed). */
  private columnsPresent = 0;
  private readonly log?: Log;
  private readonly commitsUnderWay: () => Promise<void>;
  private readonly withoutCommits: (work: () => Promise<void>) => Promise<void>;
  private readonly divertCommits: (diverted: boolean) => void;
  private readonly whileDiverted: () => Promise<void>;
  private readonly serialWrites: (work: () => Promise<void>) => Promise<void>;
  private readonly fillSliceEvents: number;

  constructor(options: {
    /** Resolves when the commits under way now have ended: a fill must see every one of them. */
    commitsUnderWay: () => Promise<void>;
    /**
     * Runs work while no commit runs (adding a column alters the table commits write). It must
     * never wait for `serialWrites`: the registry calls it from within one.
     */
    withoutCommits: (work: () => Promise<void>) => Promise<void>;
    /**
     * Sends every commit's events to `events_late` (true) or back to their own tables (false).
     * Called only within `withoutCommits`, so no commit is split between the two.
     */
    divertCommits: (diverted: boolean) => void;
    /** Awaited while commits are diverted, before `events_in_order` is altered (tests hold it). */
    whileDiverted?: () => Promise<void>;
    /**
     * Runs `work` in turn with the store's other writers of stored rows (duckdb.day-order.ts):
     * an UPDATE of rows another transaction moves would fail on the conflict.
     */
    serialWrites?: (work: () => Promise<void>) => Promise<void>;
    /** Events a fill writes in one transaction (SLICE_EVENTS by default). */
    fillSliceEvents?: number;
    log?: Log;
  }) {
    this.commitsUnderWay = options.commitsUnderWay;
    this.withoutCommits = options.withoutCommits;
    this.divertCommits = options.divertCommits;
    this.whileDiverted = options.whileDiverted ?? (() => Promise.resolve());
    this.serialWrites = options.serialWrites ?? ((work) => work());
    this.fillSliceEvents = options.fillSliceEvents ?? SLICE_EVENTS;
    this.log = options.log;
  }

  private connection?: DuckDBConnection;

  /**
   * Loads the slots, on a connection of the registry's own (its fills run beside the commits), and
   * resumes the fills a stop interrupted.
   */
  async open(connection: DuckDBConnection): Promise<void> {
    this.connection = connection;
    this.fills.use(connection);
    this.byProject.clear();
    const columns = await connection.runAndReadAll(
      "SELECT count(*) FROM duckdb_columns() WHERE table_name = 'events_in_order' AND schema_name = 'main' AND column_name LIKE 'p%_text'",
    );
    const [[present = 0n] = []] = columns.getRowsJS() as [bigint][];
    this.columnsPresent = Number(present);
    const reader = await connection.runAndReadAll(
      "SELECT CAST(project_id AS VARCHAR), name, slot, ready FROM property_columns ORDER BY project_id, slot",
    );
    for (const [projectId, name, slot, ready] of reader.getRowsJS() as [string, string, number, boolean][]) {
      const entry = { name, slot, ready };
      this.slotsOf(projectId).push(entry);
      if (!ready) this.schedule(projectId, name, () => this.fill(projectId, entry));
    }
  }

  /** The slots commits fill for a project, in slot order (0, 1, ...): each JSON pointer's column. */
  pathsToFill(projectId: string): readonly string[] {
    return (this.byProject.get(projectId) ?? []).map((s) => jsonPointer(s.name));
  }

  /** The ready columns of a project's properties, for the query builder. */
  columnsFor(projectId: string): PropertyColumns {
    const slots = this.byProject.get(projectId) ?? [];
    return (name) => {
      const slot = slots.find((s) => s.name === name && s.ready);
      return slot ? slotColumns(slot.slot) : undefined;
    };
  }

  /**
   * Gives each named property a slot if it has none and the project has one free, and fills it in
   * the background. Returns at once; the fills run one at a time.
   */
  request(projectId: string, names: Iterable<string>): void {
    for (const name of names) {
      if (this.full.has(projectId) || this.slotsOf(projectId).some((s) => s.name === name)) continue;
      this.schedule(projectId, name, () => this.assignAndFill(projectId, name));
    }
  }

  private schedule(projectId: string, name: string, work: () => Promise<void>): void {
    const key = `${projectId}/${name}`;
    if (this.fills.closing || this.requested.has(key)) return;
    this.requested.add(key);
    void this.fills
      .add(work, (error) => {
        this.log?.warn(
          { err: error, project_id: projectId, property: name },
          "property column fill failed; queries read the JSON until the next start retries it",
        );
      })
      .finally(() => this.requested.delete(key));
  }

  /** Stops a running fill (the next start resumes it) and waits for the queue to end. */
  close(): Promise<void> {
    return this.fills.close();
  }

  /** Resolves when every fill requested so far has ended. */
  settled(): Promise<void> {
    return this.fills.settled();
  }

  forgetProject(projectId: string): void {
    this.byProject.delete(projectId);
    this.full.delete(projectId);
  }

  private slotsOf(projectId: string): Slot[] {
    let slots = this.byProject.get(projectId);
    if (!slots) {
      slots = [];
      this.byProject.set(projectId, slots);
    }
    return slots;
  }

  private async assignAndFill(projectId: string, name: string): Promise<void> {
    const slots = this.slotsOf(projectId);
    if (slots.some((s) => s.name === name)) return;
    if (slots.length >= PROPERTY_SLOTS) {
      this.full.add(projectId);
      this.log?.info(
        { project_id: projectId, property: name, slots: PROPERTY_SLOTS },
        "every property column of the project is taken; queries on this property read the JSON",
      );
      return;
    }
    const slot: Slot = { name, slot: slots.length, ready: false };
    if (slot.slot >= this.columnsPresent) {
      // The write queue's turn first: the other way round, commits also waited for the write under
      // way (on 100M events, a part of a day's sort takes about 3.5 s). Nothing holding the commits'
      // writer waits for the write queue: no deadlock.
      await this.serialWrites(() => this.addColumns(slot.slot));
      this.columnsPresent = slot.slot + 1;
    }
    await this.connectionOrThrow().run(
      "INSERT INTO property_columns VALUES (CAST($1 AS UUID), $2, $3, false)",
      [projectId, name, slot.slot],
    );
    // From here every new commit fills the slot; the fill covers the commits before.
    slots.push(slot);
    await this.fill(projectId, slot);
  }

  /**
   * Adds slot `slot`'s columns to both event tables (slots from PRESET_SLOTS on). An ALTER writes
   * the new column for every row of its table, and DuckDB refuses to alter a table another
   * transaction writes: commits must keep off it. `events_late` is small, and commits wait for its
   * ALTER; then they go on into it while `events_in_order` is altered, which took 0.47-0.84 s on 10M
   * events and 8.6-13.2 s on 100M (benchmarks/README.md), all of it a stall of every commit when
   * both were altered together. The view `events` unites the tables by name, so readers see either
   * table with or without the columns; no query reads them before the slot's fill makes it ready.
   * Events diverted into `events_late` are sorted into their days with its late ones
   * (duckdb.day-order.ts). The next checkpoint, which writes the new column for every row, still
   * makes commits wait (DuckDB 1.5: 1.1-2.8 s for a 20M-row table; benchmarks/README.md).
   */
  private async addColumns(slot: number): Promise<void> {
    const connection = this.connectionOrThrow();
    const { text, number } = slotColumns(slot);
    const alter = async (table: EventTable) => {
      await connection.run("BEGIN TRANSACTION");
      try {
        await connection.run(`ALTER TABLE ${table} ADD COLUMN IF NOT EXISTS ${text} VARCHAR`);
        await connection.run(`ALTER TABLE ${table} ADD COLUMN IF NOT EXISTS ${number} DOUBLE`);
        await connection.run("COMMIT");
      } catch (error) {
        await connection.run("ROLLBACK").catch(() => undefined);
        throw error;
      }
    };
    // A table whose last row group is larger than ROW_GROUP_ROWS must be checkpointed after the
    // ALTER, before any commit appends to it (hasOversizedRowGroups). FORCE waits for the queries
    // under way; no write runs. Read before commits are held: nothing makes a group larger while
    // the store runs.
    const oversized = {
      late: await hasOversizedRowGroups(connection, "events_late"),
      inOrder: await hasOversizedRowGroups(connection, "events_in_order"),
    };
    const started = performance.now();
    let held = 0;
    /** `work` with commits held, counting how long they are held (not the wait for the one under way). */
    const holding = (work: () => Promise<void>) =>
      this.withoutCommits(async () => {
        const from = performance.now();
        try {
          await work();
        } finally {
          held += performance.now() - from;
        }
      });
    await holding(async () => {
      await alter("events_late");
      if (oversized.late) await connection.run("FORCE CHECKPOINT");
      this.divertCommits(true);
    });
    let altered = false;
    try {
      await this.whileDiverted();
      await alter("events_in_order");
      altered = true;
    } finally {
      await holding(async () => {
        if (altered && oversized.inOrder) await connection.run("FORCE CHECKPOINT");
        this.divertCommits(false);
      });
    }
    this.log?.info(
      {
        slot,
        checkpointed: oversized.late || oversized.inOrder,
        took_ms: Math.round(performance.now() - started),
        commits_held_ms: Math.round(held),
      },
      "property column added to the event tables",
    );
  }

  /**
   * Writes the slot for every event committed before it was assigned, then marks it ready: in
   * slices of time (SLICE_EVENTS), each one write on the database's write queue
   * (duckdb.time-slices.ts). A fill a stop interrupts is done again at the next start (writing a
   * slot twice writes the same values).
   */
  private async fill(projectId: string, slot: Slot): Promise<void> {
    await this.commitsUnderWay();
    const connection = this.connectionOrThrow();
    const started = performance.now();
    const { text, number } = slotColumns(slot.slot);
    const rows = await rewriteInTimeSlices({
      connection,
      projectId,
      sliceEvents: this.fillSliceEvents,
      serialWrites: this.serialWrites,
      progress: new Progress(this.log, "filling a property column: progress", {
        project_id: projectId,
        property: slot.name,
        slot: slot.slot,
      }),
      stopping: () => this.fills.closing,
      update: (table, time) => ({
        sql: `UPDATE ${table} SET ${text} = json_extract_string(properties, $2),
               ${number} = CASE WHEN json_type(properties, $2) IN ${NUMBER_TYPES} THEN CAST(json_extract_string(properties, $2) AS DOUBLE) END
             WHERE ${["project_id = CAST($1 AS UUID)", ...time].join(" AND ")}`,
        params: [projectId, jsonPointer(slot.name)],
      }),
    });
    await connection.run(
      "UPDATE property_columns SET ready = true WHERE project_id = CAST($1 AS UUID) AND name = $2",
      [projectId, slot.name],
    );
    slot.ready = true;
    this.log?.info(
      {
        project_id: projectId,
        property: slot.name,
        slot: slot.slot,
        events: rows,
        took_ms: Math.round(performance.now() - started),
      },
      "property column ready",
    );
  }

  private connectionOrThrow(): DuckDBConnection {
    if (!this.connection) throw new Error("the property column registry is not open");
    return this.connection;
  }
}

/** The SQL expressions of slot values computed from a commit's rows (`x`: texts, `y`: JSON types). */
export function slotValueColumns(count: number): { columns: string[]; values: string[] } {
  const columns: string[] = [];
  const values: string[] = [];
  for (let slot = 0; slot < count; slot++) {
    const { text, number } = slotColumns(slot);
    columns.push(text, number);
    values.push(
      `x[${slot + 1}]`,
      `CASE WHEN y[${slot + 1}] IN ${NUMBER_TYPES} THEN CAST(x[${slot + 1}] AS DOUBLE) END`,
    );
  }
  return { columns, values };
}

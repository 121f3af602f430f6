import type { DuckDBConnection } from "@duckdb/node-api";
import type { Log } from "../../core/log.js";
import type { PropertyColumns } from "../../query/sql-builder.js";
import { jsonPointer } from "./duckdb.dialect.js";
import { Progress } from "./duckdb.progress.js";
import { EVENT_TABLES, PROPERTY_SLOTS, slotColumns } from "./duckdb.schema.js";

interface Slot {
  name: string;
  slot: number;
  /** Every stored event of the project has the slot filled: queries may read it. */
  ready: boolean;
}

/**
 * Events a fill writes in one transaction. An UPDATE holds what it changed in memory until it
 * commits: on 10M events, one UPDATE of a slot's two columns raised the process's peak RSS by 528
 * MB and took 6.5 s; slices of 1M rows by 313 MB in 4.8 s (245K rows: 236 MB in 6.0 s). With one
 * statement, a 100M-event project's fill would need several GB beside the store's cap.
 */
const FILL_SLICE_EVENTS = 1_000_000;

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
  private filling: Promise<void> = Promise.resolve();
  private readonly requested = new Set<string>();
  private readonly full = new Set<string>();

  /** Slot columns the events table has: 0..columnsPresent-1 (added when first needed). */
  private columnsPresent = 0;
  private readonly log?: Log;
  private readonly commitsUnderWay: () => Promise<void>;
  private readonly withoutCommits: (work: () => Promise<void>) => Promise<void>;
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
     * Runs `work` in turn with the store's other writers of stored rows (duckdb.day-order.ts):
     * an UPDATE of rows another transaction moves would fail on the conflict.
     */
    serialWrites?: (work: () => Promise<void>) => Promise<void>;
    /** Events a fill writes in one transaction (FILL_SLICE_EVENTS by default). */
    fillSliceEvents?: number;
    log?: Log;
  }) {
    this.commitsUnderWay = options.commitsUnderWay;
    this.withoutCommits = options.withoutCommits;
    this.serialWrites = options.serialWrites ?? ((work) => work());
    this.fillSliceEvents = options.fillSliceEvents ?? FILL_SLICE_EVENTS;
    this.log = options.log;
  }

  private connection?: DuckDBConnection;
  private closing = false;

  /**
   * Loads the slots, on a connection of the registry's own (its fills run beside the commits), and
   * resumes the fills a stop interrupted.
   */
  async open(connection: DuckDBConnection): Promise<void> {
    this.connection = connection;
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
    if (this.closing || this.requested.has(key)) return;
    this.requested.add(key);
    this.filling = this.filling
      .then(() => (this.closing ? undefined : work()))
      .catch((error: unknown) => {
        this.log?.warn(
          { err: error, project_id: projectId, property: name },
          "property column fill failed; queries read the JSON until the next start retries it",
        );
      })
      .finally(() => this.requested.delete(key));
  }

  /** Stops a running fill (the next start resumes it) and waits for the queue to end. */
  async close(): Promise<void> {
    this.closing = true;
    this.connection?.interrupt();
    await this.filling;
  }

  /** Resolves when every fill requested so far has ended. */
  settled(): Promise<void> {
    return this.filling;
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
      const { text, number } = slotColumns(slot.slot);
      // The write queue's turn first, then the commits held back for the ALTER alone: the other
      // way round, commits also waited for the write under way (on 100M events, a part of a day's
      // sort takes about 3.5 s), while the ALTER of a slot's columns took 578-683 ms on 10M
      // events. Nothing holding the commits' writer waits for the write queue: no deadlock.
      await this.serialWrites(() =>
        this.withoutCommits(async () => {
          const connection = this.connectionOrThrow();
          // One transaction: a reader of the view `events` must never see one table with the
          // columns and the other without.
          await connection.run("BEGIN TRANSACTION");
          try {
            for (const table of EVENT_TABLES) {
              await connection.run(`ALTER TABLE ${table} ADD COLUMN IF NOT EXISTS ${text} VARCHAR`);
              await connection.run(`ALTER TABLE ${table} ADD COLUMN IF NOT EXISTS ${number} DOUBLE`);
            }
            await connection.run("COMMIT");
          } catch (error) {
            await connection.run("ROLLBACK").catch(() => undefined);
            throw error;
          }
        }),
      );
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
   * Writes the slot for every event committed before it was assigned, then marks it ready. The
   * events are written in slices of their time (FILL_SLICE_EVENTS), each slice of both tables one
   * write on the database's write queue: the slices run from no lower bound to no upper bound, so
   * they cover every event whatever its time, and time, unlike a rowid, never changes under a
   * slice. A fill a stop interrupts is done
   * again at the next start (writing a slot twice writes the same values).
   */
  private async fill(projectId: string, slot: Slot): Promise<void> {
    await this.commitsUnderWay();
    const connection = this.connectionOrThrow();
    const started = performance.now();
    const { text, number } = slotColumns(slot.slot);
    const bounds = await this.sliceBounds(connection, projectId);
    const progress = new Progress(this.log, "filling a property column: progress", {
      project_id: projectId,
      property: slot.name,
      slot: slot.slot,
    });
    let rows = 0;
    for (let i = 0; i <= bounds.length; i++) {
      if (this.closing) throw new Error("stopping: the fill resumes at the next start");
      const time = [
        i > 0 ? `timestamp >= epoch_ms(${bounds[i - 1]})` : "",
        i < bounds.length ? `timestamp < epoch_ms(${bounds[i]})` : "",
      ].filter((condition) => condition !== "");
      // Both tables in one write: sorting a day moves its late events into `events_in_order`
      // (duckdb.day-order.ts) between two writes, never within one, so no row of the slice is
      // missed by being moved from the table not yet filled to the one already filled.
      await this.serialWrites(async () => {
        for (const table of EVENT_TABLES) {
          const reader = await connection.runAndReadAll(
            `UPDATE ${table} SET ${text} = json_extract_string(properties, $2),
               ${number} = CASE WHEN json_type(properties, $2) IN ${NUMBER_TYPES} THEN CAST(json_extract_string(properties, $2) AS DOUBLE) END
             WHERE ${["project_id = CAST($1 AS UUID)", ...time].join(" AND ")}`,
            [projectId, jsonPointer(slot.name)],
          );
          const [[updated = 0n] = []] = reader.getRowsJS() as [bigint][];
          rows += Number(updated);
        }
      });
      progress.step(i + 1, bounds.length + 1, rows);
    }
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

  /**
   * Where the fill's time slices start (epoch ms, ascending): every `fillSliceEvents` events of the
   * project by the hourly counts (`event_counts`, kept in each commit's transaction), cut at whole
   * hours. An hour holding more events than a slice is one slice.
   */
  private async sliceBounds(connection: DuckDBConnection, projectId: string): Promise<number[]> {
    const reader = await connection.runAndReadAll(
      `SELECT epoch_ms(hour), sum(n) FROM event_counts WHERE project_id = CAST($1 AS UUID)
       GROUP BY hour ORDER BY hour`,
      [projectId],
    );
    const bounds: number[] = [];
    let inSlice = 0;
    for (const [hour, n] of reader.getRowsJS() as [bigint, bigint][]) {
      if (inSlice > 0 && inSlice + Number(n) > this.fillSliceEvents) {
        bounds.push(Number(hour));
        inSlice = 0;
      }
      inSlice += Number(n);
    }
    return bounds;
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

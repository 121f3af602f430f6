import type { StoredEvent } from "../../core/event.js";
import type { EventSink } from "../../pipeline/event-sink.js";
import { UUID_TEXT } from "../../query/clickhouse-builder.js";
import { clickhouseLiteral as lit } from "../../query/clickhouse-literal.js";
import type { ClickHouseDatabase } from "./clickhouse.database.js";
import { type ClickHouseEventRow, toClickHouseRow } from "./clickhouse.rows.js";
import { rollupSelect, USER_ROLLUPS } from "./clickhouse.schema.js";

/**
 * Time ranges per duplicate lookup. 18.16 analyses a long OR of key ranges slowly: measured on
 * 1M rows, 2,000 recent events looked up in 60-90 ms with 4-8 ranges, 120+ ms with 16, 0.6-1.2 s
 * with 64-250 (an empty lookup costs ~50 ms there, on a loaded machine).
 */
const MAX_RANGES = 8;
/** uuids per lookup query: bounds the SQL text (the client raises max_query_size to 16 MiB). */
const LOOKUP_CHUNK = 10_000;

/**
 * Writes events into ClickHouse so that a replay never shows twice (the EventSink contract): a batch
 * is deduplicated in itself, then the (project, uuid) pairs ClickHouse already holds are looked up
 * and left out, and the rest goes in as one INSERT.
 *
 * The lookup is exact, not best effort, because of how the sink role runs: Kafka messages are keyed
 * by project, each partition is consumed by one sink at a time, and that sink writes a batch only
 * after the previous one resolved. So nothing else writes this project's rows between the lookup and
 * the insert. An insert that failed half way (a part per month is written separately) leaves some
 * rows behind; the retry finds them and writes only the rest. The engine (ReplacingMergeTree on the
 * full key) folds the copies left by the one case outside that rule, two sinks on a partition during
 * a Kafka rebalance, at its next merge. README.md beside this file has the measurements behind this
 * choice.
 */
export class ClickHouseEventSink implements EventSink {
  readonly name = "clickhouse-sink";

  constructor(private readonly db: ClickHouseDatabase) {}

  start(): Promise<void> {
    return this.db.open();
  }

  ready(): Promise<string | undefined> {
    return this.db.ready();
  }

  close(): Promise<void> {
    return this.db.close();
  }

  async write(events: readonly StoredEvent[]): Promise<void> {
    const unique = new Map<string, ClickHouseEventRow>();
    for (const event of events) {
      const row = toClickHouseRow(event);
      const key = rowKey(row.project_id, row.uuid);
      if (!unique.has(key)) unique.set(key, row);
    }
    const rows = [...unique.values()];
    const stored = await this.stored(rows);
    const fresh = rows.filter((row) => !stored.has(rowKey(row.project_id, row.uuid)));
    if (fresh.length < rows.length)
      await this.rederiveRollups(rows.filter((row) => stored.has(rowKey(row.project_id, row.uuid))));
    await this.db.insert(this.db.eventsTable, fresh);
  }

  /**
   * Writes again the daily users rollups' rows of events found already stored. ClickHouse feeds
   * the rollups from an insert after writing its events, part by part, so an insert that failed
   * half way (or a sink that died in between) can leave events whose rows the views never wrote;
   * the replay that follows finds those events stored and would not insert them again. Copies of
   * rows the views did write count once (clickhouse.schema.ts), and so do those of another of the
   * rows' projects that the conditions may also find (a stored row with one of their uuids).
   */
  private async rederiveRollups(rows: readonly ClickHouseEventRow[]): Promise<void> {
    for (const where of rowsWhere(rows))
      for (const rollup of USER_ROLLUPS)
        await this.db.command(
          `INSERT INTO ${this.db.database}.${rollup.table} ${rollupSelect(rollup, this.db.eventsTable, where)}`,
        );
  }

  /**
   * The (project, uuid) keys (rowKey) among `rows` that ClickHouse already holds. A replayed row
   * has the same time as the stored one, so the query names the time ranges of the batch's events:
   * the primary key (project, event, ts, uuid) then narrows the read, for each project and event
   * name, to the granules that can hold them, a few thousand rows for a batch of recent events,
   * however large the table (README.md beside this file has the figures). One query for all the
   * batch's projects: one a project cost ClickHouse 3-5 ms each, 40 of them a batch of the cdc
   * bench (50 projects).
   */
  private async stored(rows: readonly ClickHouseEventRow[]): Promise<Set<string>> {
    const found = new Set<string>();
    for (const where of rowsWhere(rows)) {
      const sql = `SELECT project_id, uuid FROM ${this.db.eventsTable} WHERE ${where}`;
      for (const row of await this.db.query<{ project_id: string; uuid: string }>(sql))
        found.add(rowKey(row.project_id, row.uuid));
    }
    return found;
  }

  async deleteProject(projectId: string): Promise<void> {
    // mutations_sync does not exist on 18.16: wait for the mutation by polling until no row is left.
    const project = lit(projectId.toLowerCase());
    await this.db.command(`ALTER TABLE ${this.db.eventsTable} DELETE WHERE project_id = ${project}`);
    await this.db.command(
      `ALTER TABLE ${this.db.database}.events_newest DELETE WHERE project_id = ${project}`,
    );
    // The rollups hold rows only for UUID project ids (clickhouse.schema.ts, rollupSelect).
    const inRollups = UUID_TEXT.test(projectId.toLowerCase()) ? `project = toUUID(${project})` : undefined;
    if (inRollups)
      for (const { table } of USER_ROLLUPS)
        await this.db.command(`ALTER TABLE ${this.db.database}.${table} DELETE WHERE ${inRollups}`);
    const anyLeft = async () => {
      if ((await this.countEvents(projectId)) > 0) return true;
      if (!inRollups) return false;
      for (const { table } of USER_ROLLUPS) {
        const [row] = await this.db.query<{ n: number | string }>(
          `SELECT count() AS n FROM ${this.db.database}.${table} WHERE ${inRollups}`,
        );
        if (Number(row?.n ?? 0) > 0) return true;
      }
      return false;
    };
    const deadline = Date.now() + 60_000;
    while (await anyLeft()) {
      if (Date.now() > deadline)
        throw new Error(`ClickHouse did not delete project ${projectId} within 60 s`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  /**
   * Rows, not `uniqExact(uuid)`: the sink never writes a (project, uuid) the table holds, so rows
   * are distinct events, and a count reads only the sorted project column (10M events: 1.2 s
   * against 22 s for uniqExact on the loaded bench machine). A copy left by two sinks during a
   * rebalance counts until the next merge folds it.
   */
  async countEvents(projectId: string): Promise<number> {
    const [row] = await this.db.query<{ n: number | string }>(
      `SELECT count() AS n FROM ${this.db.eventsTable} WHERE project_id = ${lit(projectId.toLowerCase())}`,
    );
    return Number(row?.n ?? 0);
  }
}

/** A row's identity in the table: project and uuid. */
function rowKey(projectId: string, uuid: string): string {
  return `${projectId} ${uuid}`;
}

/**
 * Conditions that find, in `events`, every row of `rows` (LOOKUP_CHUNK rows a condition) and
 * possibly rows of another of their projects with one of their uuids, which the caller tells apart
 * by project: the key's projects, the rows' times as a few ranges (so the primary key narrows the
 * read), their uuids.
 */
function rowsWhere(rows: readonly ClickHouseEventRow[]): string[] {
  const conditions: string[] = [];
  for (let i = 0; i < rows.length; i += LOOKUP_CHUNK) {
    const chunk = rows.slice(i, i + LOOKUP_CHUNK);
    const projects = [...new Set(chunk.map((r) => r.project_id))];
    const times = timeRanges(
      chunk.map((r) => r.ts),
      MAX_RANGES,
    );
    const [only] = projects;
    const project =
      projects.length === 1 && only !== undefined
        ? `project_id = ${lit(only)}`
        : `project_id IN (${projects.map((p) => lit(p)).join(", ")})`;
    conditions.push(`${project} AND (${times}) AND uuid IN (${uuidSet(chunk.map((r) => r.uuid))})`);
  }
  return conditions;
}

const PLAIN_UUID = /^[0-9a-f-]+$/;

/**
 * The uuids as the right side of IN. 18.16 takes ~40 ms just to analyse a literal list of 2,000
 * strings, but splits one string literal into an array in well under a millisecond; the list
 * form remains for a uuid that is not plain hex (the API only accepts uuids, so never in practice).
 */
function uuidSet(uuids: readonly string[]): string {
  if (uuids.every((u) => PLAIN_UUID.test(u))) {
    return `SELECT arrayJoin(splitByChar(',', ${lit(uuids.join(","))}))`;
  }
  return uuids.map((u) => lit(u)).join(", ");
}

/**
 * `ts BETWEEN a AND b OR ...` covering every timestamp in at most `max` ranges, split at the
 * widest gaps: a batch of recent events plus a few late ones reads a few granules, not the days
 * between them.
 */
function timeRanges(timestamps: readonly number[], max: number): string {
  const sorted = [...new Set(timestamps)].sort((a, b) => a - b);
  const cuts = sorted
    .slice(1)
    .map((t, i) => ({ at: i + 1, gap: t - (sorted[i] ?? t) }))
    .sort((a, b) => b.gap - a.gap)
    .slice(0, max - 1)
    .map((c) => c.at)
    .sort((a, b) => a - b);
  const bounds = [0, ...cuts, sorted.length];
  const ranges: string[] = [];
  for (let i = 0; i + 1 < bounds.length; i++) {
    const from = sorted[bounds[i] ?? 0] ?? 0;
    const to = sorted[(bounds[i + 1] ?? 0) - 1] ?? from;
    ranges.push(from === to ? `ts = ${lit(from)}` : `ts BETWEEN ${lit(from)} AND ${lit(to)}`);
  }
  return ranges.join(" OR ");
}

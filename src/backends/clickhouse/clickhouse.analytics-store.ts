import type { AnalyticsStore } from "../../pipeline/event-store.js";
import { ClickHouseQueryBuilder } from "../../query/clickhouse-builder.js";
import type { QueryResult, QuerySpec } from "../../query/spec.js";
import type { SqlStatement } from "../../query/sql-builder.js";
import { SqlQueryRunner } from "../../query/sql-runner.js";
import { type ClickHouseDatabase, toClickHouseQueryError } from "./clickhouse.database.js";

/**
 * Answers analytics queries from ClickHouse with the semantics of every other store: the SQL
 * comes from ClickHouseQueryBuilder, the shaping (zero-filled buckets, rates, cursors) from the
 * shared SqlQueryRunner. Reads need no FINAL or read-time dedup: the sink never writes a
 * (project, uuid) twice (see clickhouse.event-sink.ts).
 */
export class ClickHouseAnalyticsStore implements AnalyticsStore {
  readonly name = "clickhouse-analytics";
  /** Reads the daily users rollups where they answer; used once they are complete. */
  private readonly withRollups: SqlQueryRunner;
  /** Reads only the events (and property columns). */
  private readonly eventsOnly: SqlQueryRunner;

  constructor(private readonly db: ClickHouseDatabase) {
    const run = async ({ sql, tables }: SqlStatement) => {
      try {
        return await this.db.query(sql, tables);
      } catch (error) {
        throw toClickHouseQueryError(error);
      }
    };
    this.withRollups = new SqlQueryRunner(
      new ClickHouseQueryBuilder(db.eventsTable, db.rollups, db.propertyColumns),
      run,
    );
    this.eventsOnly = new SqlQueryRunner(
      new ClickHouseQueryBuilder(db.eventsTable, undefined, db.propertyColumns),
      run,
    );
  }

  /** Resolves once the rollups' fill of this process ended (ClickHouseDatabase.rollupsFilled). */
  rollupsFilled(): Promise<void> {
    return this.db.rollupsFilled();
  }

  /** Whether queries read the rollups now (they are complete). */
  get rollupsReady(): boolean {
    return this.db.rollupsReady;
  }

  start(): Promise<void> {
    return this.db.open();
  }

  ready(): Promise<string | undefined> {
    return this.db.ready();
  }

  close(): Promise<void> {
    return this.db.close();
  }

  query(projectId: string, spec: QuerySpec): Promise<QueryResult> {
    return (this.db.rollupsReady ? this.withRollups : this.eventsOnly).query(projectId, spec);
  }
}

import type { AnalyticsStore } from "../../pipeline/event-store.js";
import { ClickHouseQueryBuilder } from "../../query/clickhouse-builder.js";
import type { QueryResult, QuerySpec } from "../../query/spec.js";
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
  private readonly runner: SqlQueryRunner;

  constructor(private readonly db: ClickHouseDatabase) {
    this.runner = new SqlQueryRunner(
      new ClickHouseQueryBuilder(db.eventsTable, db.rollups, db.propertyColumns),
      async ({ sql, tables }) => {
        try {
          return await this.db.query(sql, tables);
        } catch (error) {
          throw toClickHouseQueryError(error);
        }
      },
    );
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
    return this.runner.query(projectId, spec);
  }
}

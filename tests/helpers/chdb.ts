import { Session } from "chdb";
import type { ExternalTable } from "../../src/query/sql-builder.js";
import type { Row } from "../../src/query/sql-runner.js";

/**
 * Current ClickHouse in-process (npm `chdb`, ClickHouse 26.x), for checking that the SQL written
 * for the 18.16 server also runs on the releases production images ship. @clickhouse/client cannot
 * talk to it, so SQL text goes through chdb's own query API.
 */
export class Chdb {
  private readonly session = new Session();

  /**
   * Runs a SELECT. `tables` (a query's external data on the server) become tables of the session's
   * current database for this query alone, so the same SQL text reads them by name.
   */
  query(sql: string, tables: readonly ExternalTable[] = []): Promise<Row[]> {
    if (tables.length === 0) return this.select(sql);
    // One query with tables at a time: they share the tables' names (retention asks two at once).
    const result = this.withTablesTail.then(() => this.queryWithTables(sql, tables));
    this.withTablesTail = result.catch(() => undefined);
    return result;
  }

  private withTablesTail: Promise<unknown> = Promise.resolve();

  private async queryWithTables(sql: string, tables: readonly ExternalTable[]): Promise<Row[]> {
    for (const table of tables) {
      await this.session.queryAsync(`DROP TABLE IF EXISTS ${table.name}`);
      await this.session.queryAsync(`CREATE TABLE ${table.name} (${table.structure}) ENGINE = Memory`);
      if (table.rows.length > 0) await this.insert(table.name, table.rows);
    }
    try {
      return await this.select(sql);
    } finally {
      for (const table of tables) await this.session.queryAsync(`DROP TABLE IF EXISTS ${table.name}`);
    }
  }

  private async select(sql: string): Promise<Row[]> {
    const result = await this.session.queryAsync(sql, { format: "JSONEachRow" });
    const text = result.text().trim();
    return text === "" ? [] : text.split("\n").map((line) => JSON.parse(line) as Row);
  }

  async command(sql: string): Promise<void> {
    await this.session.queryAsync(sql);
  }

  async insert(table: string, rows: readonly object[]): Promise<void> {
    await this.session.insert({
      table,
      values: rows.map((row) => JSON.stringify(row)).join("\n"),
      format: "JSONEachRow",
    });
  }

  close(): void {
    this.session.cleanup();
  }
}

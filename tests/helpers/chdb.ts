import { Session } from "chdb";
import type { Row } from "../../src/query/sql-runner.js";

/**
 * Current ClickHouse in-process (npm `chdb`, ClickHouse 26.x), for checking that the SQL written
 * for the 18.16 server also runs on the releases production images ship. @clickhouse/client cannot
 * talk to it, so SQL text goes through chdb's own query API.
 */
export class Chdb {
  private readonly session = new Session();

  async query(sql: string): Promise<Row[]> {
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

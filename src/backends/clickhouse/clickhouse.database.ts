import { type ClickHouseClient, createClient } from "@clickhouse/client";
import { AppError } from "../../core/errors.js";
import type { Log } from "../../core/log.js";
import type { ClickHouseRollups } from "../../query/clickhouse-builder.js";
import type { ExternalTable } from "../../query/sql-builder.js";
import { applySchema, checkDatabaseName, fillRollups, rollupsOf } from "./clickhouse.schema.js";

export interface ClickHouseOptions {
  /** HTTP URL of the server, e.g. http://127.0.0.1:8123 (user and password may be in it). */
  url: string;
  /** The database holding Tidemark's tables; created at start. */
  database: string;
  /**
   * Event properties kept as columns of their own (TIDEMARK_CLICKHOUSE_PROPERTY_COLUMNS): added at
   * start when missing; filters, breakdowns and top values of them read the column.
   */
  propertyColumns?: readonly string[];
  /** How long start-up keeps trying to reach ClickHouse before giving up. */
  connectTimeoutMs?: number;
  /** Per request; a query or insert that takes longer fails (and the sink retries). */
  requestTimeoutMs?: number;
  log?: Log;
}

/**
 * Settings sent with every request. 18.16 quotes 64-bit integers in JSON output unless told not
 * to; best_effort keeps any ISO text a caller might send parseable (Tidemark sends epoch ms).
 * Values travel inside the SQL text (no query parameters on 18.16), so a spec with twenty long
 * filters or a sink's duplicate lookup can pass the default 256 KiB max_query_size.
 */
const SETTINGS = {
  output_format_json_quote_64bit_integers: 0,
  date_time_input_format: "best_effort",
  max_query_size: "16777216",
} as const;

const TRANSIENT =
  /ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|EHOSTUNREACH|socket hang up|Timeout error|other side closed/i;

/** True when the server could not be reached or went away: retrying later can succeed. */
export function isTransientClickHouseError(error: unknown): boolean {
  if (error instanceof AppError) return error.code === "unavailable";
  const code = (error as { code?: unknown } | undefined)?.code;
  if (typeof code === "string" && TRANSIENT.test(code)) return true;
  return error instanceof Error && TRANSIENT.test(error.message);
}

/** An unreachable ClickHouse becomes a 503 with Retry-After; anything else is left as it is. */
export function toClickHouseQueryError(error: unknown): unknown {
  if (error instanceof AppError || !isTransientClickHouseError(error)) return error;
  return new AppError("unavailable", {
    message: "The analytics store is unavailable; retry",
    retryAfter: 1,
    cause: error,
  });
}

/**
 * One HTTP client to ClickHouse (keep-alive pool inside), owned by the parts that use it: opening
 * waits for the server and applies the schema; closing releases the sockets. SQL goes in as text
 * (ClickHouse 18.16 takes no query parameters; see src/query/clickhouse-literal.ts).
 */
export class ClickHouseDatabase {
  readonly database: string;
  /** The events table, qualified. */
  readonly eventsTable: string;
  /** The daily users rollups beside `events`. */
  readonly rollups: ClickHouseRollups;
  /** The properties `events` keeps as columns (ClickHouseOptions.propertyColumns). */
  readonly propertyColumns: readonly string[];
  private client: ClickHouseClient | undefined;
  private opened: Promise<void> | undefined;
  private users = 0;
  private filling: Promise<void> | undefined;
  private filled = false;

  constructor(private readonly options: ClickHouseOptions) {
    this.database = checkDatabaseName(options.database);
    this.eventsTable = `${this.database}.events`;
    this.rollups = rollupsOf(this.database);
    this.propertyColumns = [...new Set(options.propertyColumns ?? [])];
  }

  /** Connects and migrates; shared by the sink and the analytics store (the first call does it). */
  open(): Promise<void> {
    this.users++;
    this.opened ??= this.connect();
    return this.opened;
  }

  private async connect(): Promise<void> {
    const url = new URL(this.options.url);
    this.client = createClient({
      url: `${url.protocol}//${url.host}`,
      username: decodeURIComponent(url.username) || "default",
      password: decodeURIComponent(url.password),
      request_timeout: this.options.requestTimeoutMs ?? 30_000,
      clickhouse_settings: SETTINGS,
      compression: { request: false, response: false },
      max_open_connections: 10,
    });
    const deadline = Date.now() + (this.options.connectTimeoutMs ?? 30_000);
    for (;;) {
      const problem = await this.ready();
      if (problem === undefined) break;
      if (Date.now() > deadline) throw new Error(`ClickHouse not reachable at ${url.host}: ${problem}`);
      this.options.log?.warn({ problem }, "waiting for ClickHouse");
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    await applySchema(this, this.database, this.propertyColumns);
    // The rollups of events stored before them are filled in the background: on a large store
    // that takes minutes (26.5 s for 10M events here), which a start must not wait for (an
    // orchestrator restarts a process that does not answer /health for that long, and the fill
    // would start over). Until they are complete, queries read the events.
    const log = this.options.log;
    this.filling = fillRollups(this, this.database, (message, fields) => log?.info(fields, message)).then(
      () => {
        this.filled = true;
      },
      (error: unknown) =>
        log?.error(
          { err: error },
          "filling the ClickHouse rollups failed; queries read the events until a start fills them",
        ),
    );
  }

  /** Whether the daily users rollups hold every stored event (fillRollups), so queries may read them. */
  get rollupsReady(): boolean {
    return this.filled;
  }

  /** Resolves once this process's fill of the rollups ended (complete, or failed and logged). */
  rollupsFilled(): Promise<void> {
    return this.filling ?? Promise.resolve();
  }

  async ready(): Promise<string | undefined> {
    if (!this.client) return "not started";
    try {
      const result = await this.client.ping();
      if (result.success) return undefined;
      return result.error.message;
    } catch (error) {
      return (error as Error).message;
    }
  }

  /**
   * Releases the connection once every part that opened it has closed it, after a fill of the
   * rollups in progress ended (so `tidemark migrate` completes it; a process killed instead leaves
   * it for the next start).
   */
  async close(): Promise<void> {
    this.users--;
    if (this.users > 0) return;
    await this.filling;
    await this.client?.close();
    this.client = undefined;
  }

  private get open_(): ClickHouseClient {
    if (!this.client) throw new Error("ClickHouseDatabase used before open()");
    return this.client;
  }

  /**
   * Runs a SELECT and returns its rows. `tables` travel with it as external data: the HTTP
   * interface's way to bind a table to one query, which @clickhouse/client does not send, so such
   * a query is one multipart request of its own (the query is a form field there: 18.16 refuses
   * URLs much past 16 KiB, and form fields past 256 KiB).
   */
  async query<T = Record<string, unknown>>(sql: string, tables?: readonly ExternalTable[]): Promise<T[]> {
    if (tables && tables.length > 0) return this.queryWithTables<T>(sql, tables);
    const result = await this.open_.query({ query: sql, format: "JSONEachRow" });
    return result.json<T>();
  }

  private async queryWithTables<T>(sql: string, tables: readonly ExternalTable[]): Promise<T[]> {
    if (!this.client) throw new Error("ClickHouseDatabase used before open()");
    const base = new URL(this.options.url);
    const url = new URL(`${base.protocol}//${base.host}/`);
    for (const [name, value] of Object.entries(SETTINGS)) url.searchParams.set(name, String(value));
    const form = new FormData();
    form.set("query", `${sql}\nFORMAT JSONEachRow`);
    for (const table of tables) {
      url.searchParams.set(`${table.name}_structure`, table.structure);
      url.searchParams.set(`${table.name}_format`, "JSONEachRow");
      form.set(table.name, new Blob([table.rows.map((row) => JSON.stringify(row)).join("\n")]), table.name);
    }
    const username = decodeURIComponent(base.username) || "default";
    const password = decodeURIComponent(base.password);
    let response: Response;
    try {
      response = await fetch(url, {
        method: "POST",
        body: form,
        headers: { authorization: `Basic ${Buffer.from(`${username}:${password}`).toString("base64")}` },
        signal: AbortSignal.timeout(this.options.requestTimeoutMs ?? 30_000),
      });
    } catch (error) {
      // fetch names the socket's failure in `cause`; its code is what tells a transient one.
      const cause = (error as { cause?: { code?: unknown; message?: unknown } }).cause;
      throw Object.assign(new Error(`ClickHouse request failed: ${String(cause?.message ?? error)}`), {
        code: typeof cause?.code === "string" ? cause.code : undefined,
        cause: error,
      });
    }
    const text = await response.text();
    if (!response.ok) throw new Error(`ClickHouse answered ${response.status}: ${text.slice(0, 1000)}`);
    return text
      .split("\n")
      .filter((line) => line !== "")
      .map((line) => JSON.parse(line) as T);
  }

  async command(sql: string): Promise<void> {
    await this.open_.command({ query: sql });
  }

  /** One INSERT of JSONEachRow rows; resolves once the server acknowledged them. */
  async insert(table: string, rows: readonly object[]): Promise<void> {
    if (rows.length === 0) return;
    await this.open_.insert({ table, values: rows as object[], format: "JSONEachRow" });
  }
}

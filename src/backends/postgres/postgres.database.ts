import pg from "pg";
import { AppError } from "../../core/errors.js";
import type { Log } from "../../core/log.js";
import { ensureMonthlyPartitions, migrate } from "./postgres.migrations.js";

export interface PostgresOptions {
  url: string;
  /** Connections per process; one commit runs at a time per queue, the rest serve reads. */
  maxConnections?: number;
  /** How long start-up keeps trying to reach Postgres before giving up. */
  connectTimeoutMs?: number;
  log?: Log;
}

const TRANSIENT_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EAI_AGAIN",
  "57P01", // admin_shutdown: the server is stopping
  "57P02", // crash_shutdown
  "57P03", // cannot_connect_now: starting up or shutting down
  "53300", // too_many_connections
  "40001", // serialization_failure
  "40P01", // deadlock_detected
  "55P03", // lock_not_available
  "57014", // query_canceled (statement timeout)
]);
const TRANSIENT_MESSAGE =
  /Connection terminated|timeout exceeded when trying to connect|not queryable|Connection ended|connect ECONNREFUSED/i;

/** The SQLSTATE (or Node error code) of a driver error, when it has one. */
function sqlState(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | undefined)?.code;
  return typeof code === "string" ? code : undefined;
}

/** True when retrying later can succeed: the server is unreachable, restarting or busy. */
export function isTransientPostgresError(error: unknown): boolean {
  if (error instanceof AppError) return error.code === "unavailable";
  const code = sqlState(error);
  if (code !== undefined && (TRANSIENT_CODES.has(code) || code.startsWith("08"))) return true;
  return error instanceof Error && TRANSIENT_MESSAGE.test(error.message);
}

/** True when Postgres refused the data itself (SQLSTATE class 22 or 23): retrying cannot help. */
export function isDataError(error: unknown): boolean {
  const code = sqlState(error);
  return code !== undefined && /^2[23][0-9A-Z]{3}$/.test(code);
}

/** An unreachable Postgres becomes a 503 with Retry-After; anything else is left as it is. */
export function toStoreError(error: unknown): unknown {
  if (error instanceof AppError || !isTransientPostgresError(error)) return error;
  const failure = new AppError("unavailable", {
    message: "The database is unavailable; retry",
    retryAfter: 1,
    cause: error,
  });
  return failure;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * One connection pool per process, shared by the Postgres parts (like DuckDbDatabase for the
 * embedded ones): the first `open()` connects and migrates, the last `close()` ends the pool.
 * Every session runs in UTC, so date_trunc and timestamptz text are the same on every server.
 */
export class PostgresDatabase {
  private pool?: pg.Pool;
  private openCount = 0;
  private opening?: Promise<void>;
  private partitionTimer?: NodeJS.Timeout;

  constructor(private readonly options: PostgresOptions) {}

  get log(): Log | undefined {
    return this.options.log;
  }

  async open(): Promise<void> {
    this.openCount++;
    this.opening ??= this.connect();
    try {
      await this.opening;
    } catch (error) {
      this.openCount--;
      this.opening = undefined;
      throw error;
    }
  }

  private async connect(): Promise<void> {
    const pool = new pg.Pool({
      connectionString: this.options.url,
      max: this.options.maxConnections ?? 10,
      connectionTimeoutMillis: 5000,
      idleTimeoutMillis: 30_000,
      keepAlive: true,
      options: "-c TimeZone=UTC -c statement_timeout=120000",
      application_name: `tidemark-${process.pid}`,
    });
    // An idle connection dropped by a restarting server must not crash the process.
    pool.on("error", (error) => this.options.log?.warn({ err: error }, "postgres connection lost"));
    const deadline = Date.now() + (this.options.connectTimeoutMs ?? 15_000);
    for (let attempt = 1; ; attempt++) {
      try {
        const client = await pool.connect();
        const ignoreDrop = () => {}; // the statement in progress fails and the loop retries
        client.on("error", ignoreDrop);
        try {
          const applied = await migrate(client);
          if (applied.length > 0)
            this.options.log?.info({ versions: applied }, "postgres migrations applied");
          await ensureMonthlyPartitions(client, Date.now(), 1, 2, (partition, reason) =>
            this.options.log?.warn(
              { partition, reason },
              "partition not created; its rows stay in events_default",
            ),
          );
        } finally {
          client.off("error", ignoreDrop);
          client.release();
        }
        break;
      } catch (error) {
        if (!isTransientPostgresError(error) || Date.now() > deadline) {
          await pool.end().catch(() => undefined);
          throw new Error(`postgres: ${(error as Error).message}`);
        }
        this.options.log?.warn({ attempt, err: error }, "postgres not reachable yet; retrying");
        await sleep(Math.min(2000, 200 * attempt));
      }
    }
    this.pool = pool;
    // Next months' partitions, created well before they are needed.
    this.partitionTimer = setInterval(() => void this.maintainPartitions(), 6 * 3600_000);
    this.partitionTimer.unref();
  }

  private async maintainPartitions(): Promise<void> {
    try {
      await this.withClient((client) =>
        ensureMonthlyPartitions(client, Date.now(), 0, 2, (partition, reason) =>
          this.options.log?.warn({ partition, reason }, "partition not created"),
        ),
      );
    } catch (error) {
      this.options.log?.warn({ err: error }, "partition maintenance failed; will retry");
    }
  }

  private requirePool(): pg.Pool {
    if (!this.pool) throw new Error("postgres is not open");
    return this.pool;
  }

  /** Runs one statement; an unreachable server becomes AppError("unavailable"). */
  async query<R extends pg.QueryResultRow = Record<string, unknown>>(
    sql: string,
    params: unknown[] = [],
  ): Promise<pg.QueryResult<R>> {
    try {
      return await this.requirePool().query<R>(sql, params);
    } catch (error) {
      throw toStoreError(error);
    }
  }

  async withClient<T>(work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    let client: pg.PoolClient;
    try {
      client = await this.requirePool().connect();
    } catch (error) {
      throw toStoreError(error);
    }
    let broken = false;
    // A checked-out client whose connection drops between two statements (a server stopping
    // mid-transaction) emits 'error'; unheard, that event would end the process. The statement in
    // progress, or the next one, fails on its own and is reported through `work`.
    const onError = (error: Error) => {
      broken = true;
      this.options.log?.warn({ err: error }, "postgres connection lost while in use");
    };
    client.on("error", onError);
    try {
      return await work(client);
    } catch (error) {
      broken ||= isTransientPostgresError(error);
      throw toStoreError(error);
    } finally {
      client.off("error", onError);
      // A connection that failed mid-way is discarded rather than handed to the next user.
      client.release(broken);
    }
  }

  /**
   * Runs `work` in one transaction. Deadlocks and serialization failures are retried a few
   * times (the work must be safe to repeat); other errors roll back and propagate.
   */
  async transaction<T>(work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.withClient(async (client) => {
          await client.query("BEGIN");
          try {
            const result = await work(client);
            await client.query("COMMIT");
            return result;
          } catch (error) {
            await client.query("ROLLBACK").catch(() => undefined);
            throw error;
          }
        });
      } catch (error) {
        const code = sqlState(error instanceof Error && error.cause !== undefined ? error.cause : error);
        if ((code === "40P01" || code === "40001") && attempt < 5) {
          await sleep(5 * attempt);
          continue;
        }
        throw error;
      }
    }
  }

  async ready(): Promise<string | undefined> {
    try {
      await this.requirePool().query("SELECT 1");
      return undefined;
    } catch (error) {
      return `postgres: ${(error as Error).message}`;
    }
  }

  async close(): Promise<void> {
    this.openCount--;
    if (this.openCount > 0 || !this.pool) return;
    clearInterval(this.partitionTimer);
    const pool = this.pool;
    this.pool = undefined;
    this.opening = undefined;
    await pool.end();
  }
}

import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestContext } from "node:test";
import { fileURLToPath } from "node:url";
import { Redis } from "ioredis";
import pg from "pg";
import { freePort } from "./child-server.js";

/**
 * The real services of the integration tests (scripts/services.sh starts them). URLs come from
 * DATABASE_URL / REDIS_URL / CLICKHOUSE_URL / KAFKA_BROKERS, else what services.sh uses. When a
 * service is not reachable a test skips with a loud banner, or fails when
 * TIDEMARK_REQUIRE_SERVICES=1 (CI). Tests only ever touch databases whose name contains `test`,
 * and each makes its own database and Redis prefix.
 */
export const DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:55432/tidemark_test";
export const DEFAULT_REDIS_URL = "redis://127.0.0.1:56379";
export const DEFAULT_CLICKHOUSE_URL = "http://127.0.0.1:58123";
export const DEFAULT_KAFKA_BROKERS = "127.0.0.1:59092";

const required = () => process.env.TIDEMARK_REQUIRE_SERVICES === "1";

/** Refuses (throws) any database whose name lacks `test`: tests create and drop databases. */
export function assertTestDatabase(url: string): string {
  const name = decodeURIComponent(new URL(url).pathname.replace(/^\//, ""));
  if (!name.includes("test")) {
    throw new Error(`refusing to run tests against database "${name}": its name must contain "test"`);
  }
  return url;
}

function reachable(url: string, defaultPort: number): Promise<boolean> {
  const { hostname, port } = new URL(url);
  return connects(hostname, Number(port || defaultPort));
}

/** True when something accepts a TCP connection on host:port within 1.5 s. */
export function connects(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new Socket();
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1500, () => done(false));
    socket.once("error", () => done(false));
    socket.connect(port, host, () => done(true));
  });
}

/**
 * Skips `t` (or throws when services are required) when the service is missing. Returns the
 * reason as a string for callers that skip themselves (the conformance suite), else undefined.
 */
function missing(what: string, url: string, t?: TestContext): string {
  const reason = `SKIPPED: ${what} not reachable at ${url}; run \`make services\``;
  if (required()) throw new Error(`${what} not reachable at ${url} and TIDEMARK_REQUIRE_SERVICES=1`);
  console.warn(`\n${"=".repeat(reason.length)}\n${reason}\n${"=".repeat(reason.length)}\n`);
  t?.skip(reason);
  return reason;
}

export type Requirement = { ok: true; url: string } | { ok: false; reason: string };

export async function requirePostgres(t?: TestContext): Promise<Requirement> {
  const url = assertTestDatabase(process.env.DATABASE_URL || DEFAULT_DATABASE_URL);
  if (await reachable(url, 5432)) return { ok: true, url };
  return { ok: false, reason: missing("Postgres", url, t) };
}

export async function requireRedis(t?: TestContext): Promise<Requirement> {
  const url = process.env.REDIS_URL || DEFAULT_REDIS_URL;
  if (await reachable(url, 6379)) return { ok: true, url };
  return { ok: false, reason: missing("Redis", url, t) };
}

/** ClickHouse answers `SELECT 1` over HTTP at CLICKHOUSE_URL (default the services.sh port). */
export async function requireClickHouse(t?: TestContext): Promise<Requirement> {
  const url = (process.env.CLICKHOUSE_URL || DEFAULT_CLICKHOUSE_URL).replace(/\/+$/, "");
  if (await clickHouseAnswers(url)) return { ok: true, url };
  return { ok: false, reason: missing("ClickHouse", url, t) };
}

export async function clickHouseAnswers(url: string): Promise<boolean> {
  try {
    const response = await fetch(`${url}/?query=${encodeURIComponent("SELECT 1")}`, {
      signal: AbortSignal.timeout(2000),
    });
    return response.ok && (await response.text()).trim() === "1";
  } catch {
    return false;
  }
}

/**
 * The first of KAFKA_BROKERS (`host:port[,host:port...]`, default the services.sh port) accepts
 * connections; `url` is the whole broker list as given.
 */
export async function requireKafka(t?: TestContext): Promise<Requirement> {
  const brokers = process.env.KAFKA_BROKERS || DEFAULT_KAFKA_BROKERS;
  const [host, port] = splitBroker(brokers.split(",")[0] ?? "");
  if (await connects(host, port)) return { ok: true, url: brokers };
  return { ok: false, reason: missing("Kafka", brokers, t) };
}

export function splitBroker(broker: string): [string, number] {
  const at = broker.trim().lastIndexOf(":");
  return [broker.trim().slice(0, at), Number(broker.trim().slice(at + 1))];
}

/** A fresh database beside the base one (name `<base>_<label>_<random>`), and how to drop it. */
export async function createTestDatabase(
  baseUrl: string,
  label: string,
): Promise<{ url: string; drop(): Promise<void> }> {
  assertTestDatabase(baseUrl);
  const base = new URL(baseUrl);
  const name = `${base.pathname.slice(1)}_${label}_${randomBytes(4).toString("hex")}`.replace(
    /[^a-z0-9_]/gi,
    "_",
  );
  const admin = new URL(baseUrl);
  admin.pathname = "/postgres";
  const run = async (sql: string) => {
    const client = new pg.Client({ connectionString: admin.toString() });
    await client.connect();
    try {
      await client.query(sql);
    } finally {
      await client.end();
    }
  };
  await run(`CREATE DATABASE "${name}"`);
  const url = new URL(baseUrl);
  url.pathname = `/${name}`;
  return {
    url: assertTestDatabase(url.toString()),
    drop: () => run(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`),
  };
}

/** A Redis key prefix no other test (or earlier run) uses. */
export function uniqueRedisPrefix(label: string): string {
  return `test-${label}-${randomBytes(4).toString("hex")}:`;
}

/** Deletes every key under a test's prefix. */
export async function dropRedisPrefix(url: string, prefix: string): Promise<void> {
  if (!prefix.startsWith("test-")) throw new Error(`refusing to delete keys under "${prefix}"`);
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    let cursor = "0";
    do {
      const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 1000);
      cursor = next;
      if (keys.length > 0) await redis.del(...keys);
    } while (cursor !== "0");
  } finally {
    redis.disconnect();
  }
}

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const SERVICES_SCRIPT = join(ROOT, "scripts/services.sh");

/**
 * Builds dist/ when it is missing or older than any source file, so tests that run the real CLI
 * in child processes never test stale code.
 */
export function ensureFreshBuild(): string {
  const cli = join(ROOT, "dist/cli.js");
  const newest = (dir: string): number =>
    readdirSync(dir, { withFileTypes: true }).reduce((latest, entry) => {
      const path = join(dir, entry.name);
      return Math.max(latest, entry.isDirectory() ? newest(path) : statSync(path).mtimeMs);
    }, 0);
  if (!existsSync(cli) || statSync(cli).mtimeMs < newest(join(ROOT, "src"))) {
    const result = spawnSync("npm", ["run", "build"], { cwd: ROOT, stdio: "inherit" });
    if (result.status !== 0) throw new Error("npm run build failed");
  }
  return cli;
}

export type ServiceName = "postgres" | "redis" | "clickhouse" | "kafka";

/** Where each service's address lands on a PrivateServices (the names of services.sh env). */
interface AddressOf {
  postgres: "databaseUrl";
  redis: "redisUrl";
  clickhouse: "clickhouseUrl";
  kafka: "kafkaBrokers";
}

const EXPORT_OF: Record<ServiceName, [keyof ExportedAddresses, string]> = {
  postgres: ["databaseUrl", "DATABASE_URL"],
  redis: ["redisUrl", "REDIS_URL"],
  clickhouse: ["clickhouseUrl", "CLICKHOUSE_URL"],
  kafka: ["kafkaBrokers", "KAFKA_BROKERS"],
};

interface ExportedAddresses {
  databaseUrl: string;
  redisUrl: string;
  clickhouseUrl: string;
  kafkaBrokers: string;
}

export type PrivateServices<S extends ServiceName = "postgres" | "redis"> = {
  [K in S as AddressOf[K]]: string;
} & {
  /** The services.sh env exports of these instances (DATABASE_URL, KAFKA_BROKERS...). */
  env: Record<string, string>;
  /** The services.sh folder of these instances (their logs are in `logs/`). */
  dir: string;
  /**
   * Runs a services.sh subcommand (stop-postgres, kill-redis...) on these instances, without
   * blocking this process's event loop (load keeps flowing meanwhile).
   */
  run(...args: string[]): Promise<void>;
  /** SIGKILL, as a crash would (Postgres: an immediate shutdown). */
  kill(service: S): Promise<void>;
  /** A clean stop. */
  stop(service: S): Promise<void>;
  /** Starts it again on the same port and data; resolves once it answers. */
  start(service: S): Promise<void>;
  /** Stops them all and removes their data. */
  destroy(): void;
};

/**
 * Services of this test alone (own folder and free ports, through scripts/services.sh), for tests
 * that stop, kill and restart them: the shared instances stay up for the tests running beside.
 * Postgres and Redis unless `services` says otherwise, e.g. ["clickhouse", "kafka"]. Returns the
 * reason as a string when they cannot start (after a loud skip, or it throws in CI).
 */
export async function startPrivateServices<S extends ServiceName = "postgres" | "redis">(
  label: string,
  t?: TestContext,
  services: readonly S[] = ["postgres", "redis"] as unknown as readonly S[],
): Promise<PrivateServices<S> | string> {
  const dir = mkdtempSync(join(tmpdir(), `tidemark-${label}-`));
  chmodSync(dir, 0o755);
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    TIDEMARK_SERVICES_DIR: dir,
    TIDEMARK_SERVICES: services.join(" "),
    TIDEMARK_PG_PORT: String(await freePort()),
    TIDEMARK_REDIS_PORT: String(await freePort()),
    TIDEMARK_CLICKHOUSE_PORT: String(await freePort()),
    TIDEMARK_CLICKHOUSE_TCP_PORT: String(await freePort()),
    TIDEMARK_KAFKA_PORT: String(await freePort()),
    TIDEMARK_KAFKA_CONTROLLER_PORT: String(await freePort()),
    TIDEMARK_PG_DB: "tidemark_test",
  };
  // The exports of the shared instances must not leak into the private ones' commands.
  delete env.KAFKA_BROKERS;
  const runSync = (...args: string[]) => {
    const result = spawnSync("bash", [SERVICES_SCRIPT, ...args], { env, encoding: "utf8" });
    if (result.status !== 0) throw new Error(`services.sh ${args.join(" ")} failed:\n${result.stderr}`);
    return result.stdout;
  };
  const run = (...args: string[]) =>
    new Promise<void>((resolve, reject) => {
      const child = spawn("bash", [SERVICES_SCRIPT, ...args], { env, stdio: ["ignore", "ignore", "pipe"] });
      let stderr = "";
      child.stderr.on("data", (chunk: Buffer) => {
        stderr += chunk.toString();
      });
      child.on("exit", (code) =>
        code === 0 ? resolve() : reject(new Error(`services.sh ${args.join(" ")} failed:\n${stderr}`)),
      );
    });
  try {
    await run("start");
  } catch (error) {
    try {
      runSync("stop");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    return missing(`${services.join(", ")} (private instances)`, (error as Error).message, t);
  }
  const exports: Record<string, string> = Object.fromEntries(
    runSync("env")
      .trim()
      .split("\n")
      .map(
        (line) =>
          line
            .replace(/^export /, "")
            .split(/=(.*)/s)
            .slice(0, 2) as [string, string],
      ),
  );
  const addresses: Partial<ExportedAddresses> = {};
  for (const service of services) {
    const [field, name] = EXPORT_OF[service];
    const value = exports[name];
    if (!value) throw new Error(`services.sh env printed no ${name}`);
    addresses[field] = service === "postgres" ? assertTestDatabase(value) : value;
  }
  return {
    ...addresses,
    env: exports,
    dir,
    run,
    kill: (service: S) => run(`kill-${service}`),
    stop: (service: S) => run(`stop-${service}`),
    start: (service: S) => run(`start-${service}`),
    destroy() {
      try {
        runSync("stop");
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  } as PrivateServices<S>;
}

/**
 * The environment of a Postgres pipeline on a database and Redis prefix of its own, or the reason
 * it cannot run here; `cleanups` receives what drops them afterwards.
 */
export async function postgresPipelineEnv(
  pipeline: "sync" | "async",
  cleanups: (() => Promise<void>)[],
): Promise<Record<string, string> | string> {
  const postgres = await requirePostgres();
  if (!postgres.ok) return postgres.reason;
  const redis = await requireRedis();
  if (!redis.ok) return redis.reason;
  const db = await createTestDatabase(postgres.url, pipeline);
  cleanups.push(db.drop);
  const prefix = uniqueRedisPrefix(pipeline);
  cleanups.push(() => dropRedisPrefix(redis.url, prefix));
  return {
    TIDEMARK_PIPELINE: pipeline,
    DATABASE_URL: db.url,
    REDIS_URL: redis.url,
    TIDEMARK_REDIS_PREFIX: prefix,
  };
}

/** Counts the scripts (EVALSHA) a Redis client sends from now on. */
export function countScripts(client: Redis): { readonly calls: number } {
  const counter = { calls: 0 };
  const evalsha = client.evalsha.bind(client);
  client.evalsha = ((...args: Parameters<typeof client.evalsha>) => {
    counter.calls++;
    return evalsha(...args);
  }) as typeof client.evalsha;
  return counter;
}

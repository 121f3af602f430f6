import type { Config, Role } from "../config/config.js";
import type { EventQueue } from "../pipeline/event-queue.js";
import type { AnalyticsStore, CommitReport, EventStore } from "../pipeline/event-store.js";
import { GroupCommitQueue } from "../pipeline/group-commit.queue.js";
import type { Lifecycle } from "../pipeline/lifecycle.js";
import type { ProjectStore } from "../pipeline/project-store.js";
import type { RateLimiter } from "../pipeline/rate-limiter.js";
import type { RedisConnection } from "./redis/redis.connection.js";

/** The concrete parts of one process, chosen from the configuration. */
export interface Backends {
  projects: ProjectStore;
  /** The store of record (ledger, deletes); the API reads the ledger from it. */
  events: EventStore;
  analytics: AnalyticsStore;
  /** Where the API hands accepted events. */
  queue: EventQueue;
  rateLimiter: RateLimiter;
  /** Background loops this process runs for its role (e.g. the async worker). */
  loops: Lifecycle[];
  /** Every part in start order; closed in reverse. */
  parts: Lifecycle[];
}

export interface BackendHooks {
  onFlush?: (report: CommitReport) => void;
  log?: {
    info(obj: object, msg?: string): void;
    warn(obj: object, msg?: string): void;
    error(obj: object, msg?: string): void;
  };
}

/**
 * The composition root: the only module that knows which backend implements which interface.
 * Drivers are imported lazily, so the embedded default never loads Postgres, Redis, Kafka or
 * ClickHouse libraries.
 */
export async function createBackends(
  config: Config,
  role: Role,
  hooks: BackendHooks = {},
): Promise<Backends> {
  switch (config.pipeline) {
    case "embedded":
      return createEmbedded(config, role, hooks);
    case "sync":
      return createSync(config, role, hooks);
    case "async":
      return createAsync(config, role, hooks);
    default:
      throw new Error(`TIDEMARK_PIPELINE=${config.pipeline} is not available in this build`);
  }
}

async function createEmbedded(config: Config, role: Role, hooks: BackendHooks): Promise<Backends> {
  if (role !== "all" && role !== "api") {
    throw new Error(`the embedded pipeline runs in one process: use --role all (got ${role})`);
  }
  const { DuckDbDatabase } = await import("./embedded/duckdb.database.js");
  const { DuckDbEventStore } = await import("./embedded/duckdb.event-store.js");
  const { DuckDbProjectStore } = await import("./embedded/duckdb.project-store.js");
  const { MemoryRateLimiter } = await import("./memory/memory.rate-limiter.js");
  const db = new DuckDbDatabase(config.dataDir);
  const projects = new DuckDbProjectStore(db);
  // Two commits at once keep DuckDB busy while the previous one waits for its fsync.
  const writers = 2;
  const events = new DuckDbEventStore(db, writers);
  return groupCommitBackends(config, hooks, {
    projects,
    events,
    rateLimiter: new MemoryRateLimiter(),
    writers,
  });
}

/** The parts of a pipeline whose API commits straight to its store of record (embedded, sync). */
function groupCommitBackends(
  config: Config,
  hooks: BackendHooks,
  parts: {
    projects: ProjectStore;
    events: EventStore & AnalyticsStore;
    rateLimiter: RateLimiter;
    writers: number;
  },
): Backends {
  const { projects, events, rateLimiter, writers } = parts;
  const queue = new GroupCommitQueue(events, {
    concurrency: writers,
    maxEvents: config.flushMaxEvents,
    intervalMs: config.flushIntervalMs,
    maxPending: config.maxPendingEvents,
    onFlush: hooks.onFlush,
  });
  return {
    projects,
    events,
    analytics: events,
    queue,
    rateLimiter,
    loops: [],
    parts: [projects, events, queue, rateLimiter],
  };
}

/** Postgres parts shared by the sync and async pipelines: one pool per process. */
async function createPostgres(config: Config, hooks: BackendHooks, maxConnections: number) {
  const { PostgresDatabase } = await import("./postgres/postgres.database.js");
  const { PostgresEventStore } = await import("./postgres/postgres.event-store.js");
  const { PostgresProjectStore } = await import("./postgres/postgres.project-store.js");
  const db = new PostgresDatabase({ url: config.databaseUrl, maxConnections, log: hooks.log });
  return { projects: new PostgresProjectStore(db), events: new PostgresEventStore(db) };
}

/** Redis when REDIS_URL is set, so every API process shares the limit; else this process's memory. */
async function createRateLimiter(
  config: Config,
  hooks: BackendHooks,
  redis: RedisConnection | undefined,
): Promise<RateLimiter> {
  if (!redis) {
    const { MemoryRateLimiter } = await import("./memory/memory.rate-limiter.js");
    return new MemoryRateLimiter();
  }
  const { RedisRateLimiter } = await import("./redis/redis.rate-limiter.js");
  return new RedisRateLimiter(redis, {
    prefix: config.redisPrefix,
    failMode: config.rateLimitFailMode,
    log: hooks.log,
  });
}

async function createRedisConnection(
  config: Config,
  hooks: BackendHooks,
): Promise<RedisConnection | undefined> {
  if (config.redisUrl === "") return undefined;
  const { RedisConnection } = await import("./redis/redis.connection.js");
  return new RedisConnection({
    url: config.redisUrl,
    name: `tidemark-api-${process.pid}`,
    commandTimeoutMs: 2000,
    log: hooks.log,
  });
}

/** Stage 1: the API commits to Postgres (group commit) before it answers. No worker. */
async function createSync(config: Config, role: Role, hooks: BackendHooks): Promise<Backends> {
  if (role !== "all" && role !== "api") {
    throw new Error(`the sync pipeline has only the api role: use --role api or all (got ${role})`);
  }
  const { projects, events } = await createPostgres(config, hooks, 10);
  const rateLimiter = await createRateLimiter(config, hooks, await createRedisConnection(config, hooks));
  // Two commits in flight: one fills while the other waits for its WAL flush (measured: about
  // +30% events/s in batches on 2 cores, same latency). Sorted keys keep them from deadlocking.
  return groupCommitBackends(config, hooks, { projects, events, rateLimiter, writers: 2 });
}

/**
 * Stage 2: the API appends to a Redis Stream (durable: AOF, appendfsync always) and answers;
 * workers store into Postgres. Role api runs the API parts, role worker the worker loop, role all
 * both in one process.
 */
async function createAsync(config: Config, role: Role, hooks: BackendHooks): Promise<Backends> {
  if (role !== "all" && role !== "api" && role !== "worker") {
    throw new Error(`the async pipeline has the roles api and worker (or all) (got ${role})`);
  }
  const runsApi = role === "all" || role === "api";
  const runsWorker = role === "all" || role === "worker";
  const { projects, events } = await createPostgres(config, hooks, runsApi ? 10 : 4);
  const { RedisStreamQueue } = await import("./redis/redis.queue.js");
  const redis = await createRedisConnection(config, hooks);
  if (!redis) throw new Error("REDIS_URL is required for the async pipeline");
  const queue = new RedisStreamQueue(redis, {
    prefix: config.redisPrefix,
    maxLength: config.redisStreamMaxLen,
  });
  const rateLimiter = await createRateLimiter(config, hooks, redis);
  const parts: Lifecycle[] = runsApi ? [projects, events, queue, rateLimiter] : [events];
  const loops: Lifecycle[] = [];
  if (runsWorker) {
    const { RedisStreamConsumer } = await import("./redis/redis.stream-consumer.js");
    const { QueueWorker, DEFAULT_WORKER_OPTIONS } = await import("../roles/worker.js");
    const consumer = new RedisStreamConsumer({
      url: config.redisUrl,
      prefix: config.redisPrefix,
      claimIdleMs: config.workerClaimIdleMs,
      log: hooks.log,
    });
    parts.push(consumer);
    loops.push(
      new QueueWorker(consumer, events, {
        ...DEFAULT_WORKER_OPTIONS,
        batchEvents: config.flushMaxEvents,
        readMessages: config.workerBatch,
        touchEveryMs: Math.max(100, Math.floor(config.workerClaimIdleMs / 3)),
        log: hooks.log,
        onBatch: hooks.onFlush,
      }),
    );
  }
  // A worker-only process serves no HTTP: the API parts exist for the type but never start.
  return { projects, events, analytics: events, queue, rateLimiter, loops, parts };
}

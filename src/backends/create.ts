import { type Config, processRoles } from "../config/config.js";
import type { AnalyticsStore, EventStore } from "../pipeline/event-store.js";
import { GroupCommitQueue } from "../pipeline/group-commit.queue.js";
import type { Lifecycle } from "../pipeline/lifecycle.js";
import type { PartHooks, PipelineParts } from "../pipeline/parts.js";
import type { ProjectStore } from "../pipeline/project-store.js";
import type { RateLimiter } from "../pipeline/rate-limiter.js";
import type { RedisConnection } from "./redis/redis.connection.js";

/**
 * The composition root: the only module that knows which backend implements which interface. It
 * returns parts only; the roles (src/roles/) build their loops from them. Drivers are imported
 * lazily, so the embedded default never loads Postgres, Redis, Kafka or ClickHouse libraries.
 *
 * Which parts a process gets depends on the roles it runs (`config.role`, checked against the
 * pipeline by loadConfig).
 */
export async function createParts(config: Config, hooks: PartHooks = {}): Promise<PipelineParts> {
  switch (config.pipeline) {
    case "embedded":
      return createEmbedded(config, hooks);
    case "sync":
      return createSync(config, hooks);
    case "async":
      return createAsync(config, hooks);
    case "cdc":
      return createCdc(config, hooks);
    default:
      // loadConfig refuses a pipeline with no roles in PIPELINE_ROLES; this is the second lock.
      throw new Error(`TIDEMARK_PIPELINE=${config.pipeline} is not available in this build`);
  }
}

async function createEmbedded(config: Config, hooks: PartHooks): Promise<PipelineParts> {
  const { DuckDbDatabase } = await import("./embedded/duckdb.database.js");
  const { DuckDbEventStore } = await import("./embedded/duckdb.event-store.js");
  const { DuckDbProjectStore } = await import("./embedded/duckdb.project-store.js");
  const { MemoryRateLimiter } = await import("./memory/memory.rate-limiter.js");
  const db = new DuckDbDatabase(config.dataDir, {
    memoryLimit: config.duckdbMemoryLimit,
    threads: config.duckdbThreads,
    onMigration: (message, details) => hooks.log?.info(details, message),
  });
  const projects = new DuckDbProjectStore(db);
  // One commit at a time (the store commits so): what arrives during a commit forms the next one.
  // A DuckDB commit costs about 3.5 ms of CPU however few events it holds, and that CPU is the
  // API's too: against two writers, one made commits of 41 events instead of 26 and took
  // 0.69-0.83x the CPU per single-event request in 3 rounds of 4 (benchmarks/README.md, "Ingest
  // CPU per request").
  const events = new DuckDbEventStore(db, { log: hooks.log });
  const parts = groupCommitParts(config, hooks, {
    projects,
    events,
    rateLimiter: new MemoryRateLimiter(),
    writers: 1,
  });
  return { ...parts, soleProjectWriter: true, storeMemory: () => db.memory() };
}

/** The parts of a pipeline whose API commits straight to its store of record (embedded, sync). */
function groupCommitParts(
  config: Config,
  hooks: PartHooks,
  parts: {
    projects: ProjectStore;
    events: EventStore & AnalyticsStore;
    rateLimiter: RateLimiter;
    writers: number;
  },
): PipelineParts {
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
    lifecycle: [projects, events, queue, rateLimiter],
  };
}

/** Postgres parts shared by the sync and async pipelines: one pool per process. */
async function createPostgres(config: Config, hooks: PartHooks, maxConnections: number) {
  const { PostgresDatabase } = await import("./postgres/postgres.database.js");
  const { PostgresEventStore } = await import("./postgres/postgres.event-store.js");
  const { PostgresProjectStore } = await import("./postgres/postgres.project-store.js");
  const db = new PostgresDatabase({ url: config.databaseUrl, maxConnections, log: hooks.log });
  return { db, projects: new PostgresProjectStore(db), events: new PostgresEventStore(db) };
}

/** Redis when REDIS_URL is set, so every API process shares the limit; else this process's memory. */
async function createRateLimiter(
  config: Config,
  hooks: PartHooks,
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

async function createRedisConnection(config: Config, hooks: PartHooks): Promise<RedisConnection | undefined> {
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
async function createSync(config: Config, hooks: PartHooks): Promise<PipelineParts> {
  const { projects, events } = await createPostgres(config, hooks, 10);
  const rateLimiter = await createRateLimiter(config, hooks, await createRedisConnection(config, hooks));
  // Two commits in flight: one fills while the other waits for its WAL flush (measured: about
  // +30% events/s in batches on 2 cores, same latency). Sorted keys keep them from deadlocking.
  return groupCommitParts(config, hooks, { projects, events, rateLimiter, writers: 2 });
}

/**
 * Stage 2: the API appends to a Redis Stream (durable: AOF, appendfsync always) and answers;
 * workers store into Postgres. Role api gets the API parts, role worker the stream consumer, role
 * all both in one process.
 */
async function createAsync(config: Config, hooks: PartHooks): Promise<PipelineParts> {
  const roles = processRoles(config);
  const runsApi = roles.includes("api");
  const runsWorker = roles.includes("worker");
  const { projects, events } = await createPostgres(config, hooks, runsApi ? 10 : 4);
  const { queue, rateLimiter } = await createStreamFront(config, hooks);
  // A worker-only process takes no requests: the API parts exist for the type but never start,
  // except the queue, whose depth (the backlog the workers drain) its /metrics reports.
  const lifecycle: Lifecycle[] = runsApi ? [projects, events, queue, rateLimiter] : [events, queue];
  const parts: PipelineParts = { projects, events, analytics: events, queue, rateLimiter, lifecycle };
  if (runsWorker) {
    parts.consumer = await createStreamConsumer(config, hooks);
    lifecycle.push(parts.consumer);
  }
  return parts;
}

/** The API side of the stream pipelines (async, cdc): the Redis Stream queue and the shared rate limit. */
async function createStreamFront(config: Config, hooks: PartHooks) {
  const { RedisStreamQueue } = await import("./redis/redis.queue.js");
  const redis = await createRedisConnection(config, hooks);
  if (!redis) throw new Error(`REDIS_URL is required for the ${config.pipeline} pipeline`);
  const queue = new RedisStreamQueue(redis, {
    prefix: config.redisPrefix,
    maxLength: config.redisStreamMaxLen,
  });
  const rateLimiter = await createRateLimiter(config, hooks, redis);
  return { queue, rateLimiter };
}

/** The worker's side of the stream pipelines: a member of the stream's consumer group. */
async function createStreamConsumer(config: Config, hooks: PartHooks) {
  const { RedisStreamConsumer } = await import("./redis/redis.stream-consumer.js");
  return new RedisStreamConsumer({
    url: config.redisUrl,
    prefix: config.redisPrefix,
    claimIdleMs: config.workerClaimIdleMs,
    log: hooks.log,
  });
}

/**
 * Stage 3: the async pipeline's API and worker (Redis Stream -> Postgres), then the cdc role
 * streams Postgres's committed events (logical replication, pgoutput) to Kafka and the sink role
 * writes them to ClickHouse, which answers the queries. The ledger reads Postgres and adds what
 * ClickHouse holds; deleting a project deletes it in both.
 *
 * Every process of this pipeline makes sure the publication and the replication slot exist at
 * start, before any event is stored: a slot created after an insert would never see it.
 */
async function createCdc(config: Config, hooks: PartHooks): Promise<PipelineParts> {
  const roles = processRoles(config);
  const runsApi = roles.includes("api");
  const runsWorker = roles.includes("worker");
  const runsCdc = roles.includes("cdc");
  const runsSink = roles.includes("sink");
  const { db, projects, events: record } = await createPostgres(config, hooks, runsApi ? 10 : 4);
  const { ReplicationSetup } = await import("./postgres/postgres.replication-setup.js");
  const names = { slot: config.cdcSlot, publication: config.cdcPublication };
  const lifecycle: Lifecycle[] = [new ReplicationSetup(db, names)];

  const { createClickHouseParts, propertyColumnNames } = await import(
    "./clickhouse/create-clickhouse-parts.js"
  );
  const clickhouse = createClickHouseParts({
    url: config.clickhouseUrl,
    database: config.clickhouseDatabase,
    propertyColumns: propertyColumnNames(config.clickhousePropertyColumns),
    log: hooks.log,
  });
  const { MirroredEventStore } = await import("../pipeline/mirrored-event-store.js");
  const events = runsApi ? new MirroredEventStore(record, clickhouse.sink) : record;

  const { queue, rateLimiter } = await createStreamFront(config, hooks);
  const parts: PipelineParts = {
    projects,
    events,
    analytics: clickhouse.analytics,
    queue,
    rateLimiter,
    lifecycle,
  };
  if (runsApi) lifecycle.push(projects, events, clickhouse.analytics, queue, rateLimiter);
  // A worker-only process also starts the queue, for the backlog's depth on its /metrics.
  else if (runsWorker) lifecycle.push(events, queue);
  if (runsWorker) {
    parts.consumer = await createStreamConsumer(config, hooks);
    lifecycle.push(parts.consumer);
  }
  const brokers = config.kafkaBrokers.split(",").map((b) => b.trim());
  const topic = {
    brokers,
    topic: config.kafkaTopic,
    partitions: config.kafkaPartitions,
    replicas: config.kafkaReplicas,
    log: hooks.log,
  };
  if (runsCdc) {
    const { PostgresChangeFeed } = await import("./postgres/postgres.change-feed.js");
    const { KafkaEventLogProducer } = await import("./kafka/kafka.producer.js");
    parts.eventLog = new KafkaEventLogProducer(topic);
    parts.changeFeed = new PostgresChangeFeed(db, {
      url: config.databaseUrl,
      ...names,
      lagWarnBytes: config.cdcSlotLagWarnBytes,
      log: hooks.log,
    });
    lifecycle.push(parts.eventLog, parts.changeFeed);
  }
  if (runsSink) {
    const { KafkaEventLogConsumer } = await import("./kafka/kafka.consumer.js");
    parts.sink = clickhouse.sink;
    parts.logConsumer = new KafkaEventLogConsumer({ ...topic, groupId: config.kafkaGroup });
    // The sink asks the project store whether a project was deleted before writing its events.
    if (!runsApi) lifecycle.push(projects);
    lifecycle.push(parts.sink, parts.logConsumer);
  }
  return parts;
}

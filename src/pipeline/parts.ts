import type { Log } from "../core/log.js";
import type { ChangeFeed } from "./change-feed.js";
import type { EventLogConsumer, EventLogProducer } from "./event-log.js";
import type { EventQueue } from "./event-queue.js";
import type { EventSink } from "./event-sink.js";
import type { AnalyticsStore, CommitReport, EventStore } from "./event-store.js";
import type { Lifecycle } from "./lifecycle.js";
import type { ProjectStore } from "./project-store.js";
import type { QueueConsumer } from "./queue-consumer.js";
import type { RateLimiter } from "./rate-limiter.js";

/**
 * The concrete parts of one process, as the composition root (src/backends/create.ts) chose them
 * from the configuration. Parts are passive: they own connections, not loops. Each role
 * (src/roles/) builds its own loops from these parts.
 */
export interface PipelineParts {
  projects: ProjectStore;
  /** The store of record (ledger, deletes); the API reads the ledger from it. */
  events: EventStore;
  analytics: AnalyticsStore;
  /** Where the API hands accepted events. */
  queue: EventQueue;
  rateLimiter: RateLimiter;
  /**
   * True when this process is the only one that changes projects and keys (embedded: one server
   * holds the data folder, and the CLI goes through it), so a cache of key lookups never goes
   * stale: the admin API drops what it changes (src/admin/project.service.ts).
   */
  soleProjectWriter?: boolean;
  /** The worker's side of the ingest queue: present when this process runs the worker role. */
  consumer?: QueueConsumer;
  /** cdc role: the store of record's committed events, and the log they are published to. */
  changeFeed?: ChangeFeed;
  eventLog?: EventLogProducer;
  /** sink role: the log read as a consumer group, and the analytics store written from it. */
  logConsumer?: EventLogConsumer;
  sink?: EventSink;
  /** What the store holds in memory against its cap, where the store lives in this process (embedded). */
  storeMemory?: () => Promise<StoreMemory>;
  /**
   * Every part this process starts, in start order; closed in reverse. A process that runs no API
   * leaves the API's parts out: they exist for the type but never start.
   */
  lifecycle: Lifecycle[];
}

/**
 * Memory a store in this process manages itself, under a cap it evicts and spills by. Table data
 * the store has read or written stays cached until the cap needs the room, so under a steady
 * ingest this grows to the cap and then holds (benchmarks/README.md, "Stable RAM").
 */
export interface StoreMemory {
  /** The cap (the embedded store: TIDEMARK_DUCKDB_MEMORY_LIMIT). */
  limitBytes: number;
  /** In memory now, by the store's own tag for what holds it (DuckDB: BASE_TABLE, HASH_TABLE...). */
  usedBytes: ReadonlyMap<string, number>;
  /** Spilled to disk now because the cap was reached. */
  spilledBytes: number;
}

/** What the process lends the parts and loops it builds: its logger and a commit observer. */
export interface PartHooks {
  /** After every commit to the store of record (group commit or worker insert), for metrics. */
  onFlush?: (report: CommitReport) => void;
  log?: Log;
}

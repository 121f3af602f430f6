import type { Config, Role } from "../config/config.js";
import type { EventQueue } from "../pipeline/event-queue.js";
import type { AnalyticsStore, EventStore } from "../pipeline/event-store.js";
import { GroupCommitQueue } from "../pipeline/group-commit.queue.js";
import type { Lifecycle } from "../pipeline/lifecycle.js";
import type { ProjectStore } from "../pipeline/project-store.js";
import type { RateLimiter } from "../pipeline/rate-limiter.js";

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
  onFlush?: (events: number, durationMs: number, error?: unknown) => void;
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
  const events = new DuckDbEventStore(db);
  const queue = new GroupCommitQueue(events, {
    maxEvents: config.flushMaxEvents,
    intervalMs: config.flushIntervalMs,
    maxPending: config.maxPendingEvents,
    onFlush: hooks.onFlush,
  });
  const rateLimiter = new MemoryRateLimiter();
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

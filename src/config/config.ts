import { type Static, Type } from "@sinclair/typebox";
import { Value } from "@sinclair/typebox/value";

/** Every pipeline Tidemark knows; see DESIGN section 1. */
export const PIPELINES = ["embedded", "sync", "async", "cdc"] as const;
export type Pipeline = (typeof PIPELINES)[number];

/** Every role a process can play; `all` runs each role the pipeline needs. */
export const ROLES = ["all", "api", "worker", "cdc", "sink"] as const;
export type Role = (typeof ROLES)[number];

/**
 * The roles each pipeline has in this build, in data-flow order (`all` runs every one of them in
 * one process). A pipeline listed with no roles is known but not built yet: configuration refuses
 * it. Enabling a pipeline or a role is its line here plus its parts in src/backends/create.ts and
 * its loop in src/roles/.
 */
export const PIPELINE_ROLES: { readonly [P in Pipeline]: readonly Role[] } = {
  embedded: ["all", "api"],
  sync: ["all", "api"],
  async: ["all", "api", "worker"],
  cdc: ["all", "api", "worker", "cdc", "sink"],
};

/** The pipelines this build can run. */
export const AVAILABLE_PIPELINES = PIPELINES.filter((p) => PIPELINE_ROLES[p].length > 0);
/** The roles some pipeline of this build has. */
export const AVAILABLE_ROLES = ROLES.filter((r) => PIPELINES.some((p) => PIPELINE_ROLES[p].includes(r)));
const COMING = (known: readonly string[], available: readonly string[]) =>
  known.filter((name) => !available.includes(name));

/** The roles one process runs, in data-flow order: `all` expands to every role of the pipeline. */
export function processRoles(config: Pick<Config, "pipeline" | "role">): Exclude<Role, "all">[] {
  const roles = config.role === "all" ? PIPELINE_ROLES[config.pipeline] : [config.role];
  return roles.filter((role): role is Exclude<Role, "all"> => role !== "all");
}

const IntString = (min: number, max: number) => ({ min, max });

/**
 * The environment variables Tidemark reads, with defaults. `.env.example` lists the same names
 * (a unit test checks that they agree).
 */
export const ENV_SPEC = {
  PORT: { default: "8000", int: IntString(0, 65535), doc: "HTTP port" },
  HOST: { default: "127.0.0.1", doc: "HTTP bind address; 0.0.0.0 to serve other machines" },
  SECRET_TOKEN: { default: "", doc: "Admin token; generated and kept in the data dir when empty" },
  TIDEMARK_PIPELINE: {
    default: "embedded",
    oneOf: PIPELINES,
    doc: `${AVAILABLE_PIPELINES.join(" | ")} (coming: ${COMING(PIPELINES, AVAILABLE_PIPELINES).join(", ") || "none"})`,
  },
  TIDEMARK_ROLE: {
    default: "all",
    oneOf: ROLES,
    doc: `${AVAILABLE_ROLES.join(" | ")}: the pipeline's roles in one process, or one of them (coming: ${COMING(ROLES, AVAILABLE_ROLES).join(", ") || "none"})`,
  },
  TIDEMARK_DATA_DIR: { default: "./data", doc: "Where the embedded store and the generated token live" },
  TIDEMARK_KEY_ENV: { default: "dev", pattern: /^[a-z0-9]{1,16}$/, doc: "The <env> in wk_<env>_..." },
  TIDEMARK_LOG_LEVEL: {
    default: "info",
    oneOf: ["fatal", "error", "warn", "info", "debug", "trace", "silent"],
    doc: "JSON log level: fatal | error | warn | info | debug | trace | silent",
  },
  TIDEMARK_MAX_BODY_BYTES: {
    default: "1048576",
    int: IntString(1024, 100 * 1024 * 1024),
    doc: "Largest request body, after gunzip (413 above)",
  },
  TIDEMARK_MAX_BATCH_EVENTS: {
    default: "1000",
    int: IntString(1, 100000),
    doc: "Most events in one batch (413 above)",
  },
  TIDEMARK_FLUSH_MAX_EVENTS: {
    default: "5000",
    int: IntString(1, 1000000),
    doc: "Group commit: most events per commit",
  },
  TIDEMARK_FLUSH_INTERVAL_MS: {
    default: "2",
    int: IntString(0, 10000),
    doc: "Group commit: how long the first waiting event waits for others to join",
  },
  TIDEMARK_MAX_PENDING_EVENTS: {
    default: "200000",
    int: IntString(1, 100000000),
    doc: "events waiting for a commit before ingest answers 503",
  },
  TIDEMARK_FUTURE_TOLERANCE_MS: {
    default: "86400000",
    int: IntString(0, 10 * 365 * 86400000),
    doc: "Event times further ahead of receipt are clamped to receipt time",
  },
  TIDEMARK_RATE_LIMIT_FAIL: {
    default: "open",
    oneOf: ["open", "closed"],
    doc: "When the Redis rate limiter is unreachable: open (allow) or closed (503)",
  },
  TIDEMARK_AUTH_CACHE_MS: {
    default: "5000",
    int: IntString(0, 3600000),
    doc: "How long an API process caches a key lookup (rotations reach other processes within it)",
  },
  TIDEMARK_REDIS_STREAM_MAXLEN: {
    default: "1000000",
    int: IntString(1, 1000000000),
    doc: "async: stream length at which ingest answers 503 (never trimmed)",
  },
  TIDEMARK_WORKER_BATCH: {
    default: "2000",
    int: IntString(1, 100000),
    doc: "async: stream entries a worker reads at once",
  },
  TIDEMARK_REDIS_PREFIX: {
    default: "tidemark:",
    pattern: /^[A-Za-z0-9:_.-]{0,64}$/,
    doc: "Prefix of every Redis key, so several installations can share one Redis",
  },
  TIDEMARK_WORKER_CLAIM_IDLE_MS: {
    default: "30000",
    int: IntString(100, 86400000),
    doc: "async: pending entries idle this long are claimed from a dead worker",
  },
  DATABASE_URL: { default: "", doc: "Postgres (sync, async, cdc)" },
  REDIS_URL: { default: "", doc: "Redis (async, cdc; shared rate limit whenever set)" },
  KAFKA_BROKERS: { default: "", doc: "Kafka (cdc)" },
  CLICKHOUSE_URL: { default: "", doc: "ClickHouse (cdc)" },
  TIDEMARK_CLICKHOUSE_DATABASE: {
    default: "tidemark",
    pattern: /^[A-Za-z_][A-Za-z0-9_]{0,62}$/,
    doc: "cdc: the ClickHouse database of the events table (created at start)",
  },
  TIDEMARK_KAFKA_TOPIC: {
    default: "tidemark.events",
    pattern: /^[A-Za-z0-9._-]{1,200}$/,
    doc: "cdc: the Kafka topic of committed events (created at start when missing)",
  },
  TIDEMARK_KAFKA_PARTITIONS: {
    default: "4",
    int: IntString(1, 10000),
    doc: "cdc: partitions of the topic when Tidemark creates it (the most sink processes that share the work)",
  },
  TIDEMARK_KAFKA_REPLICAS: {
    default: "1",
    int: IntString(1, 100),
    doc: "cdc: replication factor of the topic when Tidemark creates it",
  },
  TIDEMARK_KAFKA_GROUP: {
    default: "tidemark-sink",
    pattern: /^[A-Za-z0-9._-]{1,200}$/,
    doc: "cdc: the sinks' Kafka consumer group",
  },
  TIDEMARK_CDC_SLOT: {
    default: "tidemark_events",
    pattern: /^[a-z0-9_]{1,63}$/,
    doc: "cdc: the Postgres logical replication slot (one cdc process streams from it at a time)",
  },
  TIDEMARK_CDC_PUBLICATION: {
    default: "tidemark_events",
    pattern: /^[a-z0-9_]{1,63}$/,
    doc: "cdc: the Postgres publication of the events table",
  },
  TIDEMARK_CDC_SLOT_LAG_WARN_BYTES: {
    default: "1073741824",
    int: IntString(1, Number.MAX_SAFE_INTEGER),
    doc: "cdc: WAL kept for the slot past which the cdc role logs a warning",
  },
  TIDEMARK_SINK_BATCH: {
    default: "10000",
    int: IntString(1, 1000000),
    doc: "cdc: most events the sink writes to ClickHouse at once",
  },
} as const satisfies Record<string, EnvSpec>;

interface EnvSpec {
  readonly default: string;
  readonly doc: string;
  readonly int?: { readonly min: number; readonly max: number };
  readonly oneOf?: readonly string[];
  readonly pattern?: RegExp;
}

export const ConfigSchema = Type.Object({
  port: Type.Integer(),
  host: Type.String(),
  secretToken: Type.String(),
  pipeline: Type.Union(PIPELINES.map((p) => Type.Literal(p))),
  role: Type.Union(ROLES.map((r) => Type.Literal(r))),
  dataDir: Type.String(),
  keyEnv: Type.String(),
  logLevel: Type.String(),
  maxBodyBytes: Type.Integer(),
  maxBatchEvents: Type.Integer(),
  flushMaxEvents: Type.Integer(),
  flushIntervalMs: Type.Integer(),
  maxPendingEvents: Type.Integer(),
  futureToleranceMs: Type.Integer(),
  rateLimitFailMode: Type.Union([Type.Literal("open"), Type.Literal("closed")]),
  authCacheMs: Type.Integer(),
  redisStreamMaxLen: Type.Integer(),
  redisPrefix: Type.String(),
  workerBatch: Type.Integer(),
  workerClaimIdleMs: Type.Integer(),
  databaseUrl: Type.String(),
  redisUrl: Type.String(),
  kafkaBrokers: Type.String(),
  clickhouseUrl: Type.String(),
  clickhouseDatabase: Type.String(),
  kafkaTopic: Type.String(),
  kafkaPartitions: Type.Integer(),
  kafkaReplicas: Type.Integer(),
  kafkaGroup: Type.String(),
  cdcSlot: Type.String(),
  cdcPublication: Type.String(),
  cdcSlotLagWarnBytes: Type.Integer(),
  sinkBatch: Type.Integer(),
});
export type Config = Readonly<Static<typeof ConfigSchema>>;

/** A bad value in the environment: start-up stops with this message, naming the variable. */
export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(`${variable}: ${message}`);
    this.name = "ConfigError";
  }
}

type EnvName = keyof typeof ENV_SPEC;

function read(env: Record<string, string | undefined>, name: EnvName): string {
  const spec: EnvSpec = ENV_SPEC[name];
  const raw = env[name];
  const value = raw === undefined || raw === "" ? spec.default : raw.trim();
  if (spec.oneOf && !spec.oneOf.includes(value)) {
    throw new ConfigError(name, `must be one of ${spec.oneOf.join(", ")}, got "${value}"`);
  }
  if (spec.pattern && !spec.pattern.test(value)) {
    throw new ConfigError(name, `must match ${spec.pattern}, got "${value}"`);
  }
  return value;
}

function readInt(env: Record<string, string | undefined>, name: EnvName): number {
  const spec: EnvSpec = ENV_SPEC[name];
  const value = read(env, name);
  const n = Number(value);
  if (!/^-?\d+$/.test(value) || !Number.isSafeInteger(n)) {
    throw new ConfigError(name, `must be an integer, got "${value}"`);
  }
  if (spec.int && (n < spec.int.min || n > spec.int.max)) {
    throw new ConfigError(name, `must be between ${spec.int.min} and ${spec.int.max}, got ${n}`);
  }
  return n;
}

function readUrl(env: Record<string, string | undefined>, name: EnvName, protocols: string[]): string {
  const value = read(env, name);
  if (value === "") return value;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError(name, `is not a URL: "${value}"`);
  }
  if (!protocols.includes(url.protocol)) {
    throw new ConfigError(name, `must use ${protocols.join(" or ")}, got "${url.protocol}"`);
  }
  return value;
}

/** Reads and checks the environment once; the result is frozen and passed down explicitly. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const config: Config = {
    port: readInt(env, "PORT"),
    host: read(env, "HOST"),
    secretToken: read(env, "SECRET_TOKEN"),
    pipeline: read(env, "TIDEMARK_PIPELINE") as Pipeline,
    role: read(env, "TIDEMARK_ROLE") as Role,
    dataDir: read(env, "TIDEMARK_DATA_DIR"),
    keyEnv: read(env, "TIDEMARK_KEY_ENV"),
    logLevel: read(env, "TIDEMARK_LOG_LEVEL"),
    maxBodyBytes: readInt(env, "TIDEMARK_MAX_BODY_BYTES"),
    maxBatchEvents: readInt(env, "TIDEMARK_MAX_BATCH_EVENTS"),
    flushMaxEvents: readInt(env, "TIDEMARK_FLUSH_MAX_EVENTS"),
    flushIntervalMs: readInt(env, "TIDEMARK_FLUSH_INTERVAL_MS"),
    maxPendingEvents: readInt(env, "TIDEMARK_MAX_PENDING_EVENTS"),
    futureToleranceMs: readInt(env, "TIDEMARK_FUTURE_TOLERANCE_MS"),
    rateLimitFailMode: read(env, "TIDEMARK_RATE_LIMIT_FAIL") as "open" | "closed",
    authCacheMs: readInt(env, "TIDEMARK_AUTH_CACHE_MS"),
    redisStreamMaxLen: readInt(env, "TIDEMARK_REDIS_STREAM_MAXLEN"),
    redisPrefix: read(env, "TIDEMARK_REDIS_PREFIX"),
    workerBatch: readInt(env, "TIDEMARK_WORKER_BATCH"),
    workerClaimIdleMs: readInt(env, "TIDEMARK_WORKER_CLAIM_IDLE_MS"),
    databaseUrl: readUrl(env, "DATABASE_URL", ["postgres:", "postgresql:"]),
    redisUrl: readUrl(env, "REDIS_URL", ["redis:", "rediss:"]),
    kafkaBrokers: read(env, "KAFKA_BROKERS"),
    clickhouseUrl: readUrl(env, "CLICKHOUSE_URL", ["http:", "https:"]),
    clickhouseDatabase: read(env, "TIDEMARK_CLICKHOUSE_DATABASE"),
    kafkaTopic: read(env, "TIDEMARK_KAFKA_TOPIC"),
    kafkaPartitions: readInt(env, "TIDEMARK_KAFKA_PARTITIONS"),
    kafkaReplicas: readInt(env, "TIDEMARK_KAFKA_REPLICAS"),
    kafkaGroup: read(env, "TIDEMARK_KAFKA_GROUP"),
    cdcSlot: read(env, "TIDEMARK_CDC_SLOT"),
    cdcPublication: read(env, "TIDEMARK_CDC_PUBLICATION"),
    cdcSlotLagWarnBytes: readInt(env, "TIDEMARK_CDC_SLOT_LAG_WARN_BYTES"),
    sinkBatch: readInt(env, "TIDEMARK_SINK_BATCH"),
  };
  if (!Value.Check(ConfigSchema, config)) throw new ConfigError("config", "internal: schema mismatch");
  const roles = PIPELINE_ROLES[config.pipeline];
  if (roles.length === 0) {
    throw new ConfigError(
      "TIDEMARK_PIPELINE",
      `"${config.pipeline}" is not available in this build yet; use one of ${AVAILABLE_PIPELINES.join(", ")}`,
    );
  }
  if (!roles.includes(config.role)) {
    throw new ConfigError(
      "TIDEMARK_ROLE",
      `the ${config.pipeline} pipeline has the roles ${roles.join(", ")}; got "${config.role}"`,
    );
  }
  const needsPostgres = config.pipeline !== "embedded";
  if (needsPostgres && config.databaseUrl === "") {
    throw new ConfigError("DATABASE_URL", `is required for TIDEMARK_PIPELINE=${config.pipeline}`);
  }
  if ((config.pipeline === "async" || config.pipeline === "cdc") && config.redisUrl === "") {
    throw new ConfigError("REDIS_URL", `is required for TIDEMARK_PIPELINE=${config.pipeline}`);
  }
  if (config.pipeline === "cdc" && config.kafkaBrokers === "") {
    throw new ConfigError("KAFKA_BROKERS", "is required for TIDEMARK_PIPELINE=cdc");
  }
  if (config.pipeline === "cdc" && config.clickhouseUrl === "") {
    throw new ConfigError("CLICKHOUSE_URL", "is required for TIDEMARK_PIPELINE=cdc");
  }
  return Object.freeze(config);
}

import {
  type Static,
  type TInteger,
  type TLiteral,
  type TSchema,
  type TString,
  type TUnion,
  Type,
} from "@sinclair/typebox";
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

/** How one variable's text becomes a typed value: its schema and its parser. */
interface Kind<S extends TSchema> {
  readonly schema: S;
  /** The value of `text`, or a ConfigError naming `name`. */
  parse(text: string, name: string): Static<S>;
}

const text = (pattern?: RegExp): Kind<TString> => ({
  schema: Type.String(pattern ? { pattern: pattern.source } : {}),
  parse(value, name) {
    if (pattern && !pattern.test(value)) throw new ConfigError(name, `must match ${pattern}, got "${value}"`);
    return value;
  },
});

const oneOf = <const T extends readonly string[]>(values: T): Kind<TUnion<TLiteral<T[number]>[]>> => ({
  schema: Type.Union(values.map((v) => Type.Literal(v))),
  parse(value, name) {
    if (!values.includes(value)) {
      throw new ConfigError(name, `must be one of ${values.join(", ")}, got "${value}"`);
    }
    return value as T[number];
  },
});

const int = (min: number, max: number): Kind<TInteger> => ({
  schema: Type.Integer({ minimum: min, maximum: max }),
  parse(value, name) {
    const n = Number(value);
    if (!/^-?\d+$/.test(value) || !Number.isSafeInteger(n)) {
      throw new ConfigError(name, `must be an integer, got "${value}"`);
    }
    if (n < min || n > max) throw new ConfigError(name, `must be between ${min} and ${max}, got ${n}`);
    return n;
  },
});

/** A URL with one of the protocols, or empty (not configured). */
const url = (...protocols: string[]): Kind<TString> => ({
  schema: Type.String(),
  parse(value, name) {
    if (value === "") return value;
    let parsed: URL;
    try {
      parsed = new URL(value);
    } catch {
      throw new ConfigError(name, `is not a URL: "${value}"`);
    }
    if (!protocols.includes(parsed.protocol)) {
      throw new ConfigError(name, `must use ${protocols.join(" or ")}, got "${parsed.protocol}"`);
    }
    return value;
  },
});

interface Variable<S extends TSchema> extends Kind<S> {
  /** The environment variable's name. */
  readonly env: string;
  /** The text used when the variable is unset or empty. */
  readonly default: string;
  /** One line for `.env.example`. */
  readonly doc: string;
}

const variable = <S extends TSchema>(
  env: string,
  fallback: string,
  kind: Kind<S>,
  doc: string,
): Variable<S> => ({
  ...kind,
  env,
  default: fallback,
  doc,
});

/**
 * Every environment variable Tidemark reads, once: its Config field, name, default, type and
 * meaning. The schema, the Config type and the mapping from the environment all derive from this
 * list, so a new variable is one line here (and its line in `.env.example`, which a unit test
 * checks against this list).
 */
const VARIABLES = {
  port: variable(
    "PORT",
    "8000",
    int(0, 65535),
    "HTTP port: the API, or /health, /ready and /metrics alone in a process without the api role",
  ),
  host: variable("HOST", "127.0.0.1", text(), "HTTP bind address; 0.0.0.0 to serve other machines"),
  secretToken: variable(
    "SECRET_TOKEN",
    "",
    text(),
    "Admin token; generated and kept in the data dir when empty",
  ),
  pipeline: variable(
    "TIDEMARK_PIPELINE",
    "embedded",
    oneOf(PIPELINES),
    `${AVAILABLE_PIPELINES.join(" | ")} (coming: ${COMING(PIPELINES, AVAILABLE_PIPELINES).join(", ") || "none"})`,
  ),
  role: variable(
    "TIDEMARK_ROLE",
    "all",
    oneOf(ROLES),
    `${AVAILABLE_ROLES.join(" | ")}: the pipeline's roles in one process, or one of them (coming: ${COMING(ROLES, AVAILABLE_ROLES).join(", ") || "none"})`,
  ),
  dataDir: variable(
    "TIDEMARK_DATA_DIR",
    "./data",
    text(),
    "Where the embedded store and the generated token live",
  ),
  duckdbMemoryLimit: variable(
    "TIDEMARK_DUCKDB_MEMORY_LIMIT",
    "512MB",
    text(/^[1-9][0-9]{0,5}(\.[0-9]{1,3})?\s?(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$/),
    "embedded: DuckDB's memory cap (e.g. 512MB, 2GiB); its default, 80% of RAM, lets a long-lived server grow",
  ),
  duckdbThreads: variable(
    "TIDEMARK_DUCKDB_THREADS",
    "2",
    int(1, 256),
    "embedded: DuckDB worker threads (the target machine has 2 cores, shared with the API)",
  ),
  keyEnv: variable("TIDEMARK_KEY_ENV", "dev", text(/^[a-z0-9]{1,16}$/), "The <env> in wk_<env>_..."),
  logLevel: variable(
    "TIDEMARK_LOG_LEVEL",
    "info",
    oneOf(["fatal", "error", "warn", "info", "debug", "trace", "silent"]),
    "JSON log level: fatal | error | warn | info | debug | trace | silent",
  ),
  maxBodyBytes: variable(
    "TIDEMARK_MAX_BODY_BYTES",
    "1048576",
    int(1024, 100 * 1024 * 1024),
    "Largest request body, after gunzip (413 above)",
  ),
  maxBatchEvents: variable(
    "TIDEMARK_MAX_BATCH_EVENTS",
    "1000",
    int(1, 100000),
    "Most events in one batch (413 above)",
  ),
  flushMaxEvents: variable(
    "TIDEMARK_FLUSH_MAX_EVENTS",
    "5000",
    int(1, 1000000),
    "Group commit: most events per commit",
  ),
  flushIntervalMs: variable(
    "TIDEMARK_FLUSH_INTERVAL_MS",
    "2",
    int(0, 10000),
    "Group commit: how long the first waiting event waits for others to join",
  ),
  maxPendingEvents: variable(
    "TIDEMARK_MAX_PENDING_EVENTS",
    "200000",
    int(1, 100000000),
    "events waiting for a commit before ingest answers 503",
  ),
  futureToleranceMs: variable(
    "TIDEMARK_FUTURE_TOLERANCE_MS",
    "86400000",
    int(0, 10 * 365 * 86400000),
    "Event times further ahead of receipt are clamped to receipt time",
  ),
  rateLimitFailMode: variable(
    "TIDEMARK_RATE_LIMIT_FAIL",
    "open",
    oneOf(["open", "closed"]),
    "When the Redis rate limiter is unreachable: open (allow) or closed (503)",
  ),
  authCacheMs: variable(
    "TIDEMARK_AUTH_CACHE_MS",
    "5000",
    int(0, 3600000),
    "How long an API process caches a key lookup (rotations reach other processes within it); embedded keeps a key until it changes, 0 turns caching off",
  ),
  redisStreamMaxLen: variable(
    "TIDEMARK_REDIS_STREAM_MAXLEN",
    "1000000",
    int(1, 1000000000),
    "async: stream length (entries of one request, or of requests accepted together, up to 50 events) at which ingest answers 503 (never trimmed)",
  ),
  workerBatch: variable(
    "TIDEMARK_WORKER_BATCH",
    "2000",
    int(1, 100000),
    "async: stream entries a worker reads at once",
  ),
  redisPrefix: variable(
    "TIDEMARK_REDIS_PREFIX",
    "tidemark:",
    text(/^[A-Za-z0-9:_.-]{0,64}$/),
    "Prefix of every Redis key, so several installations can share one Redis",
  ),
  workerClaimIdleMs: variable(
    "TIDEMARK_WORKER_CLAIM_IDLE_MS",
    "30000",
    int(100, 86400000),
    "async: pending entries idle this long are claimed from a dead worker",
  ),
  databaseUrl: variable("DATABASE_URL", "", url("postgres:", "postgresql:"), "Postgres (sync, async, cdc)"),
  redisUrl: variable(
    "REDIS_URL",
    "",
    url("redis:", "rediss:"),
    "Redis (async, cdc; shared rate limit whenever set)",
  ),
  kafkaBrokers: variable("KAFKA_BROKERS", "", text(), "Kafka (cdc)"),
  clickhouseUrl: variable("CLICKHOUSE_URL", "", url("http:", "https:"), "ClickHouse (cdc)"),
  clickhouseDatabase: variable(
    "TIDEMARK_CLICKHOUSE_DATABASE",
    "tidemark",
    text(/^[A-Za-z_][A-Za-z0-9_]{0,62}$/),
    "cdc: the ClickHouse database of the events table (created at start)",
  ),
  clickhousePropertyColumns: variable(
    "TIDEMARK_CLICKHOUSE_PROPERTY_COLUMNS",
    "",
    text(),
    "cdc: event properties ClickHouse keeps as columns of their own, comma-separated (added at start): filters, breakdowns and top values of them read one column instead of every property",
  ),
  kafkaTopic: variable(
    "TIDEMARK_KAFKA_TOPIC",
    "tidemark.events",
    text(/^[A-Za-z0-9._-]{1,200}$/),
    "cdc: the Kafka topic of committed events (created at start when missing)",
  ),
  kafkaPartitions: variable(
    "TIDEMARK_KAFKA_PARTITIONS",
    "4",
    int(1, 10000),
    "cdc: partitions of the topic when Tidemark creates it (the most sink processes that share the work)",
  ),
  kafkaReplicas: variable(
    "TIDEMARK_KAFKA_REPLICAS",
    "1",
    int(1, 100),
    "cdc: replication factor of the topic when Tidemark creates it",
  ),
  kafkaGroup: variable(
    "TIDEMARK_KAFKA_GROUP",
    "tidemark-sink",
    text(/^[A-Za-z0-9._-]{1,200}$/),
    "cdc: the sinks' Kafka consumer group",
  ),
  cdcSlot: variable(
    "TIDEMARK_CDC_SLOT",
    "tidemark_events",
    text(/^[a-z0-9_]{1,63}$/),
    "cdc: the Postgres logical replication slot (one cdc process streams from it at a time)",
  ),
  cdcPublication: variable(
    "TIDEMARK_CDC_PUBLICATION",
    "tidemark_events",
    text(/^[a-z0-9_]{1,63}$/),
    "cdc: the Postgres publication of the events table",
  ),
  cdcSlotLagWarnBytes: variable(
    "TIDEMARK_CDC_SLOT_LAG_WARN_BYTES",
    "1073741824",
    int(1, Number.MAX_SAFE_INTEGER),
    "cdc: WAL kept for the slot past which the cdc role logs a warning",
  ),
  sinkBatch: variable(
    "TIDEMARK_SINK_BATCH",
    "10000",
    int(1, 1000000),
    "cdc: most events the sink writes to ClickHouse at once",
  ),
  sinkLingerMs: variable(
    "TIDEMARK_SINK_LINGER_MS",
    "250",
    int(0, 60000),
    "cdc: how long the sink lets events gather before it writes them to ClickHouse, unless TIDEMARK_SINK_BATCH are there first (0: write what is there at once)",
  ),
};
type Variables = typeof VARIABLES;
type Field = keyof Variables;
const FIELDS = Object.keys(VARIABLES) as Field[];

/** The schema of Config, derived from the list. */
export const ConfigSchema = Type.Object(
  Object.fromEntries(FIELDS.map((field) => [field, VARIABLES[field].schema])) as {
    [K in Field]: Variables[K]["schema"];
  },
);
/** The checked configuration: one field per variable, typed from the list above. */
export type Config = Readonly<Static<typeof ConfigSchema>>;

/**
 * The environment variables by name, with default and meaning: what `.env.example` lists (a unit
 * test checks that they agree).
 */
export const ENV_SPEC: Readonly<Record<string, { readonly default: string; readonly doc: string }>> =
  Object.fromEntries(FIELDS.map((field) => [VARIABLES[field].env, VARIABLES[field]]));

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

function read(env: Record<string, string | undefined>, field: Field): unknown {
  const spec: Variable<TSchema> = VARIABLES[field];
  const raw = env[spec.env];
  return spec.parse(raw === undefined || raw === "" ? spec.default : raw.trim(), spec.env);
}

/** Reads and checks the environment once; the result is frozen and passed down explicitly. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const config: unknown = Object.fromEntries(FIELDS.map((field) => [field, read(env, field)]));
  // Each parser checked its value; this check also gives the object its type.
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

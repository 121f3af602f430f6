import { randomBytes } from "node:crypto";
import pg from "pg";

/** Slot, publication, topic and group names no other test (or earlier run) uses. */
export function uniqueCdcNames(label: string) {
  const id = `${label}_${randomBytes(4).toString("hex")}`.replace(/[^a-z0-9_]/gi, "_").toLowerCase();
  return {
    slot: `test_${id}`,
    publication: `test_${id}`,
    topic: `test-${id.replace(/_/g, "-")}`,
    group: `test-${id.replace(/_/g, "-")}`,
  };
}

/**
 * Drops a test's replication slot, waiting for its reader to go: Postgres refuses to drop a
 * database that a slot belongs to, and a slot left behind keeps WAL forever.
 */
export async function dropSlot(databaseUrl: string, slot: string): Promise<void> {
  if (!slot.startsWith("test_")) throw new Error(`refusing to drop slot ${slot}`);
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const { rows } = await client.query<{ pid: number | null }>(
        "SELECT active_pid AS pid FROM pg_replication_slots WHERE slot_name = $1",
        [slot],
      );
      if (rows.length === 0) return;
      if (rows[0]?.pid) {
        if (Date.now() > deadline) await client.query("SELECT pg_terminate_backend($1)", [rows[0].pid]);
        await new Promise((resolve) => setTimeout(resolve, 100));
        continue;
      }
      await client.query("SELECT pg_drop_replication_slot($1)", [slot]);
      return;
    }
  } finally {
    await client.end();
  }
}

/** Drops a test's ClickHouse database (its name must start with `test_`). */
export async function dropClickHouseDatabase(url: string, database: string): Promise<void> {
  if (!database.startsWith("test_")) throw new Error(`refusing to drop ClickHouse database ${database}`);
  await fetch(new URL("/", url), { method: "POST", body: `DROP DATABASE IF EXISTS ${database}` }).catch(
    () => undefined,
  );
}

/**
 * The environment of a cdc pipeline on services of its own within the shared ones: a Postgres
 * database, Redis prefix, replication slot, publication, Kafka topic and group, and ClickHouse
 * database no other test uses; `cleanups` receives what drops them afterwards. A string: the
 * reason it cannot run here.
 */
export async function cdcPipelineEnv(
  label: string,
  cleanups: (() => Promise<void>)[],
  services: { databaseUrl: string; redisUrl: string; kafkaBrokers: string; clickhouseUrl: string },
): Promise<Record<string, string>> {
  const { createTestDatabase, uniqueRedisPrefix, dropRedisPrefix } = await import("./services.js");
  const names = uniqueCdcNames(label);
  const db = await createTestDatabase(services.databaseUrl, label);
  const prefix = uniqueRedisPrefix(label);
  const clickhouseDatabase = names.slot; // test_<label>_<random>
  cleanups.push(async () => {
    await dropSlot(db.url, names.slot);
    await db.drop();
    await dropRedisPrefix(services.redisUrl, prefix);
    await dropClickHouseDatabase(services.clickhouseUrl, clickhouseDatabase);
  });
  return {
    TIDEMARK_PIPELINE: "cdc",
    DATABASE_URL: db.url,
    REDIS_URL: services.redisUrl,
    TIDEMARK_REDIS_PREFIX: prefix,
    KAFKA_BROKERS: services.kafkaBrokers,
    CLICKHOUSE_URL: services.clickhouseUrl,
    TIDEMARK_CLICKHOUSE_DATABASE: clickhouseDatabase,
    TIDEMARK_CDC_SLOT: names.slot,
    TIDEMARK_CDC_PUBLICATION: names.publication,
    TIDEMARK_KAFKA_TOPIC: names.topic,
    TIDEMARK_KAFKA_GROUP: names.group,
    TIDEMARK_KAFKA_PARTITIONS: "2",
  };
}

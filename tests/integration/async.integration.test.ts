import { after } from "node:test";
import { pipelineConformance } from "../conformance/pipeline.conformance.js";
import {
  createTestDatabase,
  dropRedisPrefix,
  requirePostgres,
  requireRedis,
  uniqueRedisPrefix,
} from "../helpers/services.js";

// Stage 2 (API -> Redis Stream -> worker -> Postgres), API and worker in one process (role all),
// through the same conformance suite as the embedded pipeline, on its own database and prefix.
const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const cleanup of cleanups) await cleanup();
});

pipelineConformance("async", async () => {
  const postgres = await requirePostgres();
  if (!postgres.ok) return postgres.reason;
  const redis = await requireRedis();
  if (!redis.ok) return redis.reason;
  const db = await createTestDatabase(postgres.url, "async");
  cleanups.push(db.drop);
  const prefix = uniqueRedisPrefix("async");
  cleanups.push(() => dropRedisPrefix(redis.url, prefix));
  return {
    TIDEMARK_PIPELINE: "async",
    DATABASE_URL: db.url,
    REDIS_URL: redis.url,
    TIDEMARK_REDIS_PREFIX: prefix,
  };
});

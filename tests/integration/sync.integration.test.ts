import { after } from "node:test";
import { pipelineConformance } from "../conformance/pipeline.conformance.js";
import {
  createTestDatabase,
  dropRedisPrefix,
  requirePostgres,
  requireRedis,
  uniqueRedisPrefix,
} from "../helpers/services.js";

// Stage 1 (API -> Postgres) through the same conformance suite as the embedded pipeline, on its
// own database; the shared Redis rate limiter is in the path too.
const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const cleanup of cleanups) await cleanup();
});

pipelineConformance("sync", async () => {
  const postgres = await requirePostgres();
  if (!postgres.ok) return postgres.reason;
  const redis = await requireRedis();
  if (!redis.ok) return redis.reason;
  const db = await createTestDatabase(postgres.url, "sync");
  cleanups.push(db.drop);
  const prefix = uniqueRedisPrefix("sync");
  cleanups.push(() => dropRedisPrefix(redis.url, prefix));
  return {
    TIDEMARK_PIPELINE: "sync",
    DATABASE_URL: db.url,
    REDIS_URL: redis.url,
    TIDEMARK_REDIS_PREFIX: prefix,
  };
});

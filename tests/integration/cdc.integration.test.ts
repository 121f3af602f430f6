import { after } from "node:test";
import { pipelineConformance } from "../conformance/pipeline.conformance.js";
import { cdcPipelineEnv } from "../helpers/cdc.js";
import { requireClickHouse, requireKafka, requirePostgres, requireRedis } from "../helpers/services.js";

// Stage 3 (API -> Redis Stream -> worker -> Postgres -> pgoutput -> Kafka -> sink -> ClickHouse),
// every role in one process (role all), through the same conformance suite as every pipeline;
// queries read ClickHouse, so the suite waits until the ledger's analytics_stored caught up.
const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const cleanup of cleanups) await cleanup();
});

pipelineConformance("cdc", async () => {
  const required = [
    await requirePostgres(),
    await requireRedis(),
    await requireKafka(),
    await requireClickHouse(),
  ];
  for (const r of required) if (!r.ok) return r.reason;
  const [postgres, redis, kafka, clickhouse] = required as { ok: true; url: string }[];
  return cdcPipelineEnv("cdc", cleanups, {
    databaseUrl: postgres!.url,
    redisUrl: redis!.url,
    kafkaBrokers: kafka!.url,
    clickhouseUrl: clickhouse!.url,
  });
});

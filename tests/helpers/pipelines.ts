import { cdcPipelineEnv } from "./cdc.js";
import {
  postgresPipelineEnv,
  requireClickHouse,
  requireKafka,
  requirePostgres,
  requireRedis,
} from "./services.js";

export const PIPELINES_UNDER_TEST = ["embedded", "sync", "async", "cdc"] as const;

/**
 * The environment that runs `pipeline` (every role in one process) on databases, Redis prefixes,
 * topics and tables of its own, or the reason it cannot run here; `cleanups` receives what drops
 * them afterwards.
 */
export async function pipelineEnv(
  pipeline: (typeof PIPELINES_UNDER_TEST)[number],
  label: string,
  cleanups: (() => Promise<void>)[],
): Promise<Record<string, string> | string> {
  if (pipeline === "embedded") return {};
  if (pipeline !== "cdc") return postgresPipelineEnv(pipeline, cleanups);
  const required = [
    await requirePostgres(),
    await requireRedis(),
    await requireKafka(),
    await requireClickHouse(),
  ];
  for (const r of required) if (!r.ok) return r.reason;
  const [postgres, redis, kafka, clickhouse] = required as { ok: true; url: string }[];
  return cdcPipelineEnv(label, cleanups, {
    databaseUrl: postgres!.url,
    redisUrl: redis!.url,
    kafkaBrokers: kafka!.url,
    clickhouseUrl: clickhouse!.url,
  });
}

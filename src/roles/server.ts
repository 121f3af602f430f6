import pino, { type Logger } from "pino";
import type { App } from "../api/app.js";
import { Metrics } from "../api/ops/metrics.js";
import { createParts } from "../backends/create.js";
import { type Config, processRoles, type Role } from "../config/config.js";
import type { Lifecycle } from "../pipeline/lifecycle.js";
import type { PipelineParts } from "../pipeline/parts.js";
import { ApiRole } from "./api.js";
import { buildCdc } from "./cdc.js";
import { OpsServer } from "./ops.js";
import { resolveSecretToken } from "./secret-token.js";
import { buildSink } from "./sink.js";
import { buildWorker } from "./worker.js";

export interface RunningTidemark {
  config: Config;
  parts: PipelineParts;
  app?: App;
  /** The URL the API listens on, when this process runs it. */
  url?: string;
  /**
   * The URL of this process's /health, /ready and /metrics: the API's, or, in a process without
   * the api role, those of its ops server (on the same HOST and PORT variables).
   */
  opsUrl: string;
  logger: Logger;
  /** Graceful stop: refuse new requests, answer those in flight, commit everything accepted. */
  close(): Promise<void>;
}

/** What a role builds its loop from. */
export interface RoleContext {
  config: Config;
  parts: PipelineParts;
  metrics: Metrics;
  logger: Logger;
}

/**
 * How each role builds its loop from the parts. A role missing here is refused earlier, by
 * loadConfig (PIPELINE_ROLES); adding one is its entry here and its file in src/roles/.
 */
const ROLE_LOOPS: { readonly [R in Exclude<Role, "all">]?: (context: RoleContext) => Lifecycle } = {
  api: (context) => new ApiRole(context),
  worker: ({ config, parts, metrics, logger }) =>
    buildWorker(config, parts, { log: logger, onFlush: metrics.recordFlush }),
  cdc: ({ config, parts, metrics, logger }) =>
    buildCdc(config, parts, {
      log: logger,
      onPublished: (events, dropped) => {
        metrics.cdcPublished.inc(events);
        if (dropped > 0) metrics.dropped.inc({ step: "cdc", reason: "unreadable_row" }, dropped);
      },
    }),
  sink: ({ config, parts, metrics, logger }) =>
    buildSink(config, parts, {
      log: logger,
      onWritten: (report) => {
        metrics.sinkBatchEvents.observe(report.events);
        metrics.sinkWriteDuration.observe(report.durationMs / 1000);
        for (const ms of report.visibilityMs) metrics.visibility.observe(ms / 1000);
      },
      onDropped: (reason, events) => metrics.dropped.inc({ step: "sink", reason }, events),
    }),
};

export function createLogger(config: Config): Logger {
  return pino({ level: config.logLevel, base: { service: "tidemark", role: config.role, pid: process.pid } });
}

/**
 * Starts every part the configured role needs, then the loop of each role this process runs.
 * Loops start downstream first (the API listens only once everything behind it runs) and close in
 * data-flow order (the API stops taking requests first, then each stage drains into the next).
 */
export async function startTidemark(
  baseConfig: Config,
  logger = createLogger(baseConfig),
): Promise<RunningTidemark> {
  const roles = processRoles(baseConfig);
  let queueDepth: () => Promise<number> = async () => 0;
  const metrics = new Metrics({ queueDepth: () => queueDepth() });
  const parts = await createParts(baseConfig, { onFlush: metrics.recordFlush, log: logger });
  queueDepth = () => parts.queue.depth();
  metrics.watch({
    slotLag: parts.changeFeed?.lagBytes.bind(parts.changeFeed),
    consumerLag: parts.logConsumer?.lag.bind(parts.logConsumer),
    storeMemory: parts.storeMemory,
  });

  let config = baseConfig;
  if (roles.includes("api")) {
    const secret = resolveSecretToken(baseConfig.dataDir, baseConfig.secretToken);
    config = Object.freeze({ ...baseConfig, secretToken: secret.token });
    if (secret.generated) {
      process.stdout.write(
        `\nTidemark generated an admin token (kept in ${secret.path}, mode 0600):\n\n  SECRET_TOKEN=${secret.token}\n\n`,
      );
    } else if (secret.path) {
      logger.info({ path: secret.path }, "admin token read from the data dir");
    }
  }
  const loops = roles.map((role) => {
    const build = ROLE_LOOPS[role];
    if (!build) throw new Error(`the ${role} role is not available in this build`);
    return build({ config, parts, metrics, logger });
  });

  const api = loops.find((loop): loop is ApiRole => loop instanceof ApiRole);
  // Without the api role nothing would answer a probe or a scrape: the ops endpoints alone.
  const ops = api
    ? undefined
    : new OpsServer({ config, checks: [...parts.lifecycle, ...loops], metrics, logger });

  const started: Lifecycle[] = [];
  try {
    for (const part of parts.lifecycle) {
      await part.start();
      started.push(part);
    }
    for (const loop of [...loops].reverse()) {
      await loop.start();
      started.push(loop);
    }
    await ops?.start();
  } catch (error) {
    for (const part of started.reverse()) await part.close().catch(() => undefined);
    throw error;
  }
  const opsUrl = api?.url ?? ops?.url ?? "";
  logger.info({ pipeline: config.pipeline, role: config.role, url: opsUrl }, "tidemark started");

  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= (async () => {
      logger.info("shutting down: no new requests, committing what was accepted");
      ops?.beginShutdown();
      for (const loop of loops) await loop.close();
      for (const part of [...parts.lifecycle].reverse()) await part.close();
      await ops?.close();
      logger.info("tidemark stopped");
    })();
    return closing;
  };
  return { config, parts, app: api?.app, url: api?.url, opsUrl, logger, close };
}

import pino, { type Logger } from "pino";
import { type App, buildApp } from "../api/app.js";
import { Metrics } from "../api/ops/metrics.js";
import { type Backends, createBackends } from "../backends/create.js";
import type { Config } from "../config/config.js";
import { resolveSecretToken } from "./secret-token.js";

export interface RunningTidemark {
  config: Config;
  backends: Backends;
  app?: App;
  /** The URL the API listens on, when this process runs it. */
  url?: string;
  logger: Logger;
  /** Graceful stop: refuse new requests, answer those in flight, commit everything accepted. */
  close(): Promise<void>;
}

export function createLogger(config: Config): Logger {
  return pino({ level: config.logLevel, base: { service: "tidemark", role: config.role, pid: process.pid } });
}

/** Starts every part the configured role needs; the API listens when the role includes it. */
export async function startTidemark(
  baseConfig: Config,
  logger = createLogger(baseConfig),
): Promise<RunningTidemark> {
  let queueDepth: () => Promise<number> = async () => 0;
  const metrics = new Metrics({ queueDepth: () => queueDepth() });
  // Backends first: a role the pipeline does not have stops start-up before anything is written.
  const backends = await createBackends(baseConfig, baseConfig.role, {
    onFlush: metrics.recordFlush,
    log: logger,
  });
  queueDepth = () => backends.queue.depth();

  const runsApi = baseConfig.role === "all" || baseConfig.role === "api";
  let config = baseConfig;
  if (runsApi) {
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
  const started: typeof backends.parts = [];
  try {
    for (const part of backends.parts) {
      await part.start();
      started.push(part);
    }
  } catch (error) {
    for (const part of started.reverse()) await part.close().catch(() => undefined);
    throw error;
  }

  let app: App | undefined;
  let url: string | undefined;
  if (runsApi) {
    app = await buildApp({ config, backends, metrics, logger });
    url = await app.fastify.listen({ port: config.port, host: config.host });
  }
  for (const loop of backends.loops) await loop.start();
  logger.info({ pipeline: config.pipeline, role: config.role, url }, "tidemark started");

  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= (async () => {
      logger.info("shutting down: no new requests, committing what was accepted");
      app?.beginShutdown();
      await app?.fastify.close();
      for (const loop of [...backends.loops].reverse()) await loop.close();
      await app?.ledger.flush();
      for (const part of [...backends.parts].reverse()) await part.close();
      logger.info("tidemark stopped");
    })();
    return closing;
  };
  return { config, backends, app, url, logger, close };
}

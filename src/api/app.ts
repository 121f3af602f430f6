import cors from "@fastify/cors";
import swagger from "@fastify/swagger";
import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from "fastify";
import type { Logger } from "pino";
import { ProjectService } from "../admin/project.service.js";
import type { Config } from "../config/config.js";
import { LedgerRecorder } from "../pipeline/ledger-recorder.js";
import type { PipelineParts } from "../pipeline/parts.js";
import { registerProjectRoutes } from "./admin/project.routes.js";
import { KeyResolver } from "./auth.js";
import { registerBodyParsing } from "./body-parsing.js";
import { registerDocs } from "./docs.js";
import { registerErrorHandler } from "./error-handler.js";
import { registerIngestRoutes } from "./ingest/ingest.routes.js";
import type { Metrics } from "./ops/metrics.js";
import { registerOpsRoutes } from "./ops/ops.routes.js";
import { registerQueryRoutes } from "./query/query.routes.js";

export interface AppDeps {
  config: Config;
  parts: PipelineParts;
  metrics: Metrics;
  logger: Logger;
}

export interface App {
  fastify: FastifyInstance;
  ledger: LedgerRecorder;
  /** Marks the app as draining: /ready answers 503 so load balancers stop sending. */
  beginShutdown(): void;
}

/** Builds the HTTP app on already-started backends; does not listen (tests use inject). */
export async function buildApp(deps: AppDeps): Promise<App> {
  const { config, parts, metrics, logger } = deps;
  const fastify: FastifyInstance = Fastify({
    loggerInstance: logger as FastifyBaseLogger,
    // Per-request lines would cost more than the request at ingest rates; /metrics counts them.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: config.maxBodyBytes,
    trustProxy: true,
    return503OnClosing: true,
    ajv: { customOptions: { allErrors: true, removeAdditional: false, coerceTypes: false } },
  });
  let shuttingDown = false;
  const ledger = new LedgerRecorder(parts.events, 1000, (error) =>
    logger.error({ err: error }, "ledger write failed"),
  );
  const keys = new KeyResolver(parts.projects, config.secretToken, config.authCacheMs);
  const service = new ProjectService(parts.projects, parts.events, ledger, config.keyEnv, keys);

  registerErrorHandler(fastify);
  registerBodyParsing(fastify);
  await fastify.register(cors, {
    origin: true,
    methods: ["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
    allowedHeaders: ["Authorization", "X-API-Key", "Content-Type", "Content-Encoding"],
    exposedHeaders: ["X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After"],
    maxAge: 86400,
  });
  await fastify.register(swagger, {
    openapi: {
      info: {
        title: "Tidemark",
        version: "0.1.0",
        description: "Event ingest, analytics queries and administration.",
      },
      components: {
        securitySchemes: {
          adminToken: { type: "http", scheme: "bearer", description: "SECRET_TOKEN" },
          writeKey: { type: "http", scheme: "bearer", description: "A project's write key, wk_..." },
          writeKeyHeader: { type: "apiKey", in: "header", name: "X-API-Key" },
          readKey: { type: "http", scheme: "bearer", description: "A project's read key, rk_..." },
        },
      },
    },
  });

  fastify.addHook("onResponse", async (request, reply) => {
    const route = request.routeOptions.url ?? "unmatched";
    metrics.httpRequests.inc({ route, status: reply.statusCode });
    metrics.httpDuration.observe({ route }, reply.elapsedTime / 1000);
  });

  registerIngestRoutes(fastify, {
    config,
    keys,
    rateLimiter: parts.rateLimiter,
    queue: parts.queue,
    ledger,
    metrics,
  });
  registerQueryRoutes(fastify, { keys, projects: parts.projects, analytics: parts.analytics, metrics });
  registerProjectRoutes(fastify, { service, keys });
  registerOpsRoutes(fastify, { parts: parts.lifecycle, metrics, isShuttingDown: () => shuttingDown });
  registerDocs(fastify);
  await fastify.ready();
  return {
    fastify,
    ledger,
    beginShutdown: () => {
      shuttingDown = true;
    },
  };
}

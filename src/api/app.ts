import cors from "@fastify/cors";
import swagger from "@fastify/swagger";
import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from "fastify";
import type { Logger } from "pino";
import { ProjectService } from "../admin/project.service.js";
import type { Config } from "../config/config.js";
import { AppError } from "../core/errors.js";
import { VERSION } from "../core/version.js";
import { LedgerRecorder } from "../pipeline/ledger-recorder.js";
import type { PipelineParts } from "../pipeline/parts.js";
import { registerProjectRoutes } from "./admin/project.routes.js";
import { KeyResolver } from "./auth.js";
import { registerBodyParsing } from "./body-parsing.js";
import { registerDocs } from "./docs.js";
import { clientErrorHandler, frameworkErrors, registerErrorHandler } from "./error-handler.js";
import { registerIngestRoutes } from "./ingest/ingest.routes.js";
import { IngestGate } from "./ingest/ingest-gate.js";
import { registerPosthogRoutes } from "./ingest/posthog.routes.js";
import { registerSegmentRoutes } from "./ingest/segment.routes.js";
import type { Metrics } from "./ops/metrics.js";
import { registerOpsRoutes } from "./ops/ops.routes.js";
import { registerQueryRoutes } from "./query/query.routes.js";
import { registerSdk, registerWeb } from "./web.js";

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
    // Errors Fastify and Node answer themselves get the one JSON shape (src/api/error-handler.ts):
    // routing errors, what the HTTP parser refuses, requests arriving while the server closes
    // (answered by the shutdown hook below), and a missing Host, which Node would answer itself.
    frameworkErrors,
    clientErrorHandler: clientErrorHandler(logger as FastifyBaseLogger),
    return503OnClosing: false,
    http: { requireHostHeader: false },
    ajv: { customOptions: { allErrors: true, removeAdditional: false, coerceTypes: false } },
  });
  let shuttingDown = false;
  const ledger = new LedgerRecorder(parts.events, 1000, (error) =>
    logger.error({ err: error }, "ledger write failed"),
  );
  // Where no other process changes keys, a looked-up key stays cached until this one changes it:
  // with a time limit, each key in use costs a store read every TIDEMARK_AUTH_CACHE_MS, 2.8 ms of
  // CPU each on DuckDB (measured at load 10): 150 keys at 5 s take 8 % of a core.
  const keyCacheMs =
    parts.soleProjectWriter && config.authCacheMs > 0 ? Number.POSITIVE_INFINITY : config.authCacheMs;
  const keys = new KeyResolver(parts.projects, config.secretToken, keyCacheMs);
  const service = new ProjectService(parts.projects, parts.events, ledger, config.keyEnv, keys);

  registerErrorHandler(fastify);
  // Hooks on every request take Fastify's callback form: an async hook costs a promise and a
  // microtask turn per request, and these never wait for anything.
  fastify.addHook("onRequest", (request, reply, done) => {
    if (request.raw.httpVersion === "1.1" && !request.headers.host) {
      done(new AppError("bad_request", { message: "HTTP/1.1 requests need a Host header" }));
      return;
    }
    if (shuttingDown && request.url !== "/ready" && request.url !== "/health") {
      reply.header("Connection", "close");
      done(new AppError("unavailable", { message: "This server is shutting down; retry", retryAfter: 1 }));
      return;
    }
    done();
  });
  registerBodyParsing(fastify);
  await fastify.register(cors, {
    origin: true,
    // An OPTIONS request that is not a CORS preflight is answered like one (204), rather than
    // with the plugin's text/plain 400.
    strictPreflight: false,
    // Header values as the plugin writes them: given as lists, it joins them on every request.
    methods: "GET, POST, PATCH, DELETE, OPTIONS",
    allowedHeaders: "Authorization, X-API-Key, Content-Type, Content-Encoding",
    exposedHeaders: "X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, Retry-After",
    maxAge: 86400,
  });
  await fastify.register(swagger, {
    openapi: {
      info: {
        title: "Tidemark",
        version: VERSION,
        description: "Event ingest, analytics queries and administration.",
      },
      components: {
        securitySchemes: {
          adminToken: { type: "http", scheme: "bearer", description: "SECRET_TOKEN" },
          writeKey: { type: "http", scheme: "bearer", description: "A project's write key, wk_..." },
          writeKeyHeader: { type: "apiKey", in: "header", name: "X-API-Key" },
          segmentWriteKey: {
            type: "http",
            scheme: "basic",
            description: "A project's write key as the user name, the password empty (Segment's way)",
          },
          readKey: { type: "http", scheme: "bearer", description: "A project's read key, rk_..." },
        },
      },
    },
  });

  fastify.addHook("onResponse", (request, reply, done) => {
    metrics.recordHttp(request.routeOptions.url ?? "unmatched", reply.statusCode, reply.elapsedTime / 1000);
    done();
  });

  const gate = new IngestGate({
    config,
    keys,
    rateLimiter: parts.rateLimiter,
    queue: parts.queue,
    ledger,
    metrics,
  });
  registerIngestRoutes(fastify, { config, gate });
  registerSegmentRoutes(fastify, { config, gate });
  await registerPosthogRoutes(fastify, { config, gate, keys });
  registerQueryRoutes(fastify, { keys, projects: parts.projects, analytics: parts.analytics, metrics });
  registerProjectRoutes(fastify, { service, keys });
  registerOpsRoutes(fastify, { parts: parts.lifecycle, metrics, isShuttingDown: () => shuttingDown });
  await registerDocs(fastify);
  await registerWeb(fastify);
  registerSdk(fastify);
  await fastify.ready();
  return {
    fastify,
    ledger,
    beginShutdown: () => {
      shuttingDown = true;
    },
  };
}

import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from "fastify";
import type { Logger } from "pino";
import type { Lifecycle } from "../../pipeline/lifecycle.js";
import { clientErrorHandler, frameworkErrors, registerErrorHandler } from "../error-handler.js";
import type { Metrics } from "./metrics.js";
import { registerOpsRoutes } from "./ops.routes.js";

/** The ops endpoints of a process that runs no api role. */
export interface OpsApp {
  fastify: FastifyInstance;
  /** /ready answers 503 from now on, so probes and load balancers see the process draining. */
  beginShutdown(): void;
}

/**
 * `/health`, `/ready` and `/metrics` alone, for a process whose roles serve no HTTP (worker, cdc,
 * sink): the same routes and the same error shape as the API's, so a probe or a Prometheus scrape
 * treats every role alike. `checks` are what /ready asks: the process's parts and its role loops.
 * Does not listen (tests use inject).
 */
export async function buildOpsApp(deps: {
  checks: readonly Lifecycle[];
  metrics: Metrics;
  logger: Logger;
}): Promise<OpsApp> {
  const fastify: FastifyInstance = Fastify({
    loggerInstance: deps.logger as FastifyBaseLogger,
    // Probes and scrapes every few seconds would fill the log; /metrics counts nothing here.
    logController: new LogController({ disableRequestLogging: true }),
    frameworkErrors,
    clientErrorHandler: clientErrorHandler(deps.logger as FastifyBaseLogger),
    return503OnClosing: false,
    http: { requireHostHeader: false },
  });
  let shuttingDown = false;
  registerErrorHandler(fastify);
  registerOpsRoutes(fastify, {
    parts: deps.checks,
    metrics: deps.metrics,
    isShuttingDown: () => shuttingDown,
  });
  await fastify.ready();
  return {
    fastify,
    beginShutdown: () => {
      shuttingDown = true;
    },
  };
}

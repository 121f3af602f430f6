import type { Logger } from "pino";
import type { Metrics } from "../api/ops/metrics.js";
import { buildOpsApp, type OpsApp } from "../api/ops/ops-app.js";
import type { Config } from "../config/config.js";
import type { Lifecycle } from "../pipeline/lifecycle.js";

/**
 * The HTTP face of a process without the api role (worker, cdc, sink): `/health`, `/ready` and
 * `/metrics` on HOST:PORT, so a Kubernetes probe, `make status` and Prometheus reach every role
 * the same way. It is not a role of the pipeline: the server starts it after the role loops and
 * closes it after them, having marked it draining first (/ready answers 503 while they drain).
 */
export class OpsServer {
  private app?: OpsApp;
  /** The URL it listens on, once started. */
  url?: string;

  constructor(
    private readonly deps: {
      config: Config;
      checks: readonly Lifecycle[];
      metrics: Metrics;
      logger: Logger;
    },
  ) {}

  async start(): Promise<void> {
    this.app = await buildOpsApp(this.deps);
    this.url = await this.app.fastify.listen({ port: this.deps.config.port, host: this.deps.config.host });
  }

  beginShutdown(): void {
    this.app?.beginShutdown();
  }

  async close(): Promise<void> {
    await this.app?.fastify.close();
  }
}

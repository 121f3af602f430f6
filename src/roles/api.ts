import type { Logger } from "pino";
import { type App, buildApp } from "../api/app.js";
import type { Metrics } from "../api/ops/metrics.js";
import type { Config } from "../config/config.js";
import type { Lifecycle } from "../pipeline/lifecycle.js";
import type { PipelineParts } from "../pipeline/parts.js";

/**
 * The api role: the HTTP app on the parts, listening on HOST:PORT once started. Closing refuses
 * new requests, answers those in flight and writes the API's ledger counts.
 */
export class ApiRole implements Lifecycle {
  readonly name = "api";
  app?: App;
  /** The URL the API listens on, once started. */
  url?: string;

  constructor(
    private readonly deps: { config: Config; parts: PipelineParts; metrics: Metrics; logger: Logger },
  ) {}

  async start(): Promise<void> {
    this.app = await buildApp(this.deps);
    this.url = await this.app.fastify.listen({ port: this.deps.config.port, host: this.deps.config.host });
  }

  async ready(): Promise<string | undefined> {
    return this.app ? undefined : "api: not listening";
  }

  async close(): Promise<void> {
    this.app?.beginShutdown();
    await this.app?.fastify.close();
    await this.app?.ledger.flush();
  }
}

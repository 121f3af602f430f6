import type { FastifyInstance } from "fastify";
import { VERSION, VERSION_HEADER } from "../../core/version.js";
import type { Lifecycle } from "../../pipeline/lifecycle.js";
import type { Metrics } from "./metrics.js";

export function registerOpsRoutes(
  app: FastifyInstance,
  deps: { parts: readonly Lifecycle[]; metrics: Metrics; isShuttingDown: () => boolean },
): void {
  app.get(
    "/health",
    {
      schema: {
        tags: ["ops"],
        summary: "The process is alive",
        description: `Also names the service and its version (body and ${VERSION_HEADER}), so the CLI sends the admin token only to Tidemark.`,
      },
    },
    async (_request, reply) => {
      reply.header(VERSION_HEADER, VERSION);
      return { status: "ok", service: "tidemark", version: VERSION };
    },
  );

  app.get(
    "/ready",
    { schema: { tags: ["ops"], summary: "Every backend is reachable" } },
    async (request, reply) => {
      // A check that throws is a failing check, not a 500; its error is logged, not answered.
      const check = (part: Lifecycle) =>
        part.ready().catch((error: unknown) => {
          request.log.warn({ err: error, part: part.name }, "readiness check failed");
          return "check failed";
        });
      const checks = await Promise.all(
        deps.parts.map(async (part) => [part.name, await check(part)] as const),
      );
      const failing = checks.filter(([, problem]) => problem !== undefined);
      const body = {
        status: deps.isShuttingDown() ? "shutting_down" : failing.length === 0 ? "ready" : "not_ready",
        checks: Object.fromEntries(checks.map(([name, problem]) => [name, problem ?? "ok"])),
      };
      return reply.status(body.status === "ready" ? 200 : 503).send(body);
    },
  );

  app.get(
    "/metrics",
    { schema: { tags: ["ops"], summary: "Prometheus metrics" } },
    async (_request, reply) => {
      const text = await deps.metrics.registry.metrics();
      return reply.type(deps.metrics.registry.contentType).send(text);
    },
  );
}

import type { FastifyInstance } from "fastify";
import type { Lifecycle } from "../../pipeline/lifecycle.js";
import type { Metrics } from "./metrics.js";

export function registerOpsRoutes(
  app: FastifyInstance,
  deps: { parts: readonly Lifecycle[]; metrics: Metrics; isShuttingDown: () => boolean },
): void {
  app.get("/health", { schema: { tags: ["ops"], summary: "The process is alive" } }, async () => ({
    status: "ok",
  }));

  app.get(
    "/ready",
    { schema: { tags: ["ops"], summary: "Every backend is reachable" } },
    async (_request, reply) => {
      const checks = await Promise.all(
        deps.parts.map(async (part) => [part.name, await part.ready()] as const),
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

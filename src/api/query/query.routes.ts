import { Type } from "@sinclair/typebox";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { AppError } from "../../core/errors.js";
import { UUID_PATTERN } from "../../core/event-schema.js";
import type { AnalyticsStore } from "../../pipeline/event-store.js";
import type { ProjectStore } from "../../pipeline/project-store.js";
import { parseQuerySpec, QueryBodySchema } from "../../query/spec.js";
import type { KeyResolver } from "../auth.js";
import type { Metrics } from "../ops/metrics.js";
import { documentOnly, ErrorSchema } from "../schemas.js";

const uuidPattern = new RegExp(UUID_PATTERN);
const QueryString = Type.Object({
  project_id: Type.Optional(Type.String({ description: "With the admin token: the project to query" })),
});

export function registerQueryRoutes(
  app: FastifyInstance,
  deps: { keys: KeyResolver; projects: ProjectStore; analytics: AnalyticsStore; metrics: Metrics },
): void {
  const { keys, projects, analytics, metrics } = deps;

  /** A read key names its project; the admin token must name one with ?project_id=. */
  async function projectOf(
    request: FastifyRequest<{ Querystring: { project_id?: string } }>,
  ): Promise<string> {
    if (keys.isAdmin(request)) {
      const id: unknown = request.query.project_id;
      if (Array.isArray(id)) {
        throw new AppError("invalid_query", {
          message: "Name one project: ?project_id=<id> once",
          details: [{ field: "project_id", message: "is given more than once" }],
        });
      }
      if (typeof id !== "string" || id === "") {
        throw new AppError("invalid_query", {
          message: "With the admin token, name the project: ?project_id=<id>",
          details: [{ field: "project_id", message: "is required with the admin token" }],
        });
      }
      // The id is echoed only once it is known to be a uuid: an error never reflects raw input.
      if (!uuidPattern.test(id)) throw new AppError("not_found", { message: "No project with this id" });
      if (!(await projects.get(id.toLowerCase())))
        throw new AppError("not_found", { message: `No project ${id}` });
      return id.toLowerCase();
    }
    return (await keys.require(request, "read")).id;
  }

  app.post<{ Querystring: { project_id?: string } }>(
    "/api/v1/query",
    {
      // Checked by parseQuerySpec, which names the wrong field; the schema documents the body.
      validatorCompiler: documentOnly,
      schema: {
        tags: ["query"],
        summary: "Run an analytics query: trends, funnel, retention, events, top_events, top_values",
        security: [{ readKey: [] }, { adminToken: [] }],
        querystring: QueryString,
        body: QueryBodySchema,
        response: { 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema },
      },
    },
    async (request) => {
      const projectId = await projectOf(request);
      const spec = parseQuerySpec(request.body);
      const started = performance.now();
      const result = await analytics.query(projectId, spec);
      const tookMs = performance.now() - started;
      metrics.queryDuration.observe({ kind: spec.kind }, tookMs / 1000);
      return { ...result, took_ms: Math.round(tookMs * 100) / 100 };
    },
  );
}

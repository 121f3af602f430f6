import type { TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import { Type } from "@sinclair/typebox";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { AppError } from "../../core/errors.js";
import { UUID_PATTERN } from "../../core/event-schema.js";
import type { AnalyticsStore } from "../../pipeline/event-store.js";
import type { ProjectStore } from "../../pipeline/project-store.js";
import { checkQueryBody, QueryBodySchema, toQuerySpec } from "../../query/spec.js";
import type { KeyResolver } from "../auth.js";
import type { Metrics } from "../ops/metrics.js";
import { ErrorSchema, typeBoxValidator } from "../schemas.js";

const uuidPattern = new RegExp(UUID_PATTERN);
const QueryString = Type.Object({
  project_id: Type.Optional(Type.String({ description: "With the admin token: the project to query" })),
});

declare module "fastify" {
  interface FastifyRequest {
    /** The project a query request may read, once its key or the admin token said so. */
    queryProjectId?: string;
  }
}

export function registerQueryRoutes(
  app: FastifyInstance,
  deps: { keys: KeyResolver; projects: ProjectStore; analytics: AnalyticsStore; metrics: Metrics },
): void {
  const { keys, projects, analytics, metrics } = deps;

  /** A read key names its project; the admin token must name one with ?project_id=. */
  async function projectOf(request: FastifyRequest): Promise<string> {
    if (keys.isAdmin(request)) {
      const { query } = request;
      const id =
        typeof query === "object" && query !== null && "project_id" in query ? query.project_id : undefined;
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

  /** Before the body is read: whose data this request may query. */
  async function authorise(request: FastifyRequest): Promise<void> {
    request.queryProjectId = await projectOf(request);
  }

  const checkQueryString = typeBoxValidator(QueryString, "invalid_query");
  app.withTypeProvider<TypeBoxTypeProvider>().post(
    "/api/v1/query",
    {
      onRequest: authorise,
      // The spec's own check names each wrong field (src/query/spec.ts); the body is then typed.
      validatorCompiler: ({ httpPart }) => (httpPart === "body" ? checkQueryBody : checkQueryString),
      schema: {
        tags: ["query"],
        summary: "Run an analytics query: trends, funnel, retention, events, top_events, top_values",
        security: [{ readKey: [] }, { adminToken: [] }],
        querystring: QueryString,
        body: QueryBodySchema,
        response: {
          200: Type.Object(
            { took_ms: Type.Number({ description: "How long the store took to answer" }) },
            {
              additionalProperties: true,
              description: "The answer of the spec's kind (see the README), and took_ms",
            },
          ),
          400: ErrorSchema,
          401: ErrorSchema,
          403: ErrorSchema,
          404: ErrorSchema,
        },
      },
    },
    async (request) => {
      const projectId = request.queryProjectId;
      if (projectId === undefined) throw new AppError("internal");
      const spec = toQuerySpec(request.body);
      const started = performance.now();
      const result = await analytics.query(projectId, spec);
      const tookMs = performance.now() - started;
      metrics.queryDuration.observe({ kind: spec.kind }, tookMs / 1000);
      return { ...result, took_ms: Math.round(tookMs * 100) / 100 };
    },
  );
}

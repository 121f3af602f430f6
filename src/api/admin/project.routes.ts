import { type Static, Type } from "@sinclair/typebox";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { type ProjectService, projectView } from "../../admin/project.service.js";
import { AppError } from "../../core/errors.js";
import { UUID_PATTERN } from "../../core/event-schema.js";
import { PLANS } from "../../core/plans.js";
import type { KeyResolver } from "../auth.js";
import { ErrorSchema } from "../schemas.js";

const PlanSchema = Type.Union(PLANS.map((p) => Type.Literal(p)));
const ProjectSchema = Type.Object({
  id: Type.String(),
  name: Type.String(),
  plan: PlanSchema,
  rate_limit_rpm: Type.Integer(),
  created_at: Type.String(),
});
const ProjectWithKeysSchema = Type.Intersect([
  ProjectSchema,
  Type.Object({
    api_key: Type.String({ description: "Write key; shown only now" }),
    read_key: Type.String({ description: "Read key; shown only now" }),
  }),
]);
const CreateBody = Type.Object(
  { name: Type.String({ minLength: 1, maxLength: 200 }), plan: Type.Optional(PlanSchema) },
  { additionalProperties: false },
);
const PlanBody = Type.Object({ plan: PlanSchema }, { additionalProperties: false });
const IdParams = Type.Object({ id: Type.String() });
const LedgerSchema = Type.Object({
  received: Type.Integer(),
  accepted: Type.Integer(),
  duplicate: Type.Integer(),
  rate_limited: Type.Integer(),
  rejected: Type.Record(Type.String(), Type.Integer()),
  stored: Type.Integer(),
  analytics_stored: Type.Optional(Type.Integer()),
});
const security = [{ adminToken: [] }];
const uuidPattern = new RegExp(UUID_PATTERN);

function projectId(request: FastifyRequest<{ Params: Static<typeof IdParams> }>): string {
  const { id } = request.params;
  // Not echoed: an error answer never reflects raw input.
  if (!uuidPattern.test(id)) throw new AppError("not_found", { message: "No project with this id" });
  return id.toLowerCase();
}

export function registerProjectRoutes(
  app: FastifyInstance,
  deps: { service: ProjectService; keys: KeyResolver },
): void {
  const { service, keys } = deps;
  const admin = async (request: FastifyRequest) => keys.requireAdmin(request);

  app.post<{ Body: Static<typeof CreateBody> }>(
    "/api/v1/project",
    {
      onRequest: admin,
      schema: {
        tags: ["admin"],
        summary: "Create a project; its keys are shown once",
        security,
        body: CreateBody,
        response: { 201: ProjectWithKeysSchema, 400: ErrorSchema, 401: ErrorSchema },
      },
    },
    async (request, reply) => {
      const created = await service.create(request.body.name, request.body.plan ?? "FREE");
      return reply.status(201).send(created);
    },
  );

  app.get(
    "/api/v1/project",
    {
      onRequest: admin,
      schema: {
        tags: ["admin"],
        summary: "List projects",
        security,
        response: { 200: Type.Object({ projects: Type.Array(ProjectSchema) }) },
      },
    },
    async () => ({ projects: await service.list() }),
  );

  app.get<{ Params: Static<typeof IdParams> }>(
    "/api/v1/project/:id",
    {
      onRequest: admin,
      schema: {
        tags: ["admin"],
        summary: "Get a project",
        security,
        params: IdParams,
        response: { 200: ProjectSchema },
      },
    },
    async (request) => projectView(await service.get(projectId(request))),
  );

  app.patch<{ Params: Static<typeof IdParams>; Body: Static<typeof PlanBody> }>(
    "/api/v1/project/:id",
    {
      onRequest: admin,
      schema: {
        tags: ["admin"],
        summary: "Change a project's plan (and so its rate limit)",
        security,
        params: IdParams,
        body: PlanBody,
        response: { 200: ProjectSchema },
      },
    },
    async (request) => service.setPlan(projectId(request), request.body.plan),
  );

  app.post<{ Params: Static<typeof IdParams> }>(
    "/api/v1/project/:id/rotate-keys",
    {
      onRequest: admin,
      schema: {
        tags: ["admin"],
        summary: "Replace both keys; the old ones stop working",
        security,
        params: IdParams,
        response: { 200: ProjectWithKeysSchema },
      },
    },
    async (request) => service.rotateKeys(projectId(request)),
  );

  app.delete<{ Params: Static<typeof IdParams> }>(
    "/api/v1/project/:id",
    {
      onRequest: admin,
      schema: {
        tags: ["admin"],
        summary: "Delete a project, its keys and its events",
        security,
        params: IdParams,
      },
    },
    async (request, reply) => {
      await service.delete(projectId(request));
      return reply.status(204).send();
    },
  );

  app.get<{ Params: Static<typeof IdParams> }>(
    "/api/v1/project/:id/stats",
    {
      schema: {
        tags: ["admin"],
        summary:
          "The loss ledger: what happened to every event received (admin token or the project's read key)",
        security: [{ adminToken: [] }, { readKey: [] }],
        params: IdParams,
        response: { 200: LedgerSchema },
      },
    },
    async (request) => {
      // Who asks comes first: without a key, every id gets the same 401.
      const project = keys.isAdmin(request) ? undefined : await keys.require(request, "read");
      const id = projectId(request);
      if (project && project.id !== id)
        throw new AppError("forbidden", { message: "This key belongs to another project" });
      return service.stats(id);
    },
  );
}

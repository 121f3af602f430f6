import type { FastifyInstance } from "fastify";

/** The OpenAPI 3 document at /docs (JSON), also at /docs/openapi.json. */
export function registerDocs(app: FastifyInstance): void {
  const handler = async () => app.swagger();
  app.get("/docs", { schema: { hide: true } }, handler);
  app.get("/docs/openapi.json", { schema: { hide: true } }, handler);
}

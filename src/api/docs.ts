import swaggerUi from "@fastify/swagger-ui";
import type { FastifyInstance } from "fastify";

/**
 * The API's documentation: the interactive page at /docs, the OpenAPI 3 document at /docs/json
 * (and /docs/yaml, and /docs/openapi.json as before). The page's scripts and styles are served
 * from the swagger-ui package under /docs/static, so it works offline; no validator is called.
 */
export async function registerDocs(app: FastifyInstance): Promise<void> {
  await app.register(swaggerUi, {
    routePrefix: "/docs",
    uiConfig: { docExpansion: "list", deepLinking: true },
  });
  app.get("/docs/openapi.json", { schema: { hide: true } }, async () => app.swagger());
}

import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import fastifyStatic from "@fastify/static";
import type { FastifyInstance } from "fastify";

/** Where `npm run build` puts the dashboard (web/vite.config.ts), from src/api or dist/api alike. */
export const WEB_ROOT = fileURLToPath(new URL("../../dist/web/", import.meta.url));

/**
 * The dashboard at `/`: the files Vite built, each registered as its own GET route (no wildcard),
 * so every other path, `/api/...` included, still gets the JSON 404 of the error handler. The
 * dashboard routes by the URL's hash, so `/` is the only page. Without a build, nothing is served
 * and the API works as before.
 */
export async function registerWeb(app: FastifyInstance, root = WEB_ROOT): Promise<boolean> {
  if (!existsSync(`${root}index.html`)) {
    app.log.warn({ root }, "dashboard not built (npm run build): / serves nothing");
    return false;
  }
  await app.register(fastifyStatic, {
    root,
    prefix: "/",
    wildcard: false,
    index: "index.html",
    // Hashed file names under assets/ never change; index.html must be revalidated.
    setHeaders: (reply, path) => {
      reply.header(
        "Cache-Control",
        path.includes("/assets/") ? "public, max-age=31536000, immutable" : "no-cache",
      );
      reply.header("X-Content-Type-Options", "nosniff");
    },
    schemaHide: true,
    // The docs page (@fastify/swagger-ui) registers @fastify/static too and owns reply.sendFile.
    decorateReply: false,
  });
  return true;
}

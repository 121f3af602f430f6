import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import fastifyStatic from "@fastify/static";
import type { FastifyInstance } from "fastify";

/** Where `npm run build` puts the dashboard (web/vite.config.ts), from src/api or dist/api alike. */
export const WEB_ROOT = fileURLToPath(new URL("../../dist/web/", import.meta.url));
/** The script-tag build of Tidemark's client (clients/js/vite.config.ts), likewise. */
export const SDK_FILE = fileURLToPath(new URL("../../clients/js/dist/tidemark.js", import.meta.url));

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

/**
 * Tidemark's browser client at `GET /sdk/tidemark.js`, so that a page needs one line,
 * `<script src="https://tidemark.example/sdk/tidemark.js" data-key="wk_..."></script>`. The file
 * is read once at start (about 7 KB). Pages on any site load it: Cross-Origin-Resource-Policy
 * allows that under their COEP. It is cached for an hour and revalidated by ETag, so a new
 * Tidemark's client reaches pages within the hour. Without a build, the path is the JSON 404.
 */
export function registerSdk(app: FastifyInstance, file = SDK_FILE): boolean {
  if (!existsSync(file)) {
    app.log.warn({ file }, "browser client not built (npm run build): /sdk/tidemark.js serves nothing");
    return false;
  }
  const script = readFileSync(file);
  const etag = `"${createHash("sha256").update(script).digest("base64url").slice(0, 22)}"`;
  app.get("/sdk/tidemark.js", { schema: { hide: true } }, async (request, reply) => {
    reply
      .header("Cache-Control", "public, max-age=3600")
      .header("ETag", etag)
      .header("X-Content-Type-Options", "nosniff")
      .header("Cross-Origin-Resource-Policy", "cross-origin");
    if (request.headers["if-none-match"] === etag) return reply.status(304).send();
    return reply.type("text/javascript; charset=utf-8").send(script);
  });
  return true;
}

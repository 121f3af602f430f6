import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import Fastify from "fastify";
import { registerSdk } from "../../src/api/web.js";

/** GET /sdk/tidemark.js (src/api/web.ts): the browser client, cacheable, loadable from any site. */
const dir = mkdtempSync(join(tmpdir(), "tidemark-sdk-"));
after(() => rmSync(dir, { recursive: true, force: true }));

test("serves the built script with its type, caching and cross-origin headers", async () => {
  const file = join(dir, "tidemark.js");
  writeFileSync(file, "(function(){window.Tidemark=1})();");
  const app = Fastify();
  assert.equal(registerSdk(app, file), true);
  const response = await app.inject({ method: "GET", url: "/sdk/tidemark.js" });
  assert.equal(response.statusCode, 200);
  assert.equal(response.body, "(function(){window.Tidemark=1})();");
  assert.equal(response.headers["content-type"], "text/javascript; charset=utf-8");
  assert.equal(response.headers["cache-control"], "public, max-age=3600");
  assert.equal(response.headers["cross-origin-resource-policy"], "cross-origin");
  assert.equal(response.headers["x-content-type-options"], "nosniff");
  const etag = response.headers.etag as string;
  assert.match(etag, /^"[\w-]{22}"$/);

  const again = await app.inject({
    method: "GET",
    url: "/sdk/tidemark.js",
    headers: { "if-none-match": etag },
  });
  assert.equal(again.statusCode, 304);
  assert.equal(again.body, "");
  const head = await app.inject({ method: "HEAD", url: "/sdk/tidemark.js" });
  assert.equal(head.statusCode, 200);
  await app.close();
});

test("without a build, nothing is registered and the path stays unknown", async () => {
  const app = Fastify();
  assert.equal(registerSdk(app, join(dir, "missing.js")), false);
  assert.equal((await app.inject({ method: "GET", url: "/sdk/tidemark.js" })).statusCode, 404);
  await app.close();
});

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { startTestTidemark, type TestTidemark } from "../helpers/tidemark.js";

let tidemark: TestTidemark;
before(async () => {
  tidemark = await startTestTidemark();
});
after(() => tidemark.close());

test("/docs is the interactive page, and every asset it references loads from this server", async () => {
  for (const path of ["/docs", "/docs/"]) {
    const page = await fetch(`${tidemark.url}${path}`);
    assert.equal(page.status, 200, path);
    assert.match(page.headers.get("content-type") ?? "", /^text\/html/);
    const html = await page.text();
    assert.match(html, /<div id="swagger-ui">/);
    const assets = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!);
    assert.ok(
      assets.some((a) => a.endsWith("swagger-ui-bundle.js")),
      "the bundle",
    );
    assert.ok(
      assets.some((a) => a.endsWith("swagger-ui.css")),
      "the styles",
    );
    for (const asset of assets) {
      assert.ok(!/^(https?:)?\/\//.test(asset), `${asset}: served from this server, not a CDN`);
      const url = new URL(asset, `${tidemark.url}${path}`);
      const response = await fetch(url);
      assert.equal(response.status, 200, `${path} -> ${url.pathname}`);
      const type = response.headers.get("content-type") ?? "";
      if (asset.endsWith(".js")) assert.match(type, /javascript/, asset);
      if (asset.endsWith(".css")) assert.match(type, /text\/css/, asset);
      const body = await response.text();
      assert.ok(body.length > 0, asset);
      // The initializer points the page at the document, on this server.
      if (asset.endsWith("swagger-initializer.js")) assert.match(body, /resolveUrl\('\.\/json'\)/);
    }
  }
});

test("/docs/json is the OpenAPI 3 document of every route", async () => {
  for (const path of ["/docs/json", "/docs/openapi.json"]) {
    const response = await fetch(`${tidemark.url}${path}`);
    assert.equal(response.status, 200, path);
    assert.match(response.headers.get("content-type") ?? "", /^application\/json/);
    const spec = (await response.json()) as { openapi: string; paths: Record<string, unknown> };
    assert.match(spec.openapi, /^3\./);
    for (const route of [
      "/api/v1/event",
      "/api/v1/event/batch",
      "/api/v1/query",
      "/api/v1/project",
      "/api/v1/project/{id}/stats",
    ]) {
      assert.ok(spec.paths[route], `${path}: ${route}`);
    }
    assert.ok(!Object.keys(spec.paths).some((p) => p.startsWith("/docs")), "the docs routes are hidden");
  }
  const yaml = await fetch(`${tidemark.url}/docs/yaml`);
  assert.equal(yaml.status, 200);
  assert.match(await yaml.text(), /^openapi: 3\./m);
});

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { gzipSync } from "node:zlib";
import { ensureClientBuilt } from "../helpers/client-build.js";

/** The browser build of Tidemark's client must stay under 5 KB minified and gzipped. */
const LIMIT = 5 * 1024;

test("the script-tag build is under 5 KB minified and gzipped", (t) => {
  const script = readFileSync(ensureClientBuilt());
  // gzip's default level (6), as a server or CDN compresses it and as `gzip -c` measures it.
  const gzipped = gzipSync(script).length;
  t.diagnostic(`clients/js/dist/tidemark.js: ${script.length} bytes minified, ${gzipped} bytes gzipped`);
  assert.ok(gzipped < LIMIT, `${gzipped} bytes gzipped; the limit is ${LIMIT}`);
  assert.doesNotMatch(script.toString(), /\n\s*\/\*\*/, "minified: no doc comments left");
  assert.doesNotMatch(script.toString(), /node:/, "nothing of Node in the browser build");
});

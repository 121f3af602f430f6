import { readFileSync } from "node:fs";

/**
 * Tidemark's version, from package.json: src/core/ and dist/core/ both sit two folders below it
 * (the Docker image keeps package.json beside dist/ too).
 */
export const VERSION: string = (
  JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }
).version;

/** The header `GET /health` carries, so a client can tell Tidemark from whatever else answers. */
export const VERSION_HEADER = "X-Tidemark-Version";

#!/usr/bin/env node
// Architecture checks run with the tests: only src/backends/ may import a database or queue
// driver, and only src/backends/create.ts may import a backend.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";

const DRIVERS = [
  "@duckdb/node-api",
  "pg",
  "pg-logical-replication",
  "ioredis",
  "kafkajs",
  "@clickhouse/client",
];
const root = new URL("..", import.meta.url).pathname;

function files(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? files(path) : path.endsWith(".ts") ? [path] : [];
  });
}

const problems = [];
for (const file of files(join(root, "src"))) {
  const rel = relative(root, file);
  const source = readFileSync(file, "utf8");
  const imports = [...source.matchAll(/(?:from|import)\s*\(?\s*["']([^"']+)["']/g)].map((m) => m[1]);
  for (const spec of imports) {
    if (DRIVERS.includes(spec) && !rel.startsWith("src/backends/"))
      problems.push(`${rel} imports the driver ${spec}`);
    const reachesBackend = /(^|\/)backends\/(embedded|memory|postgres|redis|kafka|clickhouse)\//.test(spec);
    if (reachesBackend && !rel.startsWith("src/backends/"))
      problems.push(`${rel} imports a backend (${spec}); use src/backends/create.ts`);
  }
}
if (problems.length > 0) {
  console.error(`Boundary check failed:\n  ${problems.join("\n  ")}`);
  process.exit(1);
}
console.log("boundaries ok: drivers only under src/backends/, backends only through create.ts");

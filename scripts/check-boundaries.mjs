#!/usr/bin/env node
// Architecture checks run with the tests (STYLE.md rules 9 and 15):
// - only src/backends/ imports a database or queue driver;
// - only src/backends/create.ts (the composition root) imports a backend;
// - roles are the top floor: backends never import roles, the HTTP layer (src/api/) never imports
//   the composition root, and the CLI never imports the HTTP layer.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative } from "node:path";

const DRIVERS = [
  "@duckdb/node-api",
  "pg",
  "pg-logical-replication",
  "ioredis",
  "kafkajs",
  "@platformatic/kafka",
  "@confluentinc/kafka-javascript",
  "@clickhouse/client",
  "chdb",
];
const BACKEND_FOLDERS = /^src\/backends\/(embedded|memory|postgres|redis|kafka|clickhouse)\//;
const root = new URL("..", import.meta.url).pathname;

function files(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? files(path) : path.endsWith(".ts") ? [path] : [];
  });
}

/** The imported file relative to the repository (src/...ts), or undefined for a package. */
function target(file, spec) {
  if (!spec.startsWith(".")) return undefined;
  return relative(root, join(dirname(file), spec)).replace(/\.js$/, ".ts");
}

/** Each rule sees the importer, the imported file (undefined for a package) and the specifier. */
const RULES = [
  (from, _to, spec) =>
    DRIVERS.some((d) => spec === d || spec.startsWith(`${d}/`)) && !from.startsWith("src/backends/")
      ? `imports the driver ${spec}; drivers live under src/backends/`
      : undefined,
  (from, to) =>
    to && BACKEND_FOLDERS.test(to) && !from.startsWith("src/backends/")
      ? `imports a backend (${to}); use src/backends/create.ts`
      : undefined,
  (from, to) =>
    to && from.startsWith("src/backends/") && to.startsWith("src/roles/")
      ? `imports a role (${to}); backends return parts, roles build loops`
      : undefined,
  (from, to) =>
    to === "src/backends/create.ts" && from.startsWith("src/api/")
      ? "imports the composition root; the HTTP layer gets its parts from a role"
      : undefined,
  (from, to) =>
    to && from === "src/cli.ts" && to.startsWith("src/api/")
      ? `imports the HTTP layer (${to}); the CLI goes through roles, src/admin/ or the running server`
      : undefined,
];

const problems = [];
for (const file of files(join(root, "src"))) {
  const from = relative(root, file);
  const source = readFileSync(file, "utf8");
  const imports = [...source.matchAll(/(?:from|import)\s*\(?\s*["']([^"']+)["']/g)].map((m) => m[1]);
  for (const spec of imports) {
    const to = target(file, spec);
    for (const rule of RULES) {
      const problem = rule(from, to, spec);
      if (problem) problems.push(`${from} ${problem}`);
    }
  }
}
if (problems.length > 0) {
  console.error(`Boundary check failed:\n  ${problems.join("\n  ")}`);
  process.exit(1);
}
console.log(
  "boundaries ok: drivers only under src/backends/, backends only through create.ts, " +
    "backends never import roles, api never imports create.ts, the CLI never imports api",
);

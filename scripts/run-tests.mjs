#!/usr/bin/env node
// Runs the test files with node's test runner (TypeScript through tsx).
// Usage: node scripts/run-tests.mjs [--tier unit|integration|all] [files...]
import { spawnSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";

const args = process.argv.slice(2);
let tier = "all";
const files = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--tier") tier = args[++i];
  else files.push(args[i]);
}

function find(dir) {
  const found = [];
  for (const name of readdirSync(dir)) {
    if (name === "node_modules" || name.startsWith(".")) continue;
    const path = join(dir, name);
    if (statSync(path).isDirectory()) found.push(...find(path));
    else if (name.endsWith(".test.ts")) found.push(path);
  }
  return found;
}

const isIntegration = (f) => f.endsWith(".integration.test.ts") || f.endsWith(".e2e.test.ts");
let selected = files.length > 0 ? files : find("tests");
if (tier === "unit") selected = selected.filter((f) => !isIntegration(f));
if (tier === "integration") selected = selected.filter(isIntegration);
selected.sort();
if (selected.length === 0) {
  console.error("no test files found");
  process.exit(1);
}
const result = spawnSync(
  process.execPath,
  ["--import", "tsx", "--test", "--test-reporter=spec", "--test-concurrency=2", ...selected],
  { stdio: "inherit" },
);
process.exit(result.status ?? 1);

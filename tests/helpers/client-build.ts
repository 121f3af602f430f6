import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const CLIENT = join(ROOT, "clients/js");
/** The script-tag build of Tidemark's client, served at /sdk/tidemark.js. */
export const CLIENT_SCRIPT = join(CLIENT, "dist/tidemark.js");

function newest(path: string): number {
  const stat = statSync(path);
  if (!stat.isDirectory()) return stat.mtimeMs;
  return readdirSync(path).reduce((latest, name) => Math.max(latest, newest(join(path, name))), 0);
}

/** Builds clients/js/dist (`npm run build:client`) when it is missing or older than its sources. */
export function ensureClientBuilt(): string {
  const sources = ["src", "tsconfig.json", "tsconfig.build.json", "vite.config.ts", "package.json"];
  const latest = Math.max(...sources.map((s) => newest(join(CLIENT, s))));
  if (!existsSync(CLIENT_SCRIPT) || statSync(CLIENT_SCRIPT).mtimeMs < latest) {
    const result = spawnSync("npm", ["run", "build:client"], { cwd: ROOT, stdio: "inherit" });
    if (result.status !== 0) throw new Error("npm run build:client failed");
  }
  return CLIENT_SCRIPT;
}

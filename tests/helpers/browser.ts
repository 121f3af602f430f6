import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import type { TestContext } from "node:test";
import { fileURLToPath } from "node:url";
import { type Browser, chromium } from "playwright-core";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));

/** Debian's Chromium (scripts/chromium.sh installs it); playwright-core never downloads one. */
export const CHROMIUM = process.env.TIDEMARK_CHROMIUM || "/usr/bin/chromium";

/** The flags measured to work here (shared/ENVIRONMENT.md): no GPU, no sandbox, no network of its own. */
export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/**
 * Launches Chromium, or skips `t` with a loud banner when it is not installed (and throws when
 * TIDEMARK_REQUIRE_SERVICES=1, as in CI, where a browser test must never skip).
 */
export async function requireChromium(t: TestContext): Promise<Browser | undefined> {
  if (!existsSync(CHROMIUM)) {
    const reason = `SKIPPED: Chromium not found at ${CHROMIUM}; run \`bash scripts/chromium.sh\``;
    if (process.env.TIDEMARK_REQUIRE_SERVICES === "1") {
      throw new Error(`Chromium not found at ${CHROMIUM} and TIDEMARK_REQUIRE_SERVICES=1`);
    }
    console.warn(`\n${"=".repeat(reason.length)}\n${reason}\n${"=".repeat(reason.length)}\n`);
    t.skip(reason);
    return undefined;
  }
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
}

function newest(dir: string): number {
  return readdirSync(dir, { withFileTypes: true }).reduce((latest, entry) => {
    if (entry.name === "node_modules") return latest;
    const path = join(dir, entry.name);
    return Math.max(latest, entry.isDirectory() ? newest(path) : statSync(path).mtimeMs);
  }, 0);
}

/** Builds the dashboard (dist/web) when it is missing or older than a file under web/. */
export function ensureWebBuilt(): void {
  const index = join(ROOT, "dist/web/index.html");
  if (!existsSync(index) || statSync(index).mtimeMs < newest(join(ROOT, "web"))) {
    const result = spawnSync("npm", ["run", "build:web"], { cwd: ROOT, stdio: "inherit" });
    if (result.status !== 0) throw new Error("npm run build:web failed");
  }
}

import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/**
 * The admin token when SECRET_TOKEN is not set: generated once, kept in the data dir with mode
 * 0600, and reused on later starts. `generated` says whether it is new (then it is printed).
 */
export function resolveSecretToken(
  dataDir: string,
  configured: string,
): { token: string; generated: boolean; path?: string } {
  if (configured !== "") return { token: configured, generated: false };
  const path = join(dataDir, "secret_token");
  if (existsSync(path)) {
    const token = readFileSync(path, "utf8").trim();
    if (token.length >= 16) return { token, generated: false, path };
  }
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const token = `st_${randomBytes(24).toString("base64url")}`;
  writeFileSync(path, `${token}\n`, { mode: 0o600 });
  chmodSync(path, 0o600);
  return { token, generated: true, path };
}

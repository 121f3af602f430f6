import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const CLI = `${ROOT}dist/cli.js`;

/** Builds dist/ once when a test needs the real CLI and it is missing. */
export function ensureBuilt(): string {
  if (!existsSync(CLI)) {
    const result = spawnSync("npm", ["run", "build"], { cwd: ROOT, stdio: "inherit" });
    if (result.status !== 0) throw new Error("npm run build failed");
  }
  return CLI;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() =>
        typeof address === "object" && address ? resolve(address.port) : reject(new Error("no port")),
      );
    });
  });
}

export interface ChildServer {
  process: ChildProcess;
  url: string;
  output(): string;
  /** Resolves with the exit code (or signal name) when the process ends. */
  exited: Promise<number | string>;
}

/** Runs `tidemark serve` in a child process and waits until /health answers. */
export async function startChildServer(
  env: Record<string, string>,
  args: string[] = [],
): Promise<ChildServer> {
  const cli = ensureBuilt();
  const port = env.PORT ?? String(await freePort());
  const child = spawn(process.execPath, [cli, "serve", ...args], {
    env: { ...process.env, TIDEMARK_LOG_LEVEL: "warn", ...env, PORT: port, HOST: "127.0.0.1" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  child.stderr?.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  const exited = new Promise<number | string>((resolve) => {
    child.on("exit", (code, signal) => resolve(code ?? signal ?? "unknown"));
  });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`server exited early:\n${output}`);
    try {
      const response = await fetch(`${url}/health`);
      if (response.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`server did not start:\n${output}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return { process: child, url, output: () => output, exited };
}

/** Every uuid stored for the project, read back through the events query, oldest page last. */
export async function storedUuids(url: string, readKey: string): Promise<string[]> {
  const uuids: string[] = [];
  let cursor: string | undefined;
  for (;;) {
    const response = await fetch(`${url}/api/v1/query`, {
      method: "POST",
      headers: { authorization: `Bearer ${readKey}`, "content-type": "application/json" },
      body: JSON.stringify({ kind: "events", limit: 1000, ...(cursor ? { cursor } : {}) }),
    });
    const body = (await response.json()) as { events: { uuid: string }[]; next_cursor: string | null };
    uuids.push(...body.events.map((e) => e.uuid));
    if (!body.next_cursor) return uuids;
    cursor = body.next_cursor;
  }
}

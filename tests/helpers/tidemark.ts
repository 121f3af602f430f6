import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino, { type Logger } from "pino";
import { loadConfig } from "../../src/config/config.js";
import { type RunningTidemark, startTidemark } from "../../src/roles/server.js";

export interface TestTidemark {
  running: RunningTidemark;
  url: string;
  token: string;
  dataDir: string;
  /** fetch against the running server with JSON in and out. */
  request(
    method: string,
    path: string,
    options?: { key?: string; body?: unknown; headers?: Record<string, string> },
  ): Promise<TestResponse>;
  createProject(
    plan?: "FREE" | "PRO" | "ENTERPRISE",
    name?: string,
  ): Promise<{ id: string; api_key: string; read_key: string }>;
  close(): Promise<void>;
}

export interface TestResponse {
  status: number;
  headers: Headers;
  // biome-ignore lint/suspicious/noExplicitAny: test responses are checked field by field
  body: any;
}

/**
 * Starts a real, listening Tidemark in this process on a free port with its own data dir; logs
 * go nowhere unless a logger is given.
 */
export async function startTestTidemark(
  env: Record<string, string> = {},
  logger?: Logger,
): Promise<TestTidemark> {
  const dataDir = mkdtempSync(join(tmpdir(), "tidemark-test-"));
  const token = `test-token-${Math.random().toString(36).slice(2)}`;
  const config = loadConfig({
    PORT: "0",
    HOST: "127.0.0.1",
    SECRET_TOKEN: token,
    TIDEMARK_DATA_DIR: dataDir,
    TIDEMARK_LOG_LEVEL: "silent",
    ...env,
  });
  const running = await startTidemark(config, logger ?? pino({ level: env.TIDEMARK_LOG_LEVEL ?? "silent" }));
  const url = running.url!;
  const request: TestTidemark["request"] = async (method, path, options = {}) => {
    const headers: Record<string, string> = { ...options.headers };
    if (options.key) headers.authorization = `Bearer ${options.key}`;
    let body: string | undefined;
    if (options.body !== undefined) {
      headers["content-type"] ??= "application/json";
      body = typeof options.body === "string" ? options.body : JSON.stringify(options.body);
    }
    const response = await fetch(`${url}${path}`, { method, headers, body });
    const text = await response.text();
    let parsed: unknown = text;
    try {
      parsed = text === "" ? undefined : JSON.parse(text);
    } catch {
      // not JSON: keep the text
    }
    return { status: response.status, headers: response.headers, body: parsed };
  };
  return {
    running,
    url,
    token,
    dataDir,
    request,
    async createProject(plan = "ENTERPRISE", name = "test project") {
      const response = await request("POST", "/api/v1/project", { key: token, body: { name, plan } });
      if (response.status !== 201)
        throw new Error(`create project: ${response.status} ${JSON.stringify(response.body)}`);
      return response.body;
    },
    async close() {
      await running.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

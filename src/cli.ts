#!/usr/bin/env node
import { Command, Option } from "commander";
import { ProjectService } from "./admin/project.service.js";
import { createParts } from "./backends/create.js";
import { AVAILABLE_ROLES, type Config, ConfigError, loadConfig, ROLES, type Role } from "./config/config.js";
import { PLANS, type Plan } from "./core/plans.js";
import { LedgerRecorder } from "./pipeline/ledger-recorder.js";
import { resolveSecretToken } from "./roles/secret-token.js";
import { startTidemark } from "./roles/server.js";

function configFor(role?: Role) {
  return loadConfig(role ? { ...process.env, TIDEMARK_ROLE: role } : process.env);
}

/**
 * The running server, when one answers on the configured port: admin commands then go through
 * its API (the embedded store file has a single writer, the server).
 */
async function runningServer(config: Config): Promise<{ url: string; token: string } | undefined> {
  const host = config.host === "0.0.0.0" ? "127.0.0.1" : config.host;
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${config.port}`;
  try {
    const response = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1000) });
    if (!response.ok) return undefined;
  } catch {
    return undefined;
  }
  return { url, token: resolveSecretToken(config.dataDir, config.secretToken).token };
}

async function adminRequest(
  server: { url: string; token: string },
  method: string,
  path: string,
  body?: unknown,
) {
  const response = await fetch(`${server.url}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${server.token}`,
      ...(body ? { "content-type": "application/json" } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const answer: unknown = await response.json();
  if (!response.ok) throw new Error(`the server answered ${response.status}: ${JSON.stringify(answer)}`);
  return answer;
}

/** Opens the stores directly for an admin command when no server is running. */
async function withProjects<T>(work: (service: ProjectService) => Promise<T>): Promise<T> {
  const config = configFor("api");
  const parts = await createParts(config);
  const stores = [parts.projects, parts.events];
  for (const part of stores) await part.start();
  try {
    const ledger = new LedgerRecorder(parts.events);
    return await work(new ProjectService(parts.projects, parts.events, ledger, config.keyEnv));
  } finally {
    for (const part of stores.reverse()) await part.close();
  }
}

const program = new Command("tidemark")
  .description("Tidemark: self-hosted event analytics")
  .showHelpAfterError();

program
  .command("serve")
  .description("Run Tidemark (the embedded platform by default)")
  .addOption(
    new Option(
      "--role <role>",
      `which role this process plays (coming: ${ROLES.filter((r) => !AVAILABLE_ROLES.includes(r)).join(", ")})`,
    ).choices(AVAILABLE_ROLES),
  )
  .action(async (options: { role?: Role }) => {
    const running = await startTidemark(configFor(options.role));
    let signals = 0;
    const stop = (signal: string) => {
      signals++;
      if (signals > 1) process.exit(1);
      running.logger.info({ signal }, "signal received");
      running.close().then(
        () => process.exit(0),
        (error: unknown) => {
          running.logger.error({ err: error }, "shutdown failed");
          process.exit(1);
        },
      );
    };
    process.on("SIGTERM", () => stop("SIGTERM"));
    process.on("SIGINT", () => stop("SIGINT"));
  });

const project = program
  .command("project")
  .description(
    "Manage projects: through the running server's API when one answers, else on the store directly",
  );
project
  .command("create")
  .requiredOption("--name <name>", "project name")
  .addOption(new Option("--plan <plan>", "plan").choices(PLANS).default("FREE"))
  .action(async (options: { name: string; plan: Plan }) => {
    const server = await runningServer(configFor());
    const created = server
      ? await adminRequest(server, "POST", "/api/v1/project", { name: options.name, plan: options.plan })
      : await withProjects((service) => service.create(options.name, options.plan));
    process.stdout.write(`${JSON.stringify(created, null, 2)}\n`);
  });
project.command("list").action(async () => {
  const server = await runningServer(configFor());
  const answer = server
    ? await adminRequest(server, "GET", "/api/v1/project")
    : { projects: await withProjects((service) => service.list()) };
  process.stdout.write(`${JSON.stringify(answer, null, 2)}\n`);
});

program
  .command("migrate")
  .description("Create or upgrade the store's schema, then exit")
  .action(async () => {
    const config = configFor("api");
    const parts = await createParts(config);
    for (const part of parts.lifecycle) await part.start();
    for (const part of [...parts.lifecycle].reverse()) await part.close();
    process.stdout.write(`schema up to date (${config.pipeline})\n`);
  });

program.parseAsync().catch((error: unknown) => {
  if (error instanceof ConfigError) {
    process.stderr.write(`tidemark: configuration error: ${error.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`tidemark: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});

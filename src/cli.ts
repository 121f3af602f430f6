#!/usr/bin/env node
import { Command, Option } from "commander";
import { ProjectService } from "./api/admin/project.service.js";
import { KeyResolver } from "./api/auth.js";
import { createBackends } from "./backends/create.js";
import { ConfigError, loadConfig, ROLES, type Role } from "./config/config.js";
import { PLANS, type Plan } from "./core/plans.js";
import { LedgerRecorder } from "./pipeline/ledger-recorder.js";
import { startTidemark } from "./roles/server.js";

function configFor(role?: Role) {
  return loadConfig(role ? { ...process.env, TIDEMARK_ROLE: role } : process.env);
}

/** Opens the stores directly for an admin command (the server must not hold the embedded file). */
async function withProjects<T>(work: (service: ProjectService) => Promise<T>): Promise<T> {
  const config = configFor();
  const backends = await createBackends(config, "api");
  const stores = [backends.projects, backends.events];
  for (const part of stores) await part.start();
  try {
    const ledger = new LedgerRecorder(backends.events);
    const keys = new KeyResolver(backends.projects, "", 0);
    return await work(new ProjectService(backends.projects, backends.events, keys, ledger, config.keyEnv));
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
  .addOption(new Option("--role <role>", "which role this process plays").choices(ROLES))
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

const project = program.command("project").description("Manage projects (stop the embedded server first)");
project
  .command("create")
  .requiredOption("--name <name>", "project name")
  .addOption(new Option("--plan <plan>", "plan").choices(PLANS).default("FREE"))
  .action(async (options: { name: string; plan: Plan }) => {
    const created = await withProjects((service) => service.create(options.name, options.plan));
    process.stdout.write(`${JSON.stringify(created, null, 2)}\n`);
  });
project.command("list").action(async () => {
  const projects = await withProjects((service) => service.list());
  process.stdout.write(`${JSON.stringify({ projects }, null, 2)}\n`);
});

program
  .command("migrate")
  .description("Create or upgrade the store's schema, then exit")
  .action(async () => {
    const config = configFor();
    const backends = await createBackends(config, "api");
    for (const part of backends.parts) await part.start();
    for (const part of [...backends.parts].reverse()) await part.close();
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

#!/usr/bin/env node
import { setFlagsFromString } from "node:v8";
import { Argument, Command, Option } from "commander";
import { ProjectService } from "./admin/project.service.js";
import { createParts } from "./backends/create.js";
import { AVAILABLE_ROLES, type Config, ConfigError, loadConfig, type Role } from "./config/config.js";
import { PLANS, type Plan } from "./core/plans.js";
import { VERSION, VERSION_HEADER } from "./core/version.js";
import { LedgerRecorder } from "./pipeline/ledger-recorder.js";
import { resolveSecretToken } from "./roles/secret-token.js";
import { startTidemark } from "./roles/server.js";

function configFor(role?: Role) {
  return loadConfig(role ? { ...process.env, TIDEMARK_ROLE: role } : process.env);
}

/** A running server that answers on PORT, with the admin token to send it. */
interface Server {
  url: string;
  token: string;
}

/**
 * The running Tidemark, when one answers on the configured port: admin commands then go through
 * its API (the embedded store file has a single writer, the server). Whatever answers must show
 * it is Tidemark (its /health names the service and carries X-Tidemark-Version) before the admin
 * token is read or sent; anything else stops the command.
 */
async function runningServer(config: Config): Promise<Server | undefined> {
  const host = config.host === "0.0.0.0" ? "127.0.0.1" : config.host === "::" ? "::1" : config.host;
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${config.port}`;
  let response: Response;
  try {
    response = await fetch(`${url}/health`, { signal: AbortSignal.timeout(2000) });
  } catch {
    return undefined; // nothing answers: work on the store directly
  }
  const body: unknown = await response.json().catch(() => undefined);
  const isTidemark =
    response.headers.has(VERSION_HEADER) &&
    typeof body === "object" &&
    body !== null &&
    (body as { service?: unknown }).service === "tidemark";
  if (!isTidemark) {
    throw new Error(
      `something other than Tidemark answers on ${url} (GET /health gave ${response.status} without ` +
        `${VERSION_HEADER}); the admin token was not sent. Set PORT (and HOST) to Tidemark's, or stop ` +
        "what holds that port to work on the store directly.",
    );
  }
  if (!response.ok)
    throw new Error(`Tidemark on ${url} is not serving (GET /health: ${response.status}); retry`);
  return { url, token: resolveSecretToken(config.dataDir, config.secretToken).token };
}

async function adminRequest(server: Server, method: string, path: string, body?: unknown): Promise<unknown> {
  const response = await fetch(`${server.url}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${server.token}`,
      ...(body ? { "content-type": "application/json" } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  const answer: unknown = text === "" ? undefined : JSON.parse(text);
  if (!response.ok) {
    const message = (answer as { error?: { message?: unknown } } | undefined)?.error?.message;
    throw new Error(
      `${typeof message === "string" ? message : text} (HTTP ${response.status} from ${server.url})`,
    );
  }
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
  .version(VERSION)
  .showHelpAfterError();

/**
 * How far V8 lets the JS heap grow past what its last full collection kept, in percent. By its own
 * heuristics V8 lets it grow up to 4x, and an ingesting server's batches outlive the young
 * generation (they wait for their commit), so the old generation filled with them between full
 * collections: up to 176-192 MB held, 35-60 MB of it live. At 50 % it held 72-73 MB at most.
 * Arrival-order load of 2M events through the batch API on an empty store, each way in turn:
 * peak RSS 712 and 732 MB before, 601 and 707 after (DuckDB's own peaks, between samples, move it
 * too); 17,767-18,079 events/s before, 17,448-17,456 after, the extra collections' 3 %.
 */
const HEAP_GROWING_PERCENT = 50;

program
  .command("serve")
  .description("Run Tidemark (the embedded platform by default)")
  .addOption(
    new Option(
      "--role <role>",
      "which role this process plays; all (the default) runs every role of the pipeline",
    ).choices(AVAILABLE_ROLES),
  )
  .action(async (options: { role?: Role }) => {
    setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
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

/**
 * An admin command: through the running server's API when Tidemark answers on PORT, else on the
 * store directly. Prints the answer as JSON.
 */
async function admin(
  throughServer: (server: Server) => Promise<unknown>,
  onStore: (service: ProjectService) => Promise<unknown>,
): Promise<void> {
  const server = await runningServer(configFor());
  const answer = server ? await throughServer(server) : await withProjects(onStore);
  process.stdout.write(`${JSON.stringify(answer, null, 2)}\n`);
}

const project = program
  .command("project")
  .description(
    "Manage projects: through the running server's API when one answers, else on the store directly",
  );
project
  .command("create")
  .description("Create a project; its keys are shown once")
  .requiredOption("--name <name>", "project name")
  .addOption(new Option("--plan <plan>", "plan").choices(PLANS).default("FREE"))
  .action((options: { name: string; plan: Plan }) =>
    admin(
      (server) => adminRequest(server, "POST", "/api/v1/project", { name: options.name, plan: options.plan }),
      (service) => service.create(options.name, options.plan),
    ),
  );
project
  .command("list")
  .description("List projects")
  .action(() =>
    admin(
      (server) => adminRequest(server, "GET", "/api/v1/project"),
      async (service) => ({ projects: await service.list() }),
    ),
  );
project
  .command("set-plan")
  .description("Change a project's plan (and so its rate limit)")
  .argument("<id>", "project id")
  .addArgument(new Argument("<plan>", "new plan").choices(PLANS))
  .action((id: string, plan: Plan) =>
    admin(
      (server) => adminRequest(server, "PATCH", `/api/v1/project/${encodeURIComponent(id)}`, { plan }),
      (service) => service.setPlan(id, plan),
    ),
  );
project
  .command("rotate-keys")
  .description("Replace both keys of a project; the old ones stop working, the new ones are shown once")
  .argument("<id>", "project id")
  .action((id: string) =>
    admin(
      (server) => adminRequest(server, "POST", `/api/v1/project/${encodeURIComponent(id)}/rotate-keys`),
      (service) => service.rotateKeys(id),
    ),
  );
project
  .command("stats")
  .description("A project's loss ledger: what happened to every event received")
  .argument("<id>", "project id")
  .action((id: string) =>
    admin(
      (server) => adminRequest(server, "GET", `/api/v1/project/${encodeURIComponent(id)}/stats`),
      (service) => service.stats(id),
    ),
  );
project
  .command("delete")
  .description("Delete a project, its keys and its events")
  .argument("<id>", "project id")
  .action((id: string) =>
    admin(
      async (server) => {
        await adminRequest(server, "DELETE", `/api/v1/project/${encodeURIComponent(id)}`);
        return { deleted: id.toLowerCase() };
      },
      async (service) => {
        await service.delete(id);
        return { deleted: id.toLowerCase() };
      },
    ),
  );

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

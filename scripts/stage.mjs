#!/usr/bin/env node
// One command per stage on this machine (the Makefile calls it):
//
//   make start STAGE=sync|async|cdc   node scripts/stage.mjs start STAGE
//   make stop                         node scripts/stage.mjs stop
//   make status                       node scripts/stage.mjs status
//
// `start` starts the services the stage needs through scripts/services.sh (a service already
// running is used as it is), runs the migrations (`tidemark migrate`), then runs each role of the
// pipeline as a process of its own in the background, downstream first, each on its own port:
// api on PORT (8000), worker PORT+1, cdc PORT+2, sink PORT+3, every one answering /health, /ready
// and /metrics there. It returns once every role is ready, and prints what runs where.
// A URL already in the environment (DATABASE_URL, REDIS_URL, CLICKHOUSE_URL, KAFKA_BROKERS) is
// used as given: its service is neither started nor stopped here.
//
// `stop` stops the roles (SIGTERM, data-flow order: the api first, so nothing new comes in while
// the rest drain), then the services that `start` started, and only those: a service that was
// already running stays up. `status` shows each service and role with its port and health, and
// exits 1 when one is down.
//
// State (pids, ports, which services it started: stage.json, 0600 as the URLs it keeps may hold
// passwords), a pid file per role and the roles' logs are in TIDEMARK_RUN_DIR (.run/, git-ignored).
import { spawn, spawnSync } from "node:child_process";
import {
  chmodSync,
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { createServer, Socket } from "node:net";
import { join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const RUN_DIR = resolve(ROOT, process.env.TIDEMARK_RUN_DIR || ".run");
const STATE = join(RUN_DIR, "stage.json");
const LOGS = join(RUN_DIR, "logs");
const CLI = join(ROOT, "dist/cli.js");
const SERVICES_SH = join(ROOT, "scripts/services.sh");

/** The services each stage needs, in the order services.sh starts them. */
const STAGE_SERVICES = {
  sync: ["postgres"],
  async: ["postgres", "redis"],
  cdc: ["postgres", "redis", "clickhouse", "kafka"],
};
/** The variable through which each service reaches Tidemark (what `services.sh env` prints). */
const URL_VARIABLE = {
  postgres: "DATABASE_URL",
  redis: "REDIS_URL",
  clickhouse: "CLICKHOUSE_URL",
  kafka: "KAFKA_BROKERS",
};
/** Each role's port is PORT plus its offset, so a role keeps its port from one start to the next. */
const PORT_OFFSET = { api: 0, worker: 1, cdc: 2, sink: 3 };
/** The variables services.sh reads (ports, folders): `stop` and `status` need the start's values. */
const SERVICES_VARIABLES =
  /^TIDEMARK_(SERVICES_DIR|PG_PORT|PG_DB|PG_BIN|REDIS_PORT|CLICKHOUSE_(TCP_|INTERSERVER_)?PORT|KAFKA_(PORT|CONTROLLER_PORT|HEAP|LIBS|CDS))$/;
// A cdc process creates the Kafka topic and the replication slot on a cold start: about 10 s
// measured here; the margin is for a busy 2-core machine.
const READY_TIMEOUT_MS = 120_000;
// Longer than any flush: a role's close finishes the batch in hand (at most TIDEMARK_SINK_BATCH
// events, a few seconds measured) before it exits.
const STOP_TIMEOUT_MS = 60_000;

/** `.run/<role>.pid`, for tools that expect one (the state file is what stop and status read). */
const pidFile = (role) => join(RUN_DIR, `${role}.pid`);
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));
/** A path as the user would type it: relative inside the working directory, else absolute. */
function shown(path) {
  const inside = relative(process.cwd(), path);
  return inside === "" ? "." : inside.startsWith("..") ? path : inside;
}
const say = (line = "") => process.stdout.write(`${line}\n`);

class StageError extends Error {}

function readState() {
  if (!existsSync(STATE)) return undefined;
  return JSON.parse(readFileSync(STATE, "utf8"));
}

function writeState(state) {
  writeFileSync(STATE, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
  chmodSync(STATE, 0o600);
}

/** The host to probe a role on: a wildcard bind answers on loopback. */
function probeHost(host) {
  if (host === "0.0.0.0" || host === "") return "127.0.0.1";
  if (host === "::") return "::1";
  return host;
}

const urlOf = (host, port) => `http://${host.includes(":") ? `[${host}]` : host}:${port}`;

/** True when `pid` runs `tidemark serve --role <role>` (a pid file outlives its process; pids are reused). */
function isRole(pid, role) {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const command = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    return command.some((arg) => arg.endsWith("cli.js")) && command.includes(role);
  } catch {
    return true; // no /proc: the signal check is all there is
  }
}

function portFree(host, port) {
  return new Promise((done) => {
    const server = createServer();
    server.once("error", () => done(false));
    server.listen(port, host, () => server.close(() => done(true)));
  });
}

function connects(host, port) {
  return new Promise((done) => {
    const socket = new Socket();
    const finish = (ok) => {
      socket.destroy();
      done(ok);
    };
    socket.setTimeout(1500, () => finish(false));
    socket.once("error", () => finish(false));
    socket.connect(port, host, () => finish(true));
  });
}

/** GET a role's ops route: its status and JSON body, or the connection error. */
async function probe(url) {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(3000) });
    const body = await response.json().catch(() => undefined);
    return { status: response.status, body };
  } catch (error) {
    return { error: error?.cause?.code ?? error?.name ?? String(error) };
  }
}

function lastLines(path, count = 15) {
  try {
    const lines = readFileSync(path, "utf8").trimEnd().split("\n");
    return lines.slice(-count).join("\n");
  } catch {
    return "(no log)";
  }
}

function servicesSh(args, env) {
  return spawnSync("bash", [SERVICES_SH, ...args], { cwd: ROOT, env, encoding: "utf8" });
}

/** "running" (started from this checkout's folder), "reused" (answers, started elsewhere) or "stopped". */
function serviceState(service, env) {
  const line = servicesSh(["status", service], env).stdout;
  if (line.startsWith(`${service}: running`)) return "running";
  if (line.startsWith(`${service}: another`)) return "reused";
  return "stopped";
}

/** Hides a password in a URL before it is printed. */
function masked(value) {
  try {
    const url = new URL(value);
    if (url.password) url.password = "****";
    return url.toString();
  } catch {
    return value;
  }
}

/** host and port of a service's URL (Kafka: the first broker of the list). */
function endpointOf(variable, value) {
  if (variable === "KAFKA_BROKERS") {
    const first = value.split(",")[0].trim();
    const at = first.lastIndexOf(":");
    return { host: first.slice(0, at), port: Number(first.slice(at + 1)) };
  }
  const url = new URL(value);
  const defaults = { DATABASE_URL: 5432, REDIS_URL: 6379, CLICKHOUSE_URL: 8123 };
  return { host: url.hostname.replace(/^\[|\]$/g, ""), port: Number(url.port || defaults[variable]) };
}

async function rolesOf(stage) {
  if (!existsSync(CLI)) throw new StageError("dist/cli.js is missing: run `make build` (make start does)");
  const { PIPELINE_ROLES } = await import(new URL("../dist/config/config.js", import.meta.url).href);
  return PIPELINE_ROLES[stage].filter((role) => role !== "all");
}

async function start(stage) {
  if (!Object.hasOwn(STAGE_SERVICES, stage)) {
    throw new StageError(
      `STAGE=${stage} is not a stage: use embedded (the default, in the foreground), sync, async or cdc`,
    );
  }
  const previous = readState();
  if (previous) {
    if (previous.roles.some((r) => isRole(r.pid, r.role))) {
      throw new StageError(
        `the ${previous.stage} stage already runs (started by make start; \`make status\` shows it): \`make stop\` first`,
      );
    }
    // Its processes are gone (killed, or the machine restarted); a service it started and that
    // still runs is still ours to stop.
    rmSync(STATE, { force: true });
  }
  const startedBefore = new Set(
    (previous?.services ?? []).filter((s) => s.origin === "started").map((s) => s.service),
  );
  const base = Number(process.env.PORT || 8000);
  const host = process.env.HOST || "127.0.0.1";
  const roles = await rolesOf(stage);
  const portOf = (role) => base + PORT_OFFSET[role];
  if (!Number.isInteger(base) || base < 1 || portOf(roles.at(-1)) > 65535) {
    throw new StageError(`PORT=${process.env.PORT} is not a port number with room for the stage's roles`);
  }
  for (const role of roles) {
    if (!(await portFree(host, portOf(role)))) {
      throw new StageError(
        `port ${portOf(role)} (the ${role} role's: PORT+${PORT_OFFSET[role]}) on ${host} is taken; ` +
          "stop what holds it, or start on other ports: make start STAGE=... PORT=9000",
      );
    }
  }
  mkdirSync(LOGS, { recursive: true, mode: 0o700 });
  const env = { ...process.env, TIDEMARK_PIPELINE: stage, HOST: host };
  delete env.TIDEMARK_ROLE; // each process gets --role
  const state = {
    stage,
    startedAt: new Date().toISOString(),
    host,
    servicesEnv: Object.fromEntries(
      Object.entries(process.env).filter(([key]) => SERVICES_VARIABLES.test(key)),
    ),
    services: [],
    roles: [],
  };
  writeState(state);
  try {
    say(`== stage ${stage}: services ${STAGE_SERVICES[stage].join(", ")}; roles ${roles.join(", ")}`);
    for (const service of STAGE_SERVICES[stage]) {
      const variable = URL_VARIABLE[service];
      if (process.env[variable]) {
        state.services.push({ service, variable, url: process.env[variable], origin: "given" });
        writeState(state);
        say(
          `  ${service}: ${variable} from the environment (${masked(process.env[variable])}), not managed here`,
        );
        continue;
      }
      const before = serviceState(service, env);
      const result = servicesSh(["start", service], env);
      writeFileSync(join(LOGS, "services.log"), `${result.stderr}${result.stdout}`, { flag: "a" });
      if (result.status !== 0) {
        throw new StageError(`scripts/services.sh start ${service} failed:\n${result.stderr.trim()}`);
      }
      const exported = servicesSh(["env", service], env).stdout.match(/^export ([A-Z_]+)=(.*)$/m);
      if (!exported) throw new StageError(`scripts/services.sh env ${service} printed no address`);
      env[exported[1]] = exported[2];
      const origin =
        before === "stopped" || (before === "running" && startedBefore.has(service)) ? "started" : before;
      state.services.push({ service, variable, url: exported[2], origin });
      writeState(state);
      const how = {
        started: "started now (make stop stops it)",
        running: "already running from this checkout (make stop leaves it running)",
        reused: "REUSED: started elsewhere (make stop leaves it running)",
      }[origin];
      say(`  ${service}: ${masked(exported[2])}: ${how}`);
    }

    const migrateLog = join(LOGS, "migrate.log");
    const migrate = spawnSync(process.execPath, [CLI, "migrate"], {
      cwd: ROOT,
      env,
      encoding: "utf8",
      timeout: 120_000,
    });
    writeFileSync(migrateLog, `${migrate.stdout ?? ""}${migrate.stderr ?? ""}`);
    if (migrate.status !== 0) {
      throw new StageError(`tidemark migrate failed (${shown(migrateLog)}):\n${lastLines(migrateLog)}`);
    }
    say(`  migrations: ${migrate.stdout.trim()}`);

    // Downstream first: the API takes requests only once everything behind it runs.
    for (const role of [...roles].reverse()) {
      const port = portOf(role);
      const log = join(LOGS, `${role}.log`);
      const fd = openSync(log, "a", 0o600);
      const child = spawn(process.execPath, [CLI, "serve", "--role", role], {
        cwd: ROOT,
        env: { ...env, PORT: String(port) },
        detached: true, // its own process group: a Ctrl-C of the terminal does not reach it
        stdio: ["ignore", fd, fd],
      });
      closeSync(fd);
      child.unref();
      state.roles.push({ role, pid: child.pid, port, log });
      writeFileSync(pidFile(role), `${child.pid}\n`);
      writeState(state);
      await waitFor(role, child.pid, `${urlOf(probeHost(host), port)}/health`, log, (r) => r.status === 200);
      say(`  ${role}: pid ${child.pid}, ${urlOf(host, port)} (log ${shown(log)})`);
    }
    for (const { role, pid, port, log } of state.roles) {
      await waitFor(role, pid, `${urlOf(probeHost(host), port)}/ready`, log, (r) => r.status === 200);
    }
  } catch (error) {
    say(`\nmake start STAGE=${stage} failed: ${error.message}`);
    say("stopping what it started");
    await stop();
    process.exitCode = 1;
    return;
  }

  const api = state.roles.find((r) => r.role === "api");
  if (api && !process.env.SECRET_TOKEN) {
    // The api prints a generated token once, into its log here: show it where the user looks.
    const log = readFileSync(api.log, "utf8");
    const generated = log.match(/generated an admin token \(kept in (.*), mode 0600\)/);
    const token = log.match(/^ {2}SECRET_TOKEN=(\S+)$/m);
    if (generated && token) {
      say(
        `\nTidemark generated an admin token (kept in ${generated[1]}, mode 0600):\n\n  SECRET_TOKEN=${token[1]}\n`,
      );
      say(`  export SECRET_TOKEN=$(cat ${generated[1]})`);
    } else {
      say(
        `\nadmin token: the one kept in the data dir (export SECRET_TOKEN=$(cat ${process.env.TIDEMARK_DATA_DIR || "data"}/secret_token))`,
      );
    }
  }
  say();
  await status();
  say(
    `\nAPI on ${urlOf(host, api?.port ?? base)}; \`make status\` shows this again, \`make stop\` stops it.`,
  );
}

/** Waits until `url` answers as `ok` wants, failing early when the process exits. */
async function waitFor(role, pid, url, log, ok) {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  let last;
  for (;;) {
    if (!isRole(pid, role))
      throw new StageError(`the ${role} role exited (${shown(log)}):\n${lastLines(log)}`);
    last = await probe(url);
    if (ok(last)) return;
    if (Date.now() > deadline) {
      throw new StageError(
        `the ${role} role did not answer ${url} within ${READY_TIMEOUT_MS / 1000} s ` +
          `(last: ${last.error ?? `${last.status} ${JSON.stringify(last.body)}`}); ${shown(log)}:\n${lastLines(log)}`,
      );
    }
    await sleep(250);
  }
}

async function stop() {
  const state = readState();
  if (!state) {
    say(
      "make stop: nothing to stop (no stage was started with make start STAGE=...; a foreground make start stops with Ctrl-C)",
    );
    return;
  }
  const order = Object.keys(PORT_OFFSET);
  const roles = [...state.roles].sort((a, b) => order.indexOf(a.role) - order.indexOf(b.role));
  for (const { role, pid } of roles) {
    if (!isRole(pid, role)) {
      say(`  ${role}: not running`);
      continue;
    }
    const t0 = Date.now();
    process.kill(pid, "SIGTERM");
    while (isRole(pid, role) && Date.now() - t0 < STOP_TIMEOUT_MS) await sleep(100);
    if (isRole(pid, role)) {
      process.kill(pid, "SIGKILL");
      say(`  ${role}: pid ${pid} still running ${STOP_TIMEOUT_MS / 1000} s after SIGTERM: killed`);
    } else {
      say(`  ${role}: pid ${pid} stopped (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    }
  }
  const env = { ...process.env, ...state.servicesEnv };
  const started = state.services.filter((s) => s.origin === "started").map((s) => s.service);
  if (started.length > 0) {
    const result = servicesSh(["stop", ...started], env);
    if (existsSync(LOGS))
      writeFileSync(join(LOGS, "services.log"), `${result.stderr}${result.stdout}`, { flag: "a" });
    say(
      `  services stopped: ${started.join(", ")}${result.status === 0 ? "" : ` (services.sh: ${result.stderr.trim()})`}`,
    );
  }
  const left = state.services.filter((s) => s.origin === "running" || s.origin === "reused");
  if (left.length > 0) {
    say(`  services left running (make start did not start them): ${left.map((s) => s.service).join(", ")}`);
  }
  const given = state.services.filter((s) => s.origin === "given");
  if (given.length > 0) {
    say(
      `  services given by URL, not managed here: ${given.map((s) => `${s.service} (${s.variable})`).join(", ")}`,
    );
  }
  for (const { role } of state.roles) rmSync(pidFile(role), { force: true });
  rmSync(STATE, { force: true });
}

async function status() {
  const state = readState();
  if (!state) {
    const host = probeHost(process.env.HOST || "127.0.0.1");
    const port = Number(process.env.PORT || 8000);
    const health = await probe(`${urlOf(host, port)}/health`);
    say(`no stage started with make start STAGE=... (${shown(RUN_DIR)} has none)`);
    if (health.status === 200) {
      const ready = await probe(`${urlOf(host, port)}/ready`);
      say(
        `Tidemark answers on ${urlOf(host, port)}: health ok, ${ready.body?.status ?? ready.error} (a foreground make start, or another process)`,
      );
    } else {
      say(`nothing answers as Tidemark on ${urlOf(host, port)}`);
    }
    return;
  }
  let healthy = true;
  const host = probeHost(state.host);
  say(`stage ${state.stage}, started ${state.startedAt} (logs in ${shown(LOGS)})`);
  say(`  ${"service".padEnd(11)}${"address".padEnd(24)}health`);
  for (const { service, variable, url, origin } of state.services) {
    const { host: serviceHost, port } = endpointOf(variable, url);
    const up = await connects(serviceHost, port);
    healthy &&= up;
    const how = {
      given: `given by ${variable}: not managed here`,
      started: "started by make start: make stop stops it",
      running: "was running before make start: left running",
      reused: "REUSED, started elsewhere: left running",
    }[origin];
    say(
      `  ${service.padEnd(11)}${`${serviceHost}:${port}`.padEnd(24)}${(up ? "up" : "DOWN").padEnd(9)}${how}`,
    );
  }
  say(`  ${"role".padEnd(11)}${"address".padEnd(24)}${"health".padEnd(9)}${"ready".padEnd(11)}pid`);
  const order = Object.keys(PORT_OFFSET);
  const roles = [...state.roles].sort((a, b) => order.indexOf(a.role) - order.indexOf(b.role));
  for (const { role, pid, port } of roles) {
    const url = urlOf(host, port);
    const alive = isRole(pid, role);
    const health = alive ? await probe(`${url}/health`) : { error: "not running" };
    const ready = alive ? await probe(`${url}/ready`) : { error: "not running" };
    healthy &&= health.status === 200 && ready.status === 200;
    const failing = Object.entries(ready.body?.checks ?? {})
      .filter(([, check]) => check !== "ok")
      .map(([name, check]) => `${name}: ${check}`);
    say(
      `  ${role.padEnd(11)}${`${host}:${port}`.padEnd(24)}` +
        `${(health.status === 200 ? "ok" : (health.error ?? String(health.status))).padEnd(9)}` +
        `${String(ready.body?.status ?? ready.error ?? ready.status).padEnd(11)}${alive ? pid : "-"}` +
        `${failing.length > 0 ? `  failing: ${failing.join(", ")}` : ""}`,
    );
  }
  if (!healthy) process.exitCode = 1;
}

const [command, stage] = process.argv.slice(2);
const commands = { start: () => start(stage), stop, status };
if (!Object.hasOwn(commands, command ?? "")) {
  console.error("usage: node scripts/stage.mjs start sync|async|cdc | stop | status");
  process.exit(2);
}
commands[command]().catch((error) => {
  console.error(`stage: ${error instanceof StageError ? error.message : (error?.stack ?? error)}`);
  process.exit(1);
});

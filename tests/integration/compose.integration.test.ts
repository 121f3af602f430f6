import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { parse } from "yaml";
import { loadConfig, PIPELINE_ROLES, type Pipeline } from "../../src/config/config.js";

// docker-compose.yml, rendered offline by Debian's docker-compose (`docker-compose config`: no
// engine needed) for the embedded default and each stage, then checked: the services each stage
// runs, the pipeline and role of every Tidemark container (its environment must pass Tidemark's
// own configuration check), health checks, restart policies, named volumes, grace periods, pinned
// official images, and secrets taken from the env file. Without docker-compose the test skips
// loudly; CI (TIDEMARK_REQUIRE_SERVICES=1) installs it and requires it.

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const VERSION = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }).version;
const STAGES = ["embedded", "sync", "async", "cdc"] as const satisfies readonly Pipeline[];

/** The services each stage runs besides the API, as the README's table says. */
const STAGE_SERVICES: Record<Pipeline, string[]> = {
  embedded: [],
  sync: ["postgres"],
  async: ["postgres", "redis", "worker"],
  cdc: ["postgres", "redis", "kafka", "clickhouse", "worker", "cdc", "sink"],
};
/** What each role may still be waiting on when asked to stop, in seconds (deploy/k8s/README.md). */
const DRAIN_BOUND_S: Record<string, number> = { api: 30, worker: 10, cdc: 10, sink: 30 };

interface Service {
  image: string;
  build?: unknown;
  command?: string[];
  environment?: Record<string, string>;
  profiles?: string[];
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test: string[] };
  restart?: string;
  stop_grace_period?: string;
  volumes?: string[];
  ports?: string[];
}
interface Rendered {
  services: Record<string, Service>;
  volumes: Record<string, unknown>;
}

const workdir = mkdtempSync(join(tmpdir(), "tidemark-compose-"));
after(() => rmSync(workdir, { recursive: true, force: true }));
// The secrets a user would put in .env; a developer's own .env in the checkout is not read.
const envFile = join(workdir, "env");
writeFileSync(
  envFile,
  "SECRET_TOKEN=secret-token-from-env-file\nPOSTGRES_PASSWORD=pg-password-from-env-file\nCLICKHOUSE_PASSWORD=ch-password-from-env-file\n",
);

function composeAvailable(): boolean {
  return spawnSync("docker-compose", ["version"], { encoding: "utf8" }).status === 0;
}

/** `docker-compose config` for a stage, as `COMPOSE_PROFILES=<stage> docker-compose up -d` would see it. */
function render(stage: Pipeline): Rendered {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME };
  if (stage !== "embedded") env.COMPOSE_PROFILES = stage;
  const result = spawnSync("docker-compose", ["--env-file", envFile, "config"], {
    cwd: ROOT,
    env,
    encoding: "utf8",
  });
  assert.equal(result.status, 0, `docker-compose config (${stage}) failed:\n${result.stderr}`);
  return parse(result.stdout) as Rendered;
}

/** The services a stage starts: those without a profile, and those of its profile. */
function active(rendered: Rendered, stage: Pipeline): Record<string, Service> {
  return Object.fromEntries(
    Object.entries(rendered.services).filter(
      ([, s]) => !s.profiles || s.profiles.length === 0 || s.profiles.includes(stage),
    ),
  );
}

const seconds = (duration = "10s") => {
  const match = /^(?:(\d+)m)?(?:(\d+)s)?$/.exec(duration);
  assert.ok(match, `a duration: ${duration}`);
  return Number(match[1] ?? 0) * 60 + Number(match[2] ?? 0);
};
const isTidemark = (service: Service) => service.image.startsWith("tidemark:");

for (const stage of STAGES) {
  test(`docker-compose ${stage === "embedded" ? "up -d" : `with COMPOSE_PROFILES=${stage}`}: the services, roles and settings of the ${stage} stage`, (t) => {
    if (!composeAvailable()) {
      const reason =
        "SKIPPED: docker-compose not installed (apt-get install docker-compose); .ci/run installs it";
      if (process.env.TIDEMARK_REQUIRE_SERVICES === "1")
        throw new Error(`${reason}, and TIDEMARK_REQUIRE_SERVICES=1`);
      console.warn(`\n${"=".repeat(reason.length)}\n${reason}\n${"=".repeat(reason.length)}\n`);
      t.skip(reason);
      return;
    }
    const rendered = render(stage);
    const services = active(rendered, stage);
    assert.deepEqual(Object.keys(services).sort(), ["tidemark", ...STAGE_SERVICES[stage]].sort());

    // The API: the embedded platform of `docker-compose up -d` as before, and every stage's API.
    const api = services.tidemark;
    assert.ok(api);
    assert.deepEqual(api.ports, ["127.0.0.1:8000:8000/tcp"]);
    assert.ok(
      api.volumes?.includes("tidemark-data:/data:rw"),
      "the API keeps its data and token in a volume",
    );
    for (const [name, service] of Object.entries(services)) {
      if (name !== "tidemark") assert.equal(service.ports, undefined, `${name} publishes no port`);
    }

    // Every Tidemark container: the one image, its role, a configuration Tidemark accepts.
    const roles: string[] = [];
    for (const [name, service] of Object.entries(services).filter(([, s]) => isTidemark(s))) {
      assert.equal(service.image, `tidemark:${VERSION}`, `${name}: the image of this version`);
      assert.ok(service.build, `${name}: built from the Dockerfile`);
      const [command, flag, role = ""] = service.command ?? [];
      assert.deepEqual([command, flag], ["serve", "--role"], `${name}: serve --role ...`);
      roles.push(role);
      const environment = service.environment ?? {};
      assert.equal(environment.TIDEMARK_PIPELINE, stage, `${name}: the stage's pipeline`);
      assert.equal(environment.SECRET_TOKEN, "secret-token-from-env-file", `${name}: SECRET_TOKEN from .env`);
      const config = loadConfig({ ...environment, TIDEMARK_ROLE: role });
      assert.equal(config.pipeline, stage);
      if (stage !== "embedded") {
        assert.equal(
          config.databaseUrl,
          "postgres://tidemark:pg-password-from-env-file@postgres:5432/tidemark",
        );
      }
      if (stage === "sync") assert.equal(config.redisUrl, "", "sync: no Redis (Stage 1 is API -> Postgres)");
      if (stage === "cdc") {
        assert.equal(config.clickhouseUrl, "http://tidemark:ch-password-from-env-file@clickhouse:8123");
        assert.equal(config.kafkaBrokers, "kafka:9092");
      }
      const grace = seconds(service.stop_grace_period);
      assert.ok(grace > (DRAIN_BOUND_S[role] ?? 0), `${name}: stop_grace_period ${grace}s beyond its drain`);
    }
    assert.deepEqual(
      roles.sort(),
      PIPELINE_ROLES[stage].filter((r) => r !== "all").sort(),
      "one container per role of the pipeline",
    );

    for (const [name, service] of Object.entries(services)) {
      assert.equal(service.restart, "unless-stopped", `${name}: restart policy`);
      // Tidemark's health check is the image's HEALTHCHECK (tests/unit/dockerfile.test.ts).
      if (!isTidemark(service)) assert.ok(service.healthcheck?.test?.length, `${name}: a health check`);
      for (const dependency of Object.keys(service.depends_on ?? {})) {
        assert.ok(services[dependency], `${name} depends on ${dependency}, which this stage runs`);
        assert.equal(service.depends_on?.[dependency]?.condition, "service_healthy");
      }
      for (const volume of service.volumes ?? []) {
        const source = volume.split(":")[0] ?? "";
        assert.ok(source in rendered.volumes, `${name}: ${volume} is a named volume`);
      }
      if (!isTidemark(service)) {
        assert.match(
          service.image,
          /^(postgres|redis|apache\/kafka|clickhouse\/clickhouse-server):\d+(\.\d+)+(-[a-z]+)?$/,
          `${name}: an official image, pinned`,
        );
        assert.ok(service.volumes?.length, `${name}: its data in a named volume`);
      }
    }

    if (services.postgres) {
      assert.ok(
        services.postgres.command?.includes("wal_level=logical"),
        "Postgres: logical replication for cdc",
      );
      assert.equal(services.postgres.environment?.POSTGRES_PASSWORD, "pg-password-from-env-file");
    }
    if (services.redis) {
      const command = (services.redis.command ?? []).join(" ");
      assert.match(command, /--appendonly yes --appendfsync always/, "Redis: an AOF fsynced on every write");
      assert.match(command, /--maxmemory-policy noeviction/);
    }
    if (services.clickhouse) {
      assert.equal(services.clickhouse.environment?.CLICKHOUSE_PASSWORD, "ch-password-from-env-file");
    }
    if (services.kafka) {
      assert.equal(
        services.kafka.environment?.KAFKA_PROCESS_ROLES,
        "broker,controller",
        "Kafka: KRaft, no ZooKeeper",
      );
    }
  });
}

test(".env.example documents every variable docker-compose.yml reads from .env", () => {
  const compose = readFileSync(join(ROOT, "docker-compose.yml"), "utf8");
  const used = new Set([...compose.matchAll(/\$\{([A-Z_][A-Z0-9_]*)/g)].map((m) => m[1]));
  const documented = new Set(
    [...readFileSync(join(ROOT, ".env.example"), "utf8").matchAll(/^([A-Z_][A-Z0-9_]*)=/gm)].map((m) => m[1]),
  );
  for (const name of used) assert.ok(documented.has(name), `${name} is used by docker-compose.yml`);
  for (const name of ["SECRET_TOKEN", "POSTGRES_PASSWORD", "CLICKHOUSE_PASSWORD", "COMPOSE_PROFILES"]) {
    assert.ok(used.has(name), `${name} is read by docker-compose.yml`);
  }
});

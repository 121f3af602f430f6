/**
 * The Kubernetes manifests (deploy/k8s/): every overlay is rendered with kustomize (`kubectl
 * kustomize`, or the pinned kustomize of scripts/kustomize.sh), and every object it renders is
 * validated offline against its Kubernetes or KEDA schema (the JSON schemas compiled into the npm
 * packages `kubernetes-models` and `@kubernetes-models/keda`), then checked against what Tidemark
 * itself needs: the roles of the pipeline, probes on /ready and /health, a grace period longer than
 * the drain, a budget and a network policy per role, the autoscalers on the names the code uses,
 * and a configuration that Tidemark's own loadConfig accepts for every role.
 *
 * Without kubectl or kustomize the test skips loudly (`bash scripts/kustomize.sh install` builds the
 * pinned kustomize); with TIDEMARK_REQUIRE_SERVICES=1 (CI) it fails instead.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import { TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication";
import { Deployment, type IDeployment } from "kubernetes-models/apps/v1/Deployment";
import {
  HorizontalPodAutoscaler,
  type IHorizontalPodAutoscaler,
} from "kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler";
import { type INetworkPolicy, NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicy";
import {
  type IPodDisruptionBudget,
  PodDisruptionBudget,
} from "kubernetes-models/policy/v1/PodDisruptionBudget";
import { ConfigMap, type IConfigMap } from "kubernetes-models/v1/ConfigMap";
import { Namespace } from "kubernetes-models/v1/Namespace";
import { type ISecret, Secret } from "kubernetes-models/v1/Secret";
import { Service } from "kubernetes-models/v1/Service";
import { parseAllDocuments } from "yaml";
import { streamKeys } from "../../src/backends/redis/redis.connection.js";
import { ENV_SPEC, loadConfig, PIPELINE_ROLES, type Pipeline } from "../../src/config/config.js";

const ROOT = new URL("../..", import.meta.url).pathname;
const K8S = join(ROOT, "deploy/k8s");
const OVERLAYS = readdirSync(join(K8S, "overlays")).sort();

/** A rendered object: what every kind has, the rest checked by its schema. */
interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [field: string]: unknown;
}

/** The schema of every kind the manifests may contain; any other kind is refused. */
const SCHEMAS: Record<string, new (data: never) => { validate(): void }> = {
  "v1/Namespace": Namespace,
  "v1/ConfigMap": ConfigMap,
  "v1/Secret": Secret,
  "v1/Service": Service,
  "apps/v1/Deployment": Deployment,
  "autoscaling/v2/HorizontalPodAutoscaler": HorizontalPodAutoscaler,
  "policy/v1/PodDisruptionBudget": PodDisruptionBudget,
  "networking.k8s.io/v1/NetworkPolicy": NetworkPolicy,
  "keda.sh/v1alpha1/ScaledObject": ScaledObject,
  "keda.sh/v1alpha1/TriggerAuthentication": TriggerAuthentication,
};

/** The schema errors of one object (empty when it is valid). */
function schemaErrors(object: K8sObject): string[] {
  const where = `${object.kind}/${object.metadata?.name}`;
  if (object.kind === "Secret" && object.data) {
    // kustomize folds long base64 values over several lines; the API server's decoder (Go's
    // encoding/base64) skips the line breaks, the schema's "byte" format does not.
    const data = object.data as Record<string, string>;
    object = {
      ...object,
      data: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, v.replace(/[\r\n]/g, "")])),
    };
  }
  const Model = SCHEMAS[`${object.apiVersion}/${object.kind}`];
  if (!Model) return [`${where}: no schema for ${object.apiVersion} ${object.kind}`];
  try {
    new Model(object as never).validate();
    return [];
  } catch (error) {
    return [`${where}: ${(error as Error).message}`];
  }
}

/** KEDA ScaledObject, as far as the checks below read it (the schema checked the rest). */
interface ScaledObjectShape extends K8sObject {
  spec: {
    scaleTargetRef: { name: string };
    minReplicaCount?: number;
    maxReplicaCount?: number;
    triggers: { type: string; metadata: Record<string, string> }[];
  };
}

/**
 * How long each role may take to drain after SIGTERM, from the code: the api answers what is in
 * flight (a query waits at most ClickHouse's 30 s request timeout, an ingest request the 2 s Redis
 * command timeout) after its preStop; the worker finishes one read (blocks 1 s) and one insert;
 * cdc waits at most Kafka's 10 s publish timeout; the sink at most one ClickHouse insert (30 s).
 * The grace period must exceed it.
 */
const DRAIN_S: Record<string, number> = { api: 32, worker: 15, cdc: 10, sink: 30 };

const selects = (selector: Record<string, string> | undefined, labels: Record<string, string> = {}) =>
  selector !== undefined &&
  Object.keys(selector).length > 0 &&
  Object.entries(selector).every(([k, v]) => labels[k] === v);

/**
 * What Tidemark needs of an overlay, beyond the schemas; each problem as one line (empty: none).
 * `overlay` is the pipeline the overlay runs (its directory's name).
 */
function tidemarkProblems(objects: K8sObject[], overlay: string): string[] {
  const problems: string[] = [];
  const of = <T>(kind: string) => objects.filter((o) => o.kind === kind) as unknown as T[];
  const configMaps = of<IConfigMap>("ConfigMap");
  const secrets = of<ISecret>("Secret");
  const deployments = of<IDeployment>("Deployment");
  const config = configMaps.find((c) => c.metadata?.name?.startsWith("tidemark-config"));
  if (!config?.data) return ["no tidemark-config ConfigMap"];
  const settings: Record<string, string> = { ...config.data };
  const secret = secrets.find((s) => s.metadata?.name?.startsWith("tidemark-secrets"));
  if (!secret?.data) return ["no tidemark-secrets Secret"];
  for (const [key, value] of Object.entries(secret.data))
    settings[key] = Buffer.from(value, "base64").toString();

  if (settings.TIDEMARK_PIPELINE !== overlay)
    problems.push(`TIDEMARK_PIPELINE is ${settings.TIDEMARK_PIPELINE}, the overlay is ${overlay}`);
  if (objects.some((o) => o.kind === "StatefulSet"))
    problems.push("a StatefulSet: stateful services are external (deploy/k8s/README.md)");

  const pipeline = overlay as Pipeline;
  const roles = (PIPELINE_ROLES[pipeline] ?? []).filter((r) => r !== "all");
  const byRole = new Map(
    deployments.map((d) => [d.metadata?.labels?.["app.kubernetes.io/component"] ?? "", d]),
  );
  const names = [...byRole.keys()].sort();
  if (names.join() !== [...roles].sort().join())
    problems.push(
      `Deployments for roles ${names.join(", ")}; the ${overlay} pipeline has ${roles.join(", ")}`,
    );

  const images = new Set<string>();
  for (const [role, deployment] of byRole) {
    const where = `Deployment ${deployment.metadata?.name}`;
    const pod = deployment.spec?.template.spec;
    const labels = deployment.spec?.template.metadata?.labels;
    const container = pod?.containers[0];
    if (!pod || !container) {
      problems.push(`${where}: no container`);
      continue;
    }
    if (container.image) images.add(container.image);
    const command = [...(container.command ?? []), ...(container.args ?? [])];
    if (command.slice(-3).join(" ") !== `serve --role ${role}`)
      problems.push(`${where}: runs "${command.join(" ")}", not serve --role ${role}`);
    const port = container.ports?.find((p) => p.name === "http")?.containerPort;
    if (String(port) !== settings.PORT) problems.push(`${where}: port ${port}, PORT is ${settings.PORT}`);
    const probe = (kind: "readinessProbe" | "livenessProbe", path: string) => {
      const get = container[kind]?.httpGet;
      if (get?.path !== path || (get.port !== "http" && get.port !== port))
        problems.push(`${where}: ${kind} is not GET ${path} on the http port`);
    };
    probe("readinessProbe", "/ready");
    probe("livenessProbe", "/health");
    for (const bound of ["requests", "limits"] as const) {
      const resources = container.resources?.[bound];
      if (!resources?.cpu || !resources.memory) problems.push(`${where}: no cpu and memory ${bound}`);
    }
    const preStop = container.lifecycle?.preStop?.sleep?.seconds ?? 0;
    const grace = pod.terminationGracePeriodSeconds ?? 30;
    if (grace <= preStop + (DRAIN_S[role] ?? 30))
      problems.push(
        `${where}: grace ${grace} s is not longer than preStop ${preStop} s + drain ${DRAIN_S[role]} s`,
      );
    if (pod.securityContext?.runAsNonRoot !== true) problems.push(`${where}: not runAsNonRoot`);
    for (const source of container.envFrom ?? []) {
      const ref = source.configMapRef?.name ?? source.secretRef?.name;
      const pool: { metadata?: { name?: string } }[] = source.configMapRef ? configMaps : secrets;
      if (!pool.some((o) => o.metadata?.name === ref))
        problems.push(`${where}: envFrom ${ref} is not rendered`);
    }
    if (role === "cdc" && (deployment.spec?.replicas !== 1 || deployment.spec?.strategy?.type !== "Recreate"))
      problems.push(`${where}: cdc must be one replica with strategy Recreate (one replication slot)`);
    if (
      !of<IPodDisruptionBudget>("PodDisruptionBudget").some((b) =>
        selects(b.spec?.selector?.matchLabels, labels),
      )
    )
      problems.push(`${where}: no PodDisruptionBudget selects its pods`);
    const policies = of<INetworkPolicy>("NetworkPolicy").filter((p) =>
      selects(p.spec?.podSelector?.matchLabels, labels),
    );
    if (!policies.some((p) => p.spec?.ingress && p.spec.egress))
      problems.push(`${where}: no NetworkPolicy of its own with ingress and egress rules`);
    // The role must start with this configuration: Tidemark's own check, per role.
    try {
      loadConfig({ ...settings, TIDEMARK_ROLE: role });
    } catch (error) {
      problems.push(`${where}: Tidemark refuses its configuration: ${(error as Error).message}`);
    }
  }
  if (images.size > 1) problems.push(`roles run different images: ${[...images].join(", ")}`);

  const scaled = of<ScaledObjectShape>("ScaledObject");
  const trigger = (target: string, type: string) => {
    const object = scaled.find((s) => s.spec.scaleTargetRef.name === target);
    const found = object?.spec.triggers.find((t) => t.type === type);
    if (!object || !found) problems.push(`no ScaledObject with a ${type} trigger for ${target}`);
    return { object, metadata: found?.metadata ?? {} };
  };
  if (byRole.has("api")) {
    const hpa = of<IHorizontalPodAutoscaler>("HorizontalPodAutoscaler").find(
      (h) => h.spec?.scaleTargetRef.name === byRole.get("api")?.metadata?.name,
    );
    if (!hpa?.spec?.metrics?.some((m) => m.type === "Resource" && m.resource?.name === "cpu"))
      problems.push("no HorizontalPodAutoscaler on CPU for the api");
  }
  if (byRole.has("worker")) {
    const { metadata } = trigger(byRole.get("worker")?.metadata?.name ?? "", "redis-streams");
    const prefix = settings.TIDEMARK_REDIS_PREFIX ?? ENV_SPEC.TIDEMARK_REDIS_PREFIX?.default ?? "";
    if (metadata.stream !== streamKeys(prefix).stream)
      problems.push(
        `worker trigger reads stream ${metadata.stream}, Tidemark writes ${streamKeys(prefix).stream}`,
      );
    if (metadata.addressFromEnv && !(metadata.addressFromEnv in settings))
      problems.push(`worker trigger reads ${metadata.addressFromEnv}, which no ConfigMap or Secret sets`);
  }
  if (byRole.has("sink")) {
    const { object, metadata } = trigger(byRole.get("sink")?.metadata?.name ?? "", "kafka");
    const setting = (name: string) => settings[name] || ENV_SPEC[name]?.default;
    if (metadata.topic !== setting("TIDEMARK_KAFKA_TOPIC"))
      problems.push(
        `sink trigger reads topic ${metadata.topic}, Tidemark's is ${setting("TIDEMARK_KAFKA_TOPIC")}`,
      );
    if (metadata.consumerGroup !== setting("TIDEMARK_KAFKA_GROUP"))
      problems.push(
        `sink trigger reads group ${metadata.consumerGroup}, Tidemark's is ${setting("TIDEMARK_KAFKA_GROUP")}`,
      );
    if (metadata.bootstrapServers !== settings.KAFKA_BROKERS)
      problems.push(
        `sink trigger asks ${metadata.bootstrapServers}, KAFKA_BROKERS is ${settings.KAFKA_BROKERS}`,
      );
    if ((object?.spec.maxReplicaCount ?? 100) > Number(setting("TIDEMARK_KAFKA_PARTITIONS")))
      problems.push("sink maxReplicaCount is above the topic's partitions: the extra sinks would idle");
  }
  return problems;
}

let workdir = "";
const rendered = new Map<string, K8sObject[]>();
let skipReason: string | undefined;

before(() => {
  // Render a copy whose Secret is filled from the committed template (secret.env is not in git).
  workdir = mkdtempSync(join(tmpdir(), "tidemark-k8s-"));
  cpSync(K8S, join(workdir, "k8s"), { recursive: true });
  cpSync(join(K8S, "base/secret.env.example"), join(workdir, "k8s/base/secret.env"));
  for (const overlay of OVERLAYS) {
    const result = spawnSync(
      "bash",
      [join(ROOT, "scripts/kustomize.sh"), "build", join(workdir, "k8s/overlays", overlay)],
      {
        encoding: "utf8",
      },
    );
    if (result.status === 3) {
      skipReason = `SKIPPED: no kubectl or kustomize (${result.stderr.trim()})`;
      if (process.env.TIDEMARK_REQUIRE_SERVICES === "1")
        throw new Error(`${skipReason}, and TIDEMARK_REQUIRE_SERVICES=1`);
      console.warn(`\n${"=".repeat(skipReason.length)}\n${skipReason}\n${"=".repeat(skipReason.length)}\n`);
      return;
    }
    assert.equal(result.status, 0, `kustomize ${overlay}: ${result.stderr}`);
    rendered.set(
      overlay,
      parseAllDocuments(result.stdout).map((doc) => {
        assert.deepEqual(doc.errors, [], `${overlay}: YAML errors`);
        return doc.toJS() as K8sObject;
      }),
    );
  }
});
after(() => rmSync(workdir, { recursive: true, force: true }));

test("there is an overlay for each stream pipeline", () => {
  assert.deepEqual(OVERLAYS, ["async", "cdc"]);
});

for (const overlay of OVERLAYS) {
  test(`overlay ${overlay}: every rendered object is valid against its Kubernetes or KEDA schema`, (t) => {
    if (skipReason) return t.skip(skipReason);
    const objects = rendered.get(overlay) ?? [];
    assert.ok(objects.length > 10, `${overlay} rendered ${objects.length} objects`);
    assert.deepEqual(objects.flatMap(schemaErrors), []);
    assert.ok(objects.every((o) => o.kind === "Namespace" || o.metadata.namespace === "tidemark"));
  });

  test(`overlay ${overlay}: has what Tidemark's roles need`, (t) => {
    if (skipReason) return t.skip(skipReason);
    assert.deepEqual(tidemarkProblems(rendered.get(overlay) ?? [], overlay), []);
  });
}

test("the schema check refuses broken objects", () => {
  const broken: K8sObject[] = [
    // replicas must be an integer, and a Deployment needs a selector
    {
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name: "x" },
      spec: { replicas: "two", template: {} },
    },
    // triggers must be an array, and the scale target needs a name
    {
      apiVersion: "keda.sh/v1alpha1",
      kind: "ScaledObject",
      metadata: { name: "x" },
      spec: { scaleTargetRef: {}, triggers: "redis-streams" },
    },
    {
      apiVersion: "autoscaling/v2",
      kind: "HorizontalPodAutoscaler",
      metadata: { name: "x" },
      spec: { maxReplicas: 2 },
    },
    { apiVersion: "apps/v1", kind: "StatefulSet", metadata: { name: "x" } },
  ];
  const errors = broken.map(schemaErrors);
  assert.match(errors[0]?.join() ?? "", /replicas must be integer/);
  assert.match(errors[0]?.join() ?? "", /selector/);
  assert.match(errors[1]?.join() ?? "", /triggers must be array/);
  assert.match(errors[2]?.join() ?? "", /scaleTargetRef/);
  assert.match(errors[3]?.join() ?? "", /no schema for apps\/v1 StatefulSet/);
});

test("the Tidemark checks catch a broken overlay", (t) => {
  if (skipReason) return t.skip(skipReason);
  const objects = structuredClone(rendered.get("cdc") ?? []);
  const deployment = (role: string) =>
    objects.find(
      (o) => o.kind === "Deployment" && o.metadata.labels?.["app.kubernetes.io/component"] === role,
    ) as unknown as IDeployment;
  const api = deployment("api").spec!.template.spec!;
  api.containers[0]!.readinessProbe = undefined;
  api.terminationGracePeriodSeconds = 20;
  deployment("cdc").spec!.strategy = { type: "RollingUpdate" };
  const sink = objects.find(
    (o) => o.kind === "ScaledObject" && o.metadata.name === "tidemark-sink",
  ) as ScaledObjectShape;
  sink.spec.triggers[0]!.metadata.topic = "events";
  const config = objects.find((o) => o.kind === "ConfigMap") as unknown as IConfigMap;
  config.data!.KAFKA_BROKERS = "";
  const problems = tidemarkProblems(objects, "cdc").join("\n");
  assert.match(problems, /tidemark-api: readinessProbe is not GET \/ready/);
  assert.match(problems, /tidemark-api: grace 20 s is not longer than preStop 5 s/);
  assert.match(problems, /cdc must be one replica with strategy Recreate/);
  assert.match(problems, /sink trigger reads topic events/);
  assert.match(problems, /Tidemark refuses its configuration: KAFKA_BROKERS/);
  assert.match(
    tidemarkProblems(objects, "async").join("\n"),
    /TIDEMARK_PIPELINE is cdc, the overlay is async/,
  );
});

test("secret.env is the only file to fill, and git ignores it", () => {
  const ignored = spawnSync("git", ["check-ignore", "-q", "deploy/k8s/base/secret.env"], { cwd: ROOT });
  assert.equal(ignored.status, 0, "deploy/k8s/base/secret.env must be git-ignored");
});

import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import dockerignore from "@balena/dockerignore";
import { type Copy, DockerfileParser, type Healthcheck, type Instruction } from "dockerfile-ast";

// The image cannot be built on this repository's machines (no Docker engine), so its properties
// are read from the Dockerfile and .dockerignore: multi-stage, non-root, a pinned Node that
// package.json supports, the dashboard built in, a health check without curl, one image for every
// role, and a small build context.

// The package is CommonJS (module.exports is the factory) while its types declare a default
// export: under NodeNext the import is the factory at run time but is typed as the module.
const ignore = dockerignore as unknown as typeof dockerignore.default;

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const dockerfile = DockerfileParser.parse(readFileSync(join(ROOT, "Dockerfile"), "utf8"));
const packageJson = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as {
  engines: { node: string };
  scripts: Record<string, string>;
};

/** The instructions of each stage, in order; a stage starts at its FROM. */
function stages(): { name: string | null; image: string; instructions: Instruction[] }[] {
  const result: { name: string | null; image: string; instructions: Instruction[] }[] = [];
  for (const instruction of dockerfile.getInstructions()) {
    if (instruction.getKeyword() === "FROM") {
      const [image, as, name] = instruction.getExpandedArguments().map((a) => a.getValue());
      result.push({
        name: as?.toUpperCase() === "AS" ? (name ?? null) : null,
        image: image ?? "",
        instructions: [],
      });
    } else {
      result.at(-1)?.instructions.push(instruction);
    }
  }
  return result;
}

const final = () => {
  const last = stages().at(-1);
  assert.ok(last, "the Dockerfile has a stage");
  return last;
};
const keyword = (instructions: Instruction[], name: string) =>
  instructions.filter((i) => i.getKeyword() === name);

/** Whether a Node version is one package.json's engines accept ("^20.19.0 || >=22.12.0"). */
function supported(version: string): boolean {
  const [major = 0, minor = 0] = version.split(".").map(Number);
  return major === 20 ? minor >= 19 : major === 22 ? minor >= 12 : major >= 23;
}

test("the engines range the Node check reads is the one package.json declares", () => {
  // supported() mirrors scripts/check-node.mjs; this keeps both honest if engines change.
  assert.equal(packageJson.engines.node, "^20.19.0 || >=22.12.0");
});

test("every stage is the same Node image, pinned to a release package.json supports", () => {
  const all = stages();
  assert.ok(all.length >= 2, "multi-stage");
  for (const { image } of all) {
    const match = /^node:(\d+\.\d+\.\d+)-[a-z0-9-]+$/.exec(image);
    assert.ok(match, `${image}: an official node image pinned to MAJOR.MINOR.PATCH and a variant`);
    assert.ok(supported(match[1] ?? ""), `${image}: outside package.json's engines`);
    assert.match(image, /-slim$/, "the slim variant: no compiler or package caches in production");
  }
  assert.equal(new Set(all.map((s) => s.image)).size, 1, "one Node version for building and running");
});

test("the build stage builds the server and the dashboard; the runtime stage copies only results", () => {
  assert.match(packageJson.scripts.build ?? "", /build:server/);
  assert.match(packageJson.scripts.build ?? "", /build:web/, "npm run build builds the dashboard too");
  assert.match(packageJson.scripts.build ?? "", /build:client/, "and the JavaScript client");
  const build = stages().find((s) => s.name === "build");
  assert.ok(build, "a stage named build");
  assert.ok(
    keyword(build.instructions, "RUN").some((r) => /\bnpm run build\b/.test(r.getArgumentsContent() ?? "")),
    "the build stage runs npm run build",
  );
  const copies = keyword(final().instructions, "COPY") as Copy[];
  const fromStages = copies.filter((c) => c.getFromFlag());
  assert.ok(
    fromStages.some(
      (c) => c.getFromFlag()?.getValue() === "build" && /\/app\/dist\b/.test(c.getArgumentsContent() ?? ""),
    ),
    "dist (server and dashboard) comes from the build stage",
  );
  assert.ok(
    fromStages.some(
      (c) =>
        c.getFromFlag()?.getValue() === "build" &&
        /\/app\/clients\/js\/dist\b/.test(c.getArgumentsContent() ?? ""),
    ),
    "the client's script-tag build (served at run time) comes from the build stage",
  );
  const depsStage = fromStages
    .find((c) => /node_modules/.test(c.getArgumentsContent() ?? ""))
    ?.getFromFlag()
    ?.getValue();
  const deps = stages().find((s) => s.name === depsStage);
  assert.ok(deps, "node_modules comes from a stage of its own");
  assert.ok(
    keyword(deps.instructions, "RUN").some((r) => /npm ci\b.*--omit=dev/.test(r.getArgumentsContent() ?? "")),
    "that stage installs production dependencies only",
  );
  assert.ok(
    !copies.some((c) => !c.getFromFlag() && /\b(src|web|node_modules)\b/.test(c.getArgumentsContent() ?? "")),
    "no sources or host packages are copied into the runtime stage",
  );
  assert.deepEqual(
    keyword(final().instructions, "RUN").map((r) => /npm|apt-get/.test(r.getArgumentsContent() ?? "")),
    [false],
  );
});

test("the runtime stage runs as an unprivileged user", () => {
  const users = keyword(final().instructions, "USER");
  assert.equal(users.length, 1);
  const user = users[0]?.getArgumentsContent() ?? "";
  assert.ok(!["root", "0", "0:0"].includes(user), `USER ${user}`);
  // uid 1000 is `node` in the official image: what deploy/k8s runs as (runAsUser: 1000).
  assert.equal(user, "node");
  const instructions = final().instructions;
  const userAt = instructions.findIndex((i) => i.getKeyword() === "USER");
  assert.ok(
    instructions.slice(userAt).every((i) => !["RUN", "COPY", "ADD"].includes(i.getKeyword())),
    "nothing is written into the image after USER: the code stays root-owned, out of the app's reach",
  );
});

test("a health check asks /health on PORT with Node itself (the slim image has no curl or wget)", () => {
  const checks = keyword(final().instructions, "HEALTHCHECK") as Healthcheck[];
  assert.equal(checks.length, 1);
  const check = checks[0];
  assert.ok(check);
  assert.equal(check.getSubcommand()?.getValue(), "CMD");
  const text = check.getArgumentsContent() ?? "";
  assert.match(text, /^CMD \["node", "-e", /);
  assert.match(text, /fetch\(.*process\.env\.PORT.*\/health/);
  assert.doesNotMatch(text, /\b(curl|wget)\b/);
  assert.deepEqual(
    check
      .getFlags()
      .map((f) => f.getName())
      .sort(),
    ["interval", "retries", "start-period", "timeout"],
  );
});

test("one image for every role: the entrypoint is the CLI, `serve` by default, `serve --role ...` by argument", () => {
  const entrypoints = keyword(final().instructions, "ENTRYPOINT");
  const cmds = keyword(final().instructions, "CMD");
  assert.equal(entrypoints.length, 1);
  assert.equal(cmds.length, 1);
  assert.equal(entrypoints[0]?.getArgumentsContent(), '["node", "dist/cli.js"]');
  assert.equal(cmds[0]?.getArgumentsContent(), '["serve"]');
  const env = keyword(final().instructions, "ENV")
    .map((e) => e.getArgumentsContent() ?? "")
    .join(" ");
  for (const setting of ["HOST=0.0.0.0", "PORT=8000", "TIDEMARK_DATA_DIR=/data", "NODE_ENV=production"]) {
    assert.ok(env.includes(setting), setting);
  }
  assert.deepEqual(
    keyword(final().instructions, "EXPOSE").map((e) => e.getArgumentsContent()),
    ["8000"],
  );
  assert.deepEqual(
    keyword(final().instructions, "VOLUME").map((e) => e.getArgumentsContent()),
    ["/data"],
  );
});

/** Every file of the checkout that .dockerignore lets into the build context, with its size. */
function context(): { files: string[]; bytes: number } {
  const matcher = ignore().add(readFileSync(join(ROOT, ".dockerignore"), "utf8"));
  const files: string[] = [];
  let bytes = 0;
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      const name = relative(ROOT, path);
      if (entry.isDirectory()) {
        // Docker does not walk into a folder it leaves out (none of its files is let back in here).
        if (!matcher.ignores(`${name}/`)) walk(path);
      } else if (!matcher.ignores(name)) {
        files.push(name);
        bytes += statSync(path).size;
      }
    }
  };
  walk(ROOT);
  return { files: files.sort(), bytes };
}

test(".dockerignore lets in what the Dockerfile copies from the context, and nothing else", () => {
  const { files, bytes } = context();
  const sources = (keyword(dockerfile.getInstructions(), "COPY") as Copy[])
    .filter((c) => !c.getFromFlag())
    .flatMap((c) =>
      c
        .getArguments()
        .slice(0, -1)
        .map((a) => a.getValue()),
    );
  const allowed = new Set(sources);
  assert.deepEqual([...allowed].sort(), [
    "clients",
    "package-lock.json",
    "package.json",
    "src",
    "tsconfig.build.json",
    "tsconfig.json",
    "web",
  ]);
  for (const source of allowed) {
    assert.ok(
      files.some((f) => f === source || f.startsWith(`${source}/`)),
      `${source} (copied by the Dockerfile) is in the context`,
    );
  }
  for (const file of files) {
    assert.ok(
      [...allowed].some((s) => file === s || file.startsWith(`${s}/`)),
      `${file} is in the context but no COPY needs it`,
    );
  }
  for (const heavy of [
    "node_modules/x",
    "dist/cli.js",
    "data/x",
    ".services/x",
    ".run/x",
    ".git/HEAD",
    ".env",
    "tests/x",
  ]) {
    assert.ok(
      ignore()
        .add(readFileSync(join(ROOT, ".dockerignore"), "utf8"))
        .ignores(heavy),
      heavy,
    );
  }
  // Measured on this checkout: the whole context; the folders left out (node_modules alone is
  // close to 1 GB here) never leave the machine.
  console.log(`docker build context: ${files.length} files, ${(bytes / 1024 / 1024).toFixed(2)} MiB`);
  assert.ok(bytes < 10 * 1024 * 1024, `the context is ${bytes} bytes`);
});

import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { ensureBuilt, freePort, startChildServer } from "../helpers/child-server.js";

const execFileAsync = promisify(execFile);

/** The CLI with its own data dir and a free PORT; JSON answers parsed, failures kept. */
async function cliEnvironment() {
  const cli = ensureBuilt();
  const dataDir = mkdtempSync(join(tmpdir(), "tidemark-cli-"));
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    TIDEMARK_DATA_DIR: dataDir,
    PORT: String(await freePort()),
    HOST: "127.0.0.1",
    TIDEMARK_LOG_LEVEL: "warn",
  };
  delete env.SECRET_TOKEN;
  delete env.TIDEMARK_PIPELINE;
  delete env.TIDEMARK_ROLE;
  // Asynchronous, so a server in this process can answer the CLI while it runs.
  const attempt = async (...args: string[]) => {
    try {
      const { stdout } = await execFileAsync(process.execPath, [cli, ...args], { env, encoding: "utf8" });
      return { status: 0, stdout, stderr: "" };
    } catch (error) {
      const failure = error as { code: number; stdout: string; stderr: string };
      return { status: failure.code, stdout: failure.stdout, stderr: failure.stderr };
    }
  };
  // biome-ignore lint/suspicious/noExplicitAny: CLI answers are checked field by field
  const run = async (...args: string[]): Promise<any> => {
    const result = await attempt(...args);
    assert.equal(result.status, 0, `tidemark ${args.join(" ")}: ${result.stderr}`);
    return JSON.parse(result.stdout);
  };
  return {
    cli,
    dataDir,
    env,
    run,
    attempt,
    cleanup: () => rmSync(dataDir, { recursive: true, force: true }),
  };
}

async function sendEvent(url: string, key: string): Promise<number> {
  const sent = await fetch(`${url}/api/v1/event`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify({ event: "x", distinct_id: "u" }),
  });
  await sent.arrayBuffer();
  return sent.status;
}

test("tidemark --version prints package.json's version", async () => {
  const { attempt, cleanup } = await cliEnvironment();
  try {
    const version = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")).version;
    const result = await attempt("--version");
    assert.equal(result.status, 0);
    assert.equal(result.stdout.trim(), version);
  } finally {
    cleanup();
  }
});

test("tidemark project create and list, offline and through a running server", {
  timeout: 120_000,
}, async () => {
  const { dataDir, env, run, cleanup } = await cliEnvironment();
  try {
    const created = await run("project", "create", "--name", "shop", "--plan", "PRO");
    assert.equal(created.plan, "PRO");
    assert.match(created.api_key, /^wk_dev_/);
    assert.deepEqual(
      (await run("project", "list")).projects.map((p: { name: string }) => p.name),
      ["shop"],
    );

    const server = await startChildServer({
      TIDEMARK_DATA_DIR: dataDir,
      PORT: String(env.PORT),
      SECRET_TOKEN: "",
    });
    try {
      const tokenFile = join(dataDir, "secret_token");
      assert.equal(statSync(tokenFile).mode & 0o777, 0o600, "the generated admin token is private");
      assert.match(server.output(), /SECRET_TOKEN=st_/, "the generated token is printed at start");
      const second = await run("project", "create", "--name", "blog");
      assert.equal(second.plan, "FREE");
      const names = (await run("project", "list")).projects.map((p: { name: string }) => p.name);
      assert.deepEqual(names.sort(), ["blog", "shop"]);
      assert.equal(
        await sendEvent(server.url, created.api_key),
        202,
        "a key made offline works once the server runs",
      );
    } finally {
      server.process.kill("SIGTERM");
      assert.equal(await server.exited, 0);
    }
  } finally {
    cleanup();
  }
});

test("set-plan, rotate-keys, stats and delete work on the store directly and through a running server", {
  // About twenty CLI processes and a server start: minutes on a loaded 2-core machine, seconds alone.
  timeout: 300_000,
}, async () => {
  const { dataDir, env, run, attempt, cleanup } = await cliEnvironment();
  try {
    // On the store directly: no server answers on PORT.
    const offline = await run("project", "create", "--name", "offline");
    assert.equal((await run("project", "set-plan", offline.id, "ENTERPRISE")).rate_limit_rpm, 10000);
    const rotatedOffline = await run("project", "rotate-keys", offline.id.toUpperCase());
    assert.equal(rotatedOffline.id, offline.id);
    assert.match(rotatedOffline.api_key, /^wk_dev_/);
    assert.notEqual(rotatedOffline.api_key, offline.api_key);
    assert.deepEqual(await run("project", "stats", offline.id), {
      received: 0,
      accepted: 0,
      duplicate: 0,
      rate_limited: 0,
      rejected: {},
      stored: 0,
    });
    const doomed = await run("project", "create", "--name", "doomed");
    assert.deepEqual(await run("project", "delete", doomed.id), { deleted: doomed.id });
    const gone = await attempt("project", "stats", doomed.id);
    assert.equal(gone.status, 1);
    assert.match(gone.stderr, /No project/);
    assert.equal((await attempt("project", "set-plan", offline.id, "GOLD")).status, 1, "plans are checked");

    const server = await startChildServer({
      TIDEMARK_DATA_DIR: dataDir,
      PORT: String(env.PORT),
      SECRET_TOKEN: "",
    });
    try {
      assert.equal(
        await sendEvent(server.url, offline.api_key),
        401,
        "the key rotated offline stopped working",
      );
      assert.equal(await sendEvent(server.url, rotatedOffline.api_key), 202);

      // Through the server: each command acts on the live process (its key cache included).
      const online = await run("project", "create", "--name", "online");
      assert.equal(await sendEvent(server.url, online.api_key), 202);
      const stats = await run("project", "stats", online.id);
      assert.equal(stats.received, 1);
      assert.equal(stats.accepted, 1);
      assert.equal(stats.stored, 1);
      assert.equal((await run("project", "set-plan", online.id, "PRO")).plan, "PRO");
      const rotated = await run("project", "rotate-keys", online.id);
      assert.equal(await sendEvent(server.url, online.api_key), 401, "the old key stops at once");
      assert.equal(await sendEvent(server.url, rotated.api_key), 202);
      assert.deepEqual(await run("project", "delete", online.id), { deleted: online.id });
      assert.equal(
        await sendEvent(server.url, rotated.api_key),
        401,
        "a deleted project's key stops at once",
      );
      const missing = await attempt("project", "stats", online.id);
      assert.equal(missing.status, 1);
      assert.match(missing.stderr, /No project .*HTTP 404/);
      const names = (await run("project", "list")).projects.map((p: { name: string }) => p.name);
      assert.deepEqual(names, ["offline"]);
    } finally {
      server.process.kill("SIGTERM");
      assert.equal(await server.exited, 0);
    }
  } finally {
    cleanup();
  }
});

test("the CLI sends the admin token only to Tidemark: anything else on PORT is refused", {
  timeout: 120_000,
}, async () => {
  const { env, attempt, cleanup } = await cliEnvironment();
  const seen: { url?: string; authorization?: string }[] = [];
  // Something else on PORT that answers /health with 200, as many services do.
  const impostor = createServer((request, response) => {
    seen.push({ url: request.url, authorization: request.headers.authorization });
    response.writeHead(200, { "content-type": "application/json" });
    response.end(JSON.stringify({ status: "ok" }));
  });
  await new Promise<void>((resolve) => impostor.listen(Number(env.PORT), "127.0.0.1", resolve));
  try {
    env.SECRET_TOKEN = "st_do_not_leak_this_token";
    for (const args of [
      ["project", "list"],
      ["project", "create", "--name", "x"],
      ["project", "delete", randomUUID()],
    ]) {
      const result = await attempt(...args);
      assert.equal(result.status, 1, args.join(" "));
      assert.match(result.stderr, /something other than Tidemark answers on http:\/\/127\.0\.0\.1:\d+/);
      assert.match(result.stderr, /the admin token was not sent/);
    }
    assert.ok(seen.length >= 3, "the CLI asked /health");
    assert.ok(
      seen.every((request) => request.url === "/health" && request.authorization === undefined),
      JSON.stringify(seen),
    );
  } finally {
    await new Promise((resolve) => impostor.close(resolve));
    cleanup();
  }
});

test("a bad configuration stops start-up naming the variable", () => {
  const cli = ensureBuilt();
  try {
    execFileSync(process.execPath, [cli, "serve"], {
      env: { ...process.env, PORT: "eighty" },
      encoding: "utf8",
      stdio: "pipe",
    });
    assert.fail("serve should have refused PORT=eighty");
  } catch (error) {
    const failure = error as { status: number; stderr: string };
    assert.equal(failure.status, 2);
    assert.match(failure.stderr, /PORT: must be an integer/);
  }
});

test("a role the pipeline does not have stops start-up before anything is written", () => {
  const cli = ensureBuilt();
  const dataDir = mkdtempSync(join(tmpdir(), "tidemark-cli-role-"));
  try {
    execFileSync(process.execPath, [cli, "serve", "--role", "worker"], {
      env: { ...process.env, TIDEMARK_DATA_DIR: dataDir, SECRET_TOKEN: "", TIDEMARK_PIPELINE: "embedded" },
      encoding: "utf8",
      stdio: "pipe",
    });
    assert.fail("the embedded pipeline has no worker role");
  } catch (error) {
    const failure = error as { status: number; stderr: string };
    assert.equal(failure.status, 2);
    assert.match(failure.stderr, /TIDEMARK_ROLE: the embedded pipeline has the roles all, api; got "worker"/);
    assert.equal(existsSync(join(dataDir, "secret_token")), false);
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});

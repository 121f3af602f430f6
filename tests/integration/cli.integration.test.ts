import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { ensureBuilt, freePort, startChildServer } from "../helpers/child-server.js";

test("tidemark project create and list, offline and through a running server", {
  timeout: 60_000,
}, async () => {
  const cli = ensureBuilt();
  const dataDir = mkdtempSync(join(tmpdir(), "tidemark-cli-"));
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    TIDEMARK_DATA_DIR: dataDir,
    PORT: String(await freePort()),
    TIDEMARK_LOG_LEVEL: "warn",
  };
  delete env.SECRET_TOKEN;
  const run = (...args: string[]) =>
    JSON.parse(execFileSync(process.execPath, [cli, ...args], { env, encoding: "utf8" }));
  try {
    const created = run("project", "create", "--name", "shop", "--plan", "PRO");
    assert.equal(created.plan, "PRO");
    assert.match(created.api_key, /^wk_dev_/);
    assert.deepEqual(
      run("project", "list").projects.map((p: { name: string }) => p.name),
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
      const second = run("project", "create", "--name", "blog");
      assert.equal(second.plan, "FREE");
      const names = run("project", "list").projects.map((p: { name: string }) => p.name);
      assert.deepEqual(names.sort(), ["blog", "shop"]);
      const sent = await fetch(`${server.url}/api/v1/event`, {
        method: "POST",
        headers: { authorization: `Bearer ${created.api_key}`, "content-type": "application/json" },
        body: JSON.stringify({ event: "x", distinct_id: "u" }),
      });
      assert.equal(sent.status, 202, "a key made offline works once the server runs");
    } finally {
      server.process.kill("SIGTERM");
      assert.equal(await server.exited, 0);
    }
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
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

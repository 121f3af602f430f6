import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect, createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { gunzipSync } from "node:zlib";
import type { TidemarkError } from "../../clients/js/src/client.js";
import { Tidemark } from "../../clients/js/src/node.js";
import { storedUuids } from "../helpers/child-server.js";
import { CLIENT_SCRIPT, ensureClientBuilt } from "../helpers/client-build.js";
import { startTestTidemark, type TestTidemark } from "../helpers/tidemark.js";

/**
 * Tidemark's Node client (clients/js) against a real, listening Tidemark: what it tracks,
 * identifies and flushes is read back through the query API; a dropped connection is retried and
 * stored once; a process that ends, or shuts the client down and exits, loses nothing.
 */
const CLIENT_DIR = fileURLToPath(new URL("../../clients/js/", import.meta.url));
let tidemark: TestTidemark;

before(async () => {
  ensureClientBuilt();
  tidemark = await startTestTidemark();
});
after(() => tidemark?.close());

interface StoredEvent {
  uuid: string;
  event: string;
  distinct_id: string;
  timestamp: string;
  received_at: string;
  properties: Record<string, unknown>;
}

async function stored(readKey: string): Promise<StoredEvent[]> {
  const answer = await tidemark.request("POST", "/api/v1/query", {
    key: readKey,
    body: { kind: "events", limit: 1000 },
  });
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  return (answer.body.events as StoredEvent[]).reverse();
}

async function ledger(projectId: string) {
  return (await tidemark.request("GET", `/api/v1/project/${projectId}/stats`, { key: tidemark.token })).body;
}

/** A fetch that records what each request carried and what came back. */
function recordingFetch() {
  const requests: { encoding: string | undefined; status: number; events: number }[] = [];
  const sentAt: string[] = [];
  const record: typeof fetch = async (input, init) => {
    const headers = init?.headers as Record<string, string>;
    const raw = init?.body as string | Uint8Array;
    const text = headers["content-encoding"] === "gzip" ? gunzipSync(raw).toString() : String(raw);
    sentAt.push((JSON.parse(text) as { sent_at: string }).sent_at);
    const response = await fetch(input, init);
    const body = (await response.clone().json()) as { count?: number };
    requests.push({
      encoding: headers["content-encoding"],
      status: response.status,
      events: body.count ?? 0,
    });
    return response;
  };
  return { requests, sentAt, fetch: record };
}

test("track, identify and alias, flushed and read back through the query API", async () => {
  const project = await tidemark.createProject("PRO", "client shop");
  const errors: TidemarkError[] = [];
  const { requests, sentAt, fetch } = recordingFetch();
  const client = new Tidemark({
    apiKey: project.api_key,
    host: tidemark.url,
    flushAt: 1000,
    flushInterval: 60_000,
    onError: (e) => errors.push(e),
    fetch,
  });
  const anonymous = client.distinctId;
  const view = client.track("Page View", { path: "/pricing" });
  client.identify("user_42", { plan: "pro", name: "Ada" });
  const purchase = client.track("Purchase", { amount: 49, currency: "EUR" });
  client.alias("ada@example.com");
  const other = client.track(
    "Invite",
    { to: "bo" },
    { distinctId: "user_7", timestamp: "2026-11-02T09:00:00Z" },
  );
  assert.equal(requests.length, 0, "nothing is sent before a flush");
  await client.flush();
  assert.deepEqual(errors, []);
  assert.deepEqual(requests, [{ encoding: "gzip", status: 202, events: 5 }], "one gzip batch");

  const events = await stored(project.read_key);
  // Sorted by name: events tracked within one millisecond share their timestamp, the query's order.
  const shape = events
    .map((e) => [e.event, e.distinct_id, e.properties] as const)
    .filter(([name]) => name !== "Invite")
    .sort(([a], [b]) => a.localeCompare(b));
  assert.deepEqual(shape, [
    ["$create_alias", "user_42", { alias: "ada@example.com" }],
    ["$identify", "user_42", { $anon_distinct_id: anonymous, $set: { plan: "pro", name: "Ada" } }],
    ["Page View", anonymous, { path: "/pricing" }],
    ["Purchase", "user_42", { amount: 49, currency: "EUR" }],
  ]);
  const byUuid = new Map(events.map((e) => [e.uuid, e]));
  assert.equal(byUuid.get(view!)?.event, "Page View", "the uuid track returned is the one stored");
  assert.equal(byUuid.get(purchase!)?.distinct_id, "user_42");
  // A given timestamp is kept, moved by Tidemark's clock correction: received_at - sent_at.
  const invite = byUuid.get(other!)!;
  assert.equal(invite.distinct_id, "user_7");
  const correction = Date.parse(invite.received_at) - Date.parse(sentAt[0]!);
  assert.equal(Date.parse(invite.timestamp), Date.parse("2026-11-02T09:00:00Z") + correction);
  await client.shutdown();
});

test("batches: a flush starts at flushAt events; the rest follow in the next request", async () => {
  const project = await tidemark.createProject("PRO", "client batches");
  const { requests, fetch } = recordingFetch();
  const client = new Tidemark({ apiKey: project.api_key, host: tidemark.url, flushAt: 20, fetch });
  const uuids = Array.from({ length: 45 }, (_, i) => client.track("Tick", { i }));
  await client.flush();
  // The 20th event starts a request; the 25 tracked while it is in flight go together after it.
  assert.deepEqual(
    requests.map((r) => [r.status, r.events]),
    [
      [202, 20],
      [202, 25],
    ],
  );
  assert.deepEqual(new Set(await storedUuids(tidemark.url, project.read_key)), new Set(uuids));
  await client.shutdown();
});

test("a refused event is reported with Tidemark's reason; its batch neighbours are stored", async () => {
  const project = await tidemark.createProject("PRO", "client refusals");
  const errors: TidemarkError[] = [];
  const client = new Tidemark({
    apiKey: project.api_key,
    host: tidemark.url,
    onError: (e) => errors.push(e),
  });
  const good = client.track("Good");
  client.track("x".repeat(201));
  const also = client.track("Also good", { n: 1 });
  await client.flush();
  assert.equal(errors.length, 1);
  assert.equal(errors[0]!.status, 400);
  assert.equal(errors[0]!.code, "validation_failed");
  assert.equal(errors[0]!.events[0]!.event, "x".repeat(201));
  assert.deepEqual(new Set(await storedUuids(tidemark.url, project.read_key)), new Set([good, also]));

  const wrongKey = new Tidemark({
    apiKey: "wk_dev_unknown",
    host: tidemark.url,
    onError: (e) => errors.push(e),
  });
  wrongKey.track("Lost");
  await wrongKey.flush();
  assert.deepEqual([errors[1]!.status, errors[1]!.code], [401, "unauthorized"], "a 401 is not retried");
  await client.shutdown();
  await wrongKey.shutdown();
});

/**
 * A TCP proxy in front of Tidemark that breaks its first connection: `mid-request` forwards the
 * first 20 bytes the client wrote (part of the request line) and closes both sides; `answer-lost` lets the request through,
 * waits for Tidemark's answer (so the events are stored) and closes the client's side instead of
 * passing it on. Later connections pass untouched.
 */
async function breakingProxy(mode: "mid-request" | "answer-lost"): Promise<{ url: string; close(): void }> {
  const upstream = new URL(tidemark.url);
  let connections = 0;
  const sockets = new Set<Socket>();
  const server = createServer((client: Socket) => {
    const first = ++connections === 1;
    const up = connect(Number(upstream.port), upstream.hostname);
    sockets.add(client).add(up);
    const close = () => {
      client.destroy();
      up.destroy();
    };
    client.on("error", close).on("close", close);
    up.on("error", close).on("close", close);
    if (first && mode === "mid-request") {
      client.once("data", (chunk: Buffer) => up.write(chunk.subarray(0, 20), close));
      return;
    }
    client.pipe(up);
    if (first && mode === "answer-lost") up.once("data", close);
    else up.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  if (typeof address !== "object" || !address) throw new Error("no proxy address");
  return {
    url: `http://127.0.0.1:${address.port}`,
    // Kept-alive connections would hold server.close() for Tidemark's keep-alive timeout.
    close: () => {
      server.close();
      for (const socket of sockets) socket.destroy();
    },
  };
}

for (const mode of ["mid-request", "answer-lost"] as const) {
  test(`the first connection dropped (${mode}): retried with the same uuids, stored once`, async () => {
    const project = await tidemark.createProject("PRO", `client retry ${mode}`);
    const proxy = await breakingProxy(mode);
    const { requests, fetch: recording } = recordingFetch();
    let attempts = 0;
    const errors: TidemarkError[] = [];
    const client = new Tidemark({
      apiKey: project.api_key,
      host: proxy.url,
      retryBaseMs: 50,
      onError: (e) => errors.push(e),
      fetch: (input, init) => {
        attempts++;
        return recording(input, init);
      },
    });
    const uuids = [client.track("Signup"), client.track("Purchase", { amount: 49 })];
    await client.flush();
    assert.deepEqual(errors, []);
    assert.equal(attempts, 2, "the failed attempt and one retry");
    assert.equal(requests.length, 1, "one answer came back");
    assert.deepEqual((await storedUuids(tidemark.url, project.read_key)).sort(), [...uuids].sort());
    const counts = await ledger(project.id);
    assert.equal(counts.accepted, 2);
    // When Tidemark stored the first attempt, the retry is recognised as the same events.
    assert.equal(counts.duplicate, mode === "answer-lost" ? 2 : 0);
    await client.shutdown();
    proxy.close();
  });
}

/**
 * Runs an ES module in a new Node process, from `dir`, with `env`; resolves with its exit status
 * and output. Asynchronous: the Tidemark it talks to runs in this process.
 */
async function runNode(dir: string, source: string, env: Record<string, string>) {
  const file = join(dir, "main.mjs");
  writeFileSync(file, source);
  const child = spawn(process.execPath, [file], { cwd: dir, env: { ...process.env, ...env } });
  let output = "";
  child.stdout.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  child.stderr.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  const status = await new Promise<number | null>((resolve) => child.on("exit", resolve));
  return { status, output };
}

test("installed from the repository: a process that ends, or exits after shutdown, loses nothing", async (t) => {
  const project = await tidemark.createProject("PRO", "client exits");
  // As the README says: `npm install <path to clients/js>` in a project, then import it by name.
  const app = mkdtempSync(join(tmpdir(), "tidemark-client-app-"));
  t.after(() => rmSync(app, { recursive: true, force: true }));
  mkdirSync(app, { recursive: true });
  writeFileSync(join(app, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }));
  const install = spawnSync("npm", ["install", "--offline", "--no-audit", "--no-fund", CLIENT_DIR], {
    cwd: app,
    encoding: "utf8",
  });
  assert.equal(install.status, 0, install.stderr);
  const env = { TIDEMARK_HOST: tidemark.url, TIDEMARK_KEY: project.api_key };

  // No shutdown, no flush: the flush timer does not hold the process, beforeExit sends the events.
  const ended = await runNode(
    app,
    `import { Tidemark } from "@tidemark/client";
     const client = new Tidemark({ apiKey: process.env.TIDEMARK_KEY, host: process.env.TIDEMARK_HOST });
     for (let i = 0; i < 3; i++) console.log(client.track("Ended", { i }));`,
    env,
  );
  assert.equal(ended.status, 0, ended.output);
  // shutdown, then process.exit, which skips beforeExit.
  const exited = await runNode(
    app,
    `import { Tidemark } from "@tidemark/client";
     const client = new Tidemark({ apiKey: process.env.TIDEMARK_KEY, host: process.env.TIDEMARK_HOST, flushInterval: 3600000 });
     for (let i = 0; i < 3; i++) console.log(client.track("Exited", { i }));
     await client.shutdown();
     process.exit(0);`,
    env,
  );
  assert.equal(exited.status, 0, exited.output);
  const printed = `${ended.output}${exited.output}`.trim().split("\n");
  assert.equal(printed.length, 6);
  assert.deepEqual((await storedUuids(tidemark.url, project.read_key)).sort(), printed.sort());
});

test("Tidemark serves the script-tag build at /sdk/tidemark.js", async () => {
  const response = await fetch(`${tidemark.url}/sdk/tidemark.js`);
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /^text\/javascript/);
  assert.deepEqual(Buffer.from(await response.arrayBuffer()), readFileSync(CLIENT_SCRIPT));
});

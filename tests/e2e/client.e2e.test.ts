/// <reference lib="dom" />
// Functions passed to page.evaluate run in the browser: the DOM types describe them.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { gunzipSync } from "node:zlib";
import type { Browser } from "playwright-core";
import type { Tidemark } from "../../clients/js/src/browser.js";
import { scriptSnippet } from "../../web/src/snippets.js";
import { requireChromium } from "../helpers/browser.js";
import { type ChildServer, startChildServer } from "../helpers/child-server.js";
import { ensureClientBuilt } from "../helpers/client-build.js";
import { ensureFreshBuild } from "../helpers/services.js";

declare global {
  interface Window {
    tidemark?: Tidemark;
  }
}

/**
 * The script-tag build of Tidemark's client in Chromium, loaded by the dashboard's snippet
 * (web/src/snippets.ts) on a site of another origin (so every request is a CORS one, preflight included): its
 * events land, gzip-compressed, with the anonymous id kept in localStorage and linked by
 * identify; an event tracked just before the page is left goes out at pagehide and lands too.
 */
const ADMIN = `e2e-admin-${randomUUID()}`;
let server: ChildServer;
let dataDir: string;
let site: Server;
let siteUrl: string;
let recorder: Server;
let recorderUrl: string;
/** The batches the page sent, as the recorder saw them, in order. */
const batches: { encoding: string | undefined; events: string[] }[] = [];
let project: { id: string; api_key: string; read_key: string };
let browser: Browser | undefined;

interface StoredEvent {
  event: string;
  distinct_id: string;
  properties: Record<string, unknown>;
}

async function storedEvents(): Promise<StoredEvent[]> {
  const response = await fetch(`${server.url}/api/v1/query`, {
    method: "POST",
    headers: { authorization: `Bearer ${project.read_key}`, "content-type": "application/json" },
    body: JSON.stringify({ kind: "events", limit: 1000 }),
  });
  assert.equal(response.status, 200);
  return ((await response.json()) as { events: StoredEvent[] }).events;
}

/** Polls the query API until `done` holds of the stored events, for at most 15 s. */
async function waitForEvents(done: (events: StoredEvent[]) => boolean): Promise<StoredEvent[]> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const events = await storedEvents();
    if (done(events) || Date.now() > deadline) return events;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

before(async () => {
  ensureFreshBuild();
  ensureClientBuilt();
  dataDir = mkdtempSync(join(tmpdir(), "tidemark-client-e2e-"));
  server = await startChildServer({ SECRET_TOKEN: ADMIN, TIDEMARK_DATA_DIR: dataDir });
  const created = await fetch(`${server.url}/api/v1/project`, {
    method: "POST",
    headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" },
    body: JSON.stringify({ name: "client e2e", plan: "PRO" }),
  });
  project = (await created.json()) as typeof project;
  // In front of Tidemark, a recorder of what the browser sent (requests made at pagehide are not
  // reported to the test through the browser: the page is gone). The page loads the client from
  // it too, so the client sends to it, as it sends to the server it was loaded from.
  recorder = createServer(async (request, response) => {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks);
    const encoding = request.headers["content-encoding"];
    if (request.method === "POST") {
      const text = encoding === "gzip" ? gunzipSync(body).toString() : body.toString();
      const events = (JSON.parse(text) as { events: { event: string }[] }).events.map((e) => e.event);
      batches.push({ encoding, events });
    }
    const headers = Object.entries(request.headers).filter(
      (entry): entry is [string, string] => typeof entry[1] === "string" && entry[0] !== "host",
    );
    const answer = await fetch(`${server.url}${request.url}`, {
      method: request.method ?? "GET",
      headers,
      body: request.method === "POST" ? body : null,
    });
    answer.headers.forEach((value, name) => {
      if (name !== "content-length" && name !== "transfer-encoding") response.setHeader(name, value);
    });
    response.writeHead(answer.status).end(Buffer.from(await answer.arrayBuffer()));
  });
  recorderUrl = await listen(recorder);
  // The customer's site, on an origin of its own, with the dashboard's one-line snippet.
  site = createServer((request, response) => {
    response.setHeader("content-type", "text/html; charset=utf-8");
    response.end(
      `<!doctype html><html lang="en"><head><title>Shop</title>${scriptSnippet(recorderUrl, project.api_key)}` +
        `</head><body><h1>${request.url}</h1><a href="/checkout">Checkout</a></body></html>`,
    );
  });
  siteUrl = await listen(site);
});

async function listen(http: Server): Promise<string> {
  await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
  const address = http.address();
  if (typeof address !== "object" || !address) throw new Error("no address");
  return `http://127.0.0.1:${address.port}`;
}

after(async () => {
  await browser?.close();
  site?.close();
  recorder?.close();
  server?.process.kill("SIGTERM");
  await server?.exited;
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

test("the browser build sends from a page, and at pagehide", async (t) => {
  browser = await requireChromium(t);
  if (!browser) return;
  const page = await (await browser.newContext()).newPage();
  const pageErrors: string[] = [];
  page.on("pageerror", (error) => pageErrors.push(error.message));
  await page.goto(`${siteUrl}/pricing`);
  const anonymous = await page.evaluate(() => window.tidemark!.distinctId);
  const kept = await page.evaluate(() => localStorage.getItem("tidemark_id"));
  assert.deepEqual(JSON.parse(kept ?? "null"), { id: anonymous, anonymous: true });

  await t.test("tracked, identified and flushed: gzip-compressed, stored as sent", async () => {
    await page.evaluate(async () => {
      window.tidemark!.track("Clicked", { button: "buy" });
      window.tidemark!.identify("user_42", { plan: "pro" });
      await window.tidemark!.flush();
    });
    assert.deepEqual(
      batches.map((b) => b.encoding),
      ["gzip"],
      "one batch (Page View, Clicked, $identify), compressed",
    );
    assert.deepEqual(batches[0]!.events, ["Page View", "Clicked", "$identify"]);
    const events = await storedEvents();
    const named = (name: string) => events.find((e) => e.event === name);
    assert.deepEqual(named("Page View"), {
      ...named("Page View"),
      distinct_id: anonymous,
      properties: { path: "/pricing" },
    });
    assert.equal(named("Clicked")?.distinct_id, anonymous);
    assert.deepEqual(named("$identify")?.properties, { $anon_distinct_id: anonymous, $set: { plan: "pro" } });
    assert.equal(named("$identify")?.distinct_id, "user_42");
  });

  await t.test("an event tracked as the page is left lands, sent at pagehide", async () => {
    // The default flush interval is 5 s: the page is gone long before, so only the pagehide
    // send can carry this event.
    await page.evaluate(() => {
      window.tidemark!.track("Left", { to: "/checkout" });
    });
    await page.getByRole("link", { name: "Checkout" }).click();
    await page.waitForURL(`${siteUrl}/checkout`);
    const events = await waitForEvents((stored) => stored.some((e) => e.event === "Left"));
    const left = events.find((e) => e.event === "Left");
    assert.ok(left, `"Left" did not land: ${JSON.stringify(events.map((e) => e.event))}`);
    assert.equal(left.distinct_id, "user_42");
    // The usual path compresses; the pagehide path cannot wait for CompressionStream.
    assert.deepEqual(batches[1], { encoding: undefined, events: ["Left"] }, "sent by the pagehide path");
  });

  await t.test("the next page keeps the identified id from localStorage", async () => {
    assert.equal(await page.evaluate(() => window.tidemark!.distinctId), "user_42");
    await page.evaluate(() => window.tidemark!.flush());
    const views = (await storedEvents()).filter((e) => e.event === "Page View");
    assert.deepEqual(
      views.map((e) => [e.distinct_id, e.properties.path, e.properties.referrer]).sort(),
      [
        [anonymous, "/pricing", undefined],
        ["user_42", "/checkout", `${siteUrl}/pricing`],
      ].sort(),
    );
  });

  await t.test("no script errors", () => {
    assert.deepEqual(pageErrors, []);
  });
});

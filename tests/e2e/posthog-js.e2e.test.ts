/// <reference lib="dom" />
// Functions passed to page.evaluate run in the browser: the DOM types describe them.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import type { Browser } from "playwright-core";
import { waitForStored } from "../conformance/pipeline.conformance.js";
import { requireChromium } from "../helpers/browser.js";
import { startDropProxy } from "../helpers/drop-proxy.js";
import { startTestTidemark, type TestTidemark } from "../helpers/tidemark.js";

/**
 * posthog-js, installed from npm and unchanged, in Chromium: a shop's page (served by the test,
 * on an origin of its own, as a real site is) loads it with `api_host` pointing at Tidemark. The
 * SDK starts cleanly (remote config, no flags, no console errors), its events land as sent,
 * the first answer to its capture request is cut off after Tidemark stored it and the SDK's own
 * retry is stored once, and the events it sends with sendBeacon as the page unloads land too.
 */
const SDK = readFileSync(
  fileURLToPath(new URL("../../node_modules/posthog-js/dist/array.no-external.js", import.meta.url)),
);

let tidemark: TestTidemark;
let site: Server;
let siteUrl: string;
let browser: Browser | undefined;
before(async () => {
  tidemark = await startTestTidemark();
});
after(async () => {
  await browser?.close();
  await new Promise((resolve) => site?.close(resolve));
  await tidemark.close();
});

/** The shop's site: one page that loads the SDK, and the SDK's file. */
function startSite(apiHost: string, token: string): Promise<string> {
  const page = `<!doctype html><html><head><title>Shop</title>
<script src="/posthog.js"></script>
<script>
  posthog.init(${JSON.stringify(token)}, {
    api_host: ${JSON.stringify(apiHost)},
    // posthog-js drops the events of browsers it takes for bots (navigator.webdriver, which
    // automation sets): this switch, the SDK's own, makes it send them (marked $browser_type "bot").
    opt_out_useragent_filter: true,
    loaded: (ph) => { window.posthogLoaded = true; },
  });
  posthog.onFeatureFlags((flags, variants, context) => { window.flagsLoaded = { flags, errors: context && context.errorsLoading }; });
</script></head><body><h1>Pricing</h1></body></html>`;
  site = createServer((request, response) => {
    if (request.url === "/posthog.js") {
      response.writeHead(200, { "content-type": "text/javascript" });
      response.end(SDK);
    } else if (request.url === "/" || request.url?.startsWith("/?")) {
      response.writeHead(200, { "content-type": "text/html" });
      response.end(page);
    } else if (request.url === "/favicon.ico") {
      response.writeHead(204);
      response.end();
    } else {
      response.writeHead(404);
      response.end();
    }
  });
  return new Promise((resolve) =>
    site.listen(0, "127.0.0.1", () => {
      const address = site.address() as { port: number };
      // localhost, not 127.0.0.1: another origin than Tidemark's, so every request is cross-origin.
      resolve(`http://localhost:${address.port}`);
    }),
  );
}

interface Stored {
  uuid: string;
  event: string;
  distinct_id: string;
  properties: Record<string, unknown>;
}

test("posthog-js in Chromium: starts cleanly, its events land once through a cut-off answer, and its unload beacon lands", {
  timeout: 120_000,
}, async (t) => {
  browser = await requireChromium(t);
  if (!browser) return;
  const project = await tidemark.createProject("ENTERPRISE", "posthog-js");
  // Answers are cut off until posthog-js retries on its own (its retry carries retry_count):
  // Chromium itself sends a POST again when a reused connection is reset before any answer, so
  // which cut reaches posthog-js depends on the connections Chromium picks (the first or second
  // here, and neither in a run that cut only two).
  const proxy = await startDropProxy(tidemark.url, /^POST \/e\//, 6, /retry_count=\d/);
  t.after(() => proxy.close());
  siteUrl = await startSite(proxy.url, project.api_key);

  const page = await browser.newPage();
  const problems: string[] = [];
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console: ${message.text()}`);
  });
  page.on("response", (response) => {
    if (response.status() >= 400) problems.push(`${response.status()} ${response.url()}`);
  });
  await page.goto(siteUrl);
  await page.waitForFunction(
    () => (window as unknown as { flagsLoaded?: unknown }).flagsLoaded !== undefined,
  );
  const flags = await page.evaluate(() => (window as unknown as { flagsLoaded: unknown }).flagsLoaded);
  assert.deepEqual(flags, { flags: [], errors: false }, "no flags, loaded without errors");

  const anon = await page.evaluate(() =>
    (window as unknown as { posthog: { get_distinct_id(): string } }).posthog.get_distinct_id(),
  );
  await page.evaluate(() => {
    const posthog = (window as unknown as { posthog: Record<string, (...args: unknown[]) => void> }).posthog;
    posthog.capture!("Signup", { plan: "pro" });
    posthog.identify!("erin", { email: "erin@example.com" });
  });
  // $pageview, Signup, $identify: sent in one request whose answer the proxy cuts off; the SDK's
  // retry queue sends it again a few seconds later.
  await waitForStored(tidemark, project.id, 3);
  const deadline = Date.now() + 30_000;
  while (!proxy.requests.some((r) => /^POST \/e\/\S*retry_count=\d/.test(r)) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  assert.ok(proxy.dropped >= 1, "an answer was cut off");
  assert.ok(
    proxy.requests.some((r) => /^POST \/e\/\S*retry_count=\d/.test(r)),
    `the SDK's own retry: ${proxy.requests.map((r) => r.split("\r\n")[0]).join(", ")}`,
  );
  let retried = await tidemark.request("GET", `/api/v1/project/${project.id}/stats`, { key: tidemark.token });
  while (retried.body.duplicate < 1 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    retried = await tidemark.request("GET", `/api/v1/project/${project.id}/stats`, { key: tidemark.token });
  }
  // The cut-off request held the page's first events (how many depends on when posthog-js
  // flushed its queue): the retry finds every one of them stored already.
  assert.ok(retried.body.duplicate >= 1, `the retry was a duplicate: ${JSON.stringify(retried.body)}`);
  assert.equal(retried.body.accepted, 3);

  // Leaving the page: posthog-js sends what it holds with sendBeacon (gzip, as the remote
  // config allows), in a request no page is left to retry.
  await page.evaluate(() => {
    (window as unknown as { posthog: { capture(e: string, p: object): void } }).posthog.capture("Purchase", {
      amount: 49,
    });
  });
  const before = proxy.requests.length;
  await page.goto("about:blank");
  // Purchase, and the $pageleave posthog-js captures as the page goes.
  await waitForStored(tidemark, project.id, 5);
  const beacon = proxy.requests.slice(before).find((r) => r.startsWith("POST /e/"));
  assert.ok(beacon, "the unload beacon");
  assert.match(beacon, /\r\ncontent-type: text\/plain/i);
  // Every capture request was gzip, announced by nothing but its bytes (posthog-js's gzip-js).
  const captures = proxy.requests.filter((r) => r.startsWith("POST /e/"));
  assert.ok(
    captures.every((r) => r.endsWith("[gzip]") && !/compression=/.test(r.split(" ")[1]!)),
    captures.join("\n---\n"),
  );
  await new Promise((resolve) => setTimeout(resolve, 500));
  const events = (
    await tidemark.request("POST", "/api/v1/query", {
      key: project.read_key,
      body: { kind: "events", limit: 100 },
    })
  ).body.events as Stored[];
  const named = (name: string) => events.filter((e) => e.event === name);
  for (const name of ["$pageview", "Signup", "$identify", "Purchase", "$pageleave"]) {
    assert.equal(named(name).length, 1, `${name} stored once: ${events.map((e) => e.event).join(", ")}`);
  }
  assert.equal(new Set(events.map((e) => e.uuid)).size, events.length, "every uuid once");
  assert.equal(named("$pageview")[0]!.distinct_id, anon);
  assert.equal(named("Signup")[0]!.distinct_id, anon);
  assert.equal(named("Signup")[0]!.properties.plan, "pro");
  const identify = named("$identify")[0]!;
  assert.equal(identify.distinct_id, "erin");
  assert.equal(identify.properties.$anon_distinct_id, anon);
  assert.deepEqual(identify.properties.$set, { email: "erin@example.com" });
  assert.equal(named("Purchase")[0]!.distinct_id, "erin");
  assert.ok(!JSON.stringify(events).includes(project.api_key), "the write key is stored in no event");
  // The only errors are the browser's reports of the connections the proxy reset.
  assert.deepEqual(
    problems.filter((p) => p !== "console: Failed to load resource: net::ERR_CONNECTION_RESET"),
    [],
    "no other console error, no failed request",
  );
});

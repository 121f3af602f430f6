/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
// Functions passed to page.evaluate run in the browser: the DOM types describe them.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { AxeBuilder } from "@axe-core/playwright";
import type { Browser, Page } from "playwright-core";
import { ensureWebBuilt, requireChromium } from "../helpers/browser.js";
import { type ChildServer, startChildServer } from "../helpers/child-server.js";
import { ensureFreshBuild } from "../helpers/services.js";

/**
 * The dashboard in a real browser against a real server: every number the page shows is
 * compared with the API's own answer to the same question. Screenshots land in
 * tests/e2e/artifacts/ (git-ignored), desktop and 375 px wide.
 */
const ARTIFACTS = fileURLToPath(new URL("./artifacts/", import.meta.url));
const ADMIN = `e2e-admin-${randomUUID()}`;
const DAY = 86_400_000;
const today = Math.floor(Date.now() / DAY) * DAY;
const dayText = (ms: number) => new Date(ms).toISOString().slice(0, 10);
// Insights use a custom range of whole UTC days, so the page and the test ask the same question.
const FROM_DAY = dayText(today - 6 * DAY);
const TO_DAY = dayText(today);
const FROM = `${FROM_DAY}T00:00:00.000Z`;
const TO = new Date(today + DAY).toISOString();
const CUSTOM = `range=custom&from=${FROM_DAY}&to=${TO_DAY}`;

let server: ChildServer;
let dataDir: string;
let project: { id: string; name: string; api_key: string; read_key: string };
let browser: Browser | undefined;

async function api<T>(method: string, path: string, key: string, body?: unknown): Promise<T> {
  const response = await fetch(`${server.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: body === undefined ? null : JSON.stringify(body),
  });
  const text = await response.text();
  assert.ok(response.ok, `${method} ${path} answered ${response.status}: ${text}`);
  return (text ? JSON.parse(text) : undefined) as T;
}

const query = <T>(spec: object) => api<T>("POST", "/api/v1/query", project.read_key, spec);

/** A known, small history over the last five days: six users, views, signups and purchases. */
function dataset(): object[] {
  const events: object[] = [];
  const paths = ["/", "/pricing", "/docs"];
  const at = (daysAgo: number, minute: number) =>
    new Date(today - daysAgo * DAY + 3_600_000 + minute * 60_000);
  const add = (event: string, user: string, daysAgo: number, minute: number, properties: object) =>
    events.push({
      uuid: randomUUID(),
      event,
      distinct_id: user,
      timestamp: at(daysAgo, minute).toISOString(),
      properties,
    });
  for (let u = 1; u <= 6; u++) {
    const user = `user_${u}`;
    for (let d = 5; d >= 1; d--) {
      if ((u + d) % 3 === 0) continue;
      add("Page View", user, d, u, {
        path: paths[(u + d) % paths.length],
        browser: u % 2 ? "Firefox" : "Chrome",
      });
    }
    if (u <= 4) add("Signup", user, u % 2 ? 5 : 4, 30 + u, { plan: u % 2 ? "free" : "pro" });
    if (u <= 2) add("Purchase", user, 4, 50 + u, { amount: 10 * u, currency: "EUR" });
  }
  add("Purchase", "user_3", 5, 55, { amount: 30, currency: "EUR" });
  return events;
}

const numberIn = (text: string | null) => Number((text ?? "").replace(/[^0-9.-]/g, ""));

async function shoot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}

const violations: string[] = [];
/** axe on the page as it is: serious and critical violations are collected and fail the test. */
async function audit(page: Page, name: string): Promise<void> {
  const result = await new AxeBuilder({ page }).analyze();
  for (const v of result.violations) {
    if (v.impact === "serious" || v.impact === "critical") {
      violations.push(
        `${name}: ${v.id} (${v.impact}) ${v.help} at ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`,
      );
    }
  }
}

/** Screenshots at desktop width and at 375 px, and the accessibility audit of both. */
async function capture(page: Page, name: string): Promise<void> {
  await shoot(page, `${name}-desktop`);
  await audit(page, name);
  await page.setViewportSize({ width: 375, height: 800 });
  await page.waitForTimeout(150);
  await shoot(page, `${name}-375px`);
  await audit(page, `${name} at 375 px`);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `${name} scrolls sideways at 375 px by ${overflow} px`);
  await page.setViewportSize({ width: 1280, height: 900 });
}

async function signIn(page: Page, key: string): Promise<void> {
  await page.goto(`${server.url}/`);
  await page.getByLabel("Read key or admin token").fill(key);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("navigation", { name: "Main" }).waitFor();
}

before(async () => {
  ensureFreshBuild();
  ensureWebBuilt();
  rmSync(ARTIFACTS, { recursive: true, force: true });
  mkdirSync(ARTIFACTS, { recursive: true });
  dataDir = mkdtempSync(join(tmpdir(), "tidemark-e2e-"));
  server = await startChildServer({ SECRET_TOKEN: ADMIN, TIDEMARK_DATA_DIR: dataDir });
  project = await api("POST", "/api/v1/project", ADMIN, { name: "e2e shop", plan: "PRO" });
  const sent = await fetch(`${server.url}/api/v1/event/batch`, {
    method: "POST",
    headers: { authorization: `Bearer ${project.api_key}`, "content-type": "application/json" },
    body: JSON.stringify({ events: dataset() }),
  });
  assert.equal(sent.status, 202, await sent.text());
});

after(async () => {
  await browser?.close();
  server?.process.kill("SIGTERM");
  await server?.exited;
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

test("the dashboard shows what the API answers", async (t) => {
  browser = await requireChromium(t);
  if (!browser) return;
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const pageErrors: string[] = [];
  page.on("pageerror", (error) => pageErrors.push(error.message));

  await t.test("the page and the API share the server", async () => {
    const index = await fetch(`${server.url}/`);
    assert.equal(index.status, 200);
    assert.match(index.headers.get("content-type") ?? "", /text\/html/);
    const unknown = await fetch(`${server.url}/api/v1/nothing-here`);
    assert.equal(unknown.status, 404);
    assert.equal(((await unknown.json()) as { error: { code: string } }).error.code, "not_found");
    assert.equal((await fetch(`${server.url}/health`)).status, 200);
  });

  await t.test("a wrong key gets a plain message", async () => {
    await page.goto(`${server.url}/`);
    await audit(page, "sign-in");
    await page.getByLabel("Read key or admin token").fill("rk_dev_notarealkey000000000000");
    await page.getByRole("button", { name: "Sign in" }).click();
    const alert = page.getByRole("alert");
    await alert.waitFor();
    assert.match((await alert.textContent()) ?? "", /not known to Tidemark/);
    await page.getByLabel("Read key or admin token").fill("not-the-admin-token");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByText("neither a project's read key nor the admin token").waitFor();
    await page.getByLabel("Read key or admin token").fill(project.api_key);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByText("That is a write key").waitFor();
    await capture(page, "sign-in-error");
  });

  await t.test("overview: events and users of the range", async () => {
    // Signed in with the keyboard alone; then the skip link and the main navigation come first.
    await page.goto(`${server.url}/`);
    const focused = () =>
      page.evaluate(() => document.activeElement?.id || document.activeElement?.textContent?.trim());
    await page.keyboard.press("Tab");
    assert.equal(await focused(), "key");
    await page.keyboard.type(project.read_key);
    await page.keyboard.press("Enter");
    await page.getByRole("navigation", { name: "Main" }).waitFor();
    await page.keyboard.press("Tab");
    assert.equal(await focused(), "Skip to content");
    await page.keyboard.press("Enter");
    assert.equal(await focused(), "main");
    await page.keyboard.press("Tab");
    assert.equal(await focused(), "Today");
    const key = await page.evaluate(() => sessionStorage.getItem("tidemark.session"));
    assert.ok(key?.includes(project.read_key), "the key is kept in sessionStorage");
    assert.equal(await page.evaluate(() => localStorage.length), 0, "nothing in localStorage");
    await page.goto(`${server.url}/#/overview?range=7d`);
    const stat = page.getByTestId("stat-events");
    await page.waitForFunction(() =>
      /\d/.test(document.querySelector("[data-testid=stat-events]")?.textContent ?? ""),
    );
    const events = await query<{ series: { total: number }[] }>({
      kind: "trends",
      math: "total",
      interval: "day",
      from: FROM,
      to: TO,
    });
    const users = await query<{ series: { total: number }[] }>({
      kind: "trends",
      math: "unique_users",
      interval: "day",
      from: FROM,
      to: TO,
    });
    assert.equal(numberIn(await stat.textContent()), events.series[0]?.total);
    assert.equal(numberIn(await page.getByTestId("stat-users").textContent()), users.series[0]?.total);
    const top = await query<{ events: { event: string; count: number }[] }>({
      kind: "top_events",
      from: FROM,
      to: TO,
      limit: 10,
    });
    const shown = await page.locator("[data-testid=top-events] li").allTextContents();
    assert.deepEqual(
      shown,
      top.events.map((e) => `${e.event}${e.count.toLocaleString("en-US")}`),
    );
    await page.locator("[data-testid=top-values] li").first().waitFor();
    await page.locator("canvas").first().waitFor();
    await capture(page, "overview");
  });

  await t.test("trends: the table equals the API's series", async () => {
    await page.goto(
      `${server.url}/#/insights/trends?event=Page%20View&math=total&interval=day&breakdown=path&limit=5&${CUSTOM}`,
    );
    const table = page.getByTestId("trends-table");
    await table.waitFor();
    const answer = await query<{
      series: { breakdown_value: string | null; total: number; points: { value: number }[] }[];
    }>({
      kind: "trends",
      event: "Page View",
      math: "total",
      interval: "day",
      breakdown: "path",
      limit: 5,
      from: FROM,
      to: TO,
    });
    const rows = await table
      .locator("tbody tr")
      .evaluateAll((trs) =>
        trs.map((tr) => [...tr.querySelectorAll("th, td")].map((cell) => cell.textContent ?? "")),
      );
    assert.deepEqual(
      rows.map(([name, ...numbers]) => [name, ...numbers.map(numberIn)]),
      answer.series.map((s) => [s.breakdown_value ?? "(none)", s.total, ...s.points.map((p) => p.value)]),
    );
    await capture(page, "trends");
  });

  await t.test("a slow query shows a loading state; a failed one its error where it failed", async () => {
    // Every query answer held back 600 ms: past 200 ms the result panel says it is loading.
    await page.route("**/api/v1/query**", async (route) => {
      await new Promise((resolve) => setTimeout(resolve, 600));
      await route.continue().catch(() => undefined);
    });
    await page.goto(`${server.url}/#/insights/trends?event=Signup&interval=week&${CUSTOM}`);
    await page.getByTestId("trends-result").getByRole("status").filter({ hasText: "Loading" }).waitFor();
    await page.getByTestId("trends-table").waitFor();
    await page.unrouteAll({ behavior: "wait" });

    // A breakdown name over 200 characters: the API's 400, shown in the result panel.
    const breakdown = "x".repeat(201);
    const refused = await fetch(`${server.url}/api/v1/query`, {
      method: "POST",
      headers: { authorization: `Bearer ${project.read_key}`, "content-type": "application/json" },
      body: JSON.stringify({ kind: "trends", event: "Signup", breakdown, from: FROM, to: TO }),
    });
    assert.equal(refused.status, 400);
    const { error } = (await refused.json()) as { error: { message: string } };
    await page.goto(`${server.url}/#/insights/trends?event=Signup&breakdown=${breakdown}&${CUSTOM}`);
    const alert = page.getByTestId("trends-result").getByRole("alert");
    await alert.waitFor();
    const shown = (await alert.textContent()) ?? "";
    assert.ok(shown.startsWith(error.message), shown);
    assert.match(shown, /breakdown/);
    await capture(page, "trends-error");
  });

  await t.test("funnel: each step's users, conversion and drop-off", async () => {
    await page.goto(
      `${server.url}/#/insights/funnel?step=Page%20View&step=Signup&step=Purchase&window=604800&${CUSTOM}`,
    );
    const steps = page.getByTestId("funnel-steps");
    await steps.waitFor();
    const answer = await query<{
      steps: { event: string; count: number; conversion_rate: number; drop_off: number }[];
    }>({
      kind: "funnel",
      steps: ["Page View", "Signup", "Purchase"],
      window_seconds: 604800,
      from: FROM,
      to: TO,
    });
    const shown = await steps.locator("li").evaluateAll((lis) =>
      lis.map((li) => ({
        count: Number(li.querySelector("[data-count]")?.getAttribute("data-count")),
        countText: li.querySelector("[data-count]")?.textContent ?? "",
        conversion: li.querySelector("[data-conversion]")?.textContent ?? "",
        dropOff: Number(li.querySelector("[data-drop-off]")?.getAttribute("data-drop-off")),
      })),
    );
    assert.equal(shown.length, answer.steps.length);
    answer.steps.forEach((step, i) => {
      const row = shown[i]!;
      assert.equal(row.count, step.count);
      assert.equal(numberIn(row.countText), step.count);
      assert.match(row.conversion, new RegExp(`${(step.conversion_rate * 100).toFixed(1)}%`));
      assert.equal(row.dropOff, step.drop_off);
    });
    assert.ok((answer.steps[1]?.count ?? 0) > 0, "the dataset converts");
    await capture(page, "funnel");
  });

  await t.test("retention: every cell equals the API's cohort values", async () => {
    await page.goto(
      `${server.url}/#/insights/retention?start_event=Page%20View&return_event=Page%20View&interval=day&periods=5&${CUSTOM}`,
    );
    const table = page.getByTestId("retention-table");
    await table.waitFor();
    const answer = await query<{ cohorts: { cohort: string; size: number; values: number[] }[] }>({
      kind: "retention",
      start_event: "Page View",
      return_event: "Page View",
      interval: "day",
      periods: 5,
      from: FROM,
      to: TO,
    });
    const rows = await table.locator("tbody tr").evaluateAll((trs) =>
      trs.map((tr) => ({
        cohort: tr.querySelector("th")?.textContent ?? "",
        size: tr.querySelector("td")?.textContent ?? "",
        values: [...tr.querySelectorAll("td[data-value]")].map((td) => Number(td.getAttribute("data-value"))),
        texts: [...tr.querySelectorAll("td[data-value]")].map((td) => td.firstChild?.textContent ?? ""),
      })),
    );
    assert.ok(answer.cohorts.length > 0);
    assert.deepEqual(
      rows.map((r) => [r.cohort, numberIn(r.size), r.values, r.texts.map(numberIn)]),
      answer.cohorts.map((c) => [c.cohort.slice(0, 10), c.size, c.values, c.values]),
    );
    await capture(page, "retention");
  });

  await t.test("live events: newest first, filters, expandable properties", async () => {
    await page.goto(`${server.url}/#/live`);
    const list = page.getByTestId("event-list");
    await list.locator("li").first().waitFor();
    const answer = await query<{ events: { uuid: string; properties: object }[] }>({
      kind: "events",
      limit: 50,
    });
    assert.deepEqual(
      await list.locator("li").evaluateAll((lis) => lis.map((li) => li.getAttribute("data-uuid"))),
      answer.events.map((e) => e.uuid),
    );
    const first = list.locator("li").first();
    await first.getByRole("button").press("Enter");
    assert.deepEqual(
      JSON.parse((await first.locator("pre").textContent()) ?? ""),
      answer.events[0]?.properties,
    );
    await capture(page, "live-events");

    // A new event appears on top by itself (the list refreshes every 5 s).
    const fresh = randomUUID();
    const sent = await fetch(`${server.url}/api/v1/event`, {
      method: "POST",
      headers: { authorization: `Bearer ${project.api_key}`, "content-type": "application/json" },
      body: JSON.stringify({ uuid: fresh, event: "Live Check", distinct_id: "user_live" }),
    });
    assert.equal(sent.status, 202);
    await page.waitForFunction(
      (uuid) => document.querySelector("[data-testid=event-list] li")?.getAttribute("data-uuid") === uuid,
      fresh,
      { timeout: 20_000 },
    );

    await page.getByLabel("User (distinct_id)").fill("user_3");
    await page.getByLabel("Event", { exact: true }).fill("Purchase");
    await page.getByRole("button", { name: "Filter" }).click();
    const filtered = await query<{ events: { uuid: string }[] }>({
      kind: "events",
      event: "Purchase",
      distinct_id: "user_3",
      limit: 50,
    });
    await page.waitForFunction(
      (n) => document.querySelectorAll("[data-testid=event-list] li").length === n,
      filtered.events.length,
    );
    assert.deepEqual(
      await list.locator("li").evaluateAll((lis) => lis.map((li) => li.getAttribute("data-uuid"))),
      filtered.events.map((e) => e.uuid),
    );
  });

  await t.test("project admin: the ledger, create, plan, rotate, delete", async () => {
    await page.getByRole("button", { name: "Sign out" }).click();
    await signIn(page, ADMIN);
    await page.getByLabel("Project").selectOption(project.id);
    await page.goto(`${server.url}/#/admin`);
    await page.getByRole("button", { name: project.name }).click();
    const ledgerTable = page.getByTestId("ledger-table");
    await ledgerTable.locator("tr[data-field=received] td").filter({ hasText: /\d/ }).waitFor();
    // The API's own counts are written every second: compare once they have settled.
    let ledger: {
      received: number;
      accepted: number;
      duplicate: number;
      rate_limited: number;
      stored: number;
    };
    let shown: Record<string, number> = {};
    const deadline = Date.now() + 10_000;
    for (;;) {
      ledger = await api("GET", `/api/v1/project/${project.id}/stats`, ADMIN);
      await page.waitForTimeout(3500);
      shown = Object.fromEntries(
        await ledgerTable
          .locator("tr[data-field]")
          .evaluateAll((trs) =>
            trs.map((tr) => [tr.getAttribute("data-field"), tr.querySelector("td")?.textContent]),
          ),
      );
      const numbers = Object.fromEntries(Object.entries(shown).map(([k, v]) => [k, numberIn(String(v))]));
      if (numbers.received === ledger.received || Date.now() > deadline) {
        shown = numbers;
        break;
      }
    }
    for (const field of ["received", "accepted", "duplicate", "rate_limited", "stored"] as const) {
      assert.equal(shown[field], ledger[field], `ledger ${field}`);
    }
    assert.equal(ledger.accepted, dataset().length + 1, "the dataset and the live check event");
    assert.match(
      (await page.getByTestId("curl-snippet").textContent()) ?? "",
      /curl -X POST .*\/api\/v1\/event/,
    );
    assert.equal(
      await page.getByTestId("script-snippet").textContent(),
      `<script src="${server.url}/sdk/tidemark.js" data-key="$WRITE_KEY"></script>`,
    );
    await capture(page, "admin");

    // Create a project through the page: its keys are shown once.
    await page.getByLabel("Name").fill("made in the browser");
    await page.getByLabel("Plan", { exact: true }).first().selectOption("FREE");
    await page.getByRole("button", { name: "Create" }).click();
    const writeKey = (await page.getByTestId("new-write-key").textContent()) ?? "";
    assert.match(writeKey, /^wk_dev_/);
    const listed = await api<{ projects: { id: string; name: string; plan: string }[] }>(
      "GET",
      "/api/v1/project",
      ADMIN,
    );
    const made = listed.projects.find((p) => p.name === "made in the browser");
    assert.ok(made);
    assert.match((await page.getByTestId("curl-snippet").textContent()) ?? "", new RegExp(writeKey));
    assert.match(
      (await page.getByTestId("script-snippet").textContent()) ?? "",
      new RegExp(`data-key="${writeKey}"`),
    );
    await capture(page, "admin-created");

    // Change its plan.
    await page.locator("#plan").selectOption("ENTERPRISE");
    await page.getByRole("button", { name: "Change plan" }).click();
    await page.getByText("10,000 requests/minute").waitFor();
    const changed = await api<{ plan: string }>("GET", `/api/v1/project/${made.id}`, ADMIN);
    assert.equal(changed.plan, "ENTERPRISE");

    // Rotate its keys: the old write key stops working.
    await page.getByRole("button", { name: "Rotate keys" }).click();
    await page.waitForFunction((old) => {
      const shownKey = document.querySelector("[data-testid=new-write-key]")?.textContent;
      return shownKey && shownKey !== old;
    }, writeKey);
    const old = await fetch(`${server.url}/api/v1/event`, {
      method: "POST",
      headers: { authorization: `Bearer ${writeKey}`, "content-type": "application/json" },
      body: JSON.stringify({ event: "x", distinct_id: "y" }),
    });
    assert.equal(old.status, 401);

    // Delete it, after typing its name.
    await page.getByRole("button", { name: "Delete project…" }).click();
    const confirm = page.getByRole("button", { name: "Delete for good" });
    assert.equal(await confirm.isDisabled(), true);
    await page.locator("#confirm-name").fill("made in the browser");
    await capture(page, "admin-delete");
    await confirm.click();
    await page.getByRole("button", { name: "made in the browser" }).waitFor({ state: "detached" });
    const after = await api<{ projects: { id: string }[] }>("GET", "/api/v1/project", ADMIN);
    assert.ok(!after.projects.some((p) => p.id === made.id));
  });

  await t.test("no serious or critical accessibility violations on any page", () => {
    assert.deepEqual(violations, []);
  });

  await t.test("no script errors", () => {
    assert.deepEqual(pageErrors, []);
  });
  await context.close();
});

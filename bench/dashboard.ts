/// <reference lib="dom" />
// Functions passed to page.evaluate run in the browser: the DOM types describe them.
/**
 * The dashboard's overview on a large project, measured in Chromium (method: bench/README.md).
 *
 *   npm run build && node --import tsx bench/dashboard.ts [--events 1000000] [--runs 6] [--screenshot docs/overview.png]
 *
 * Starts Tidemark (embedded, a fresh data dir), sends `--events` events through the batch API
 * (90 days ending now, 50K users), then loads the overview `--runs` times per range in headless
 * Chromium with the read key in sessionStorage. Per load: first contentful paint, the end of the
 * last query response (resource timing), and when the numbers, chart and top lists are on screen,
 * all from the navigation's start. The first load of each range is cold (DuckDB's caches and the
 * page's assets); the table prints it apart from the warm median.
 */
import { randomUUID } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";
import { CHROMIUM, CHROMIUM_ARGS } from "../tests/helpers/browser.js";
import { startChildServer } from "../tests/helpers/child-server.js";
import { NAMES, PATHS } from "./queries.js";

const { values: args } = parseArgs({
  options: {
    events: { type: "string", default: "1000000" },
    runs: { type: "string", default: "6" },
    screenshot: { type: "string" },
    "keep-data": { type: "boolean", default: false },
  },
});
const EVENTS = Number(args.events);
const RUNS = Number(args.runs);
const ADMIN = `bench-${randomUUID()}`;
const DAY = 86_400_000;

async function post(url: string, key: string, body: unknown): Promise<Response> {
  return fetch(url, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
}

/** Sends the events in batches of 1,000, four requests in flight; retries a 429 or 503. */
async function ingest(url: string, writeKey: string): Promise<void> {
  const started = performance.now();
  const end = Date.now() - 60_000;
  let next = 0;
  let sent = 0;
  const worker = async () => {
    for (;;) {
      const first = next;
      if (first >= EVENTS) return;
      next += 1000;
      const events = [];
      for (let i = first; i < Math.min(first + 1000, EVENTS); i++) {
        events.push({
          event: NAMES[Math.floor(Math.random() * NAMES.length)],
          distinct_id: `user_${Math.floor(Math.random() ** 1.5 * 50_000)}`,
          // Spread evenly over the 90 days ending now, in time order as clients would send.
          timestamp: end - 90 * DAY + Math.floor((i / EVENTS) * 90 * DAY),
          properties: {
            path: PATHS[Math.floor(Math.random() ** 2 * PATHS.length)],
            plan: i % 3 ? "free" : "pro",
            price: i % 200,
          },
        });
      }
      for (;;) {
        const response = await post(`${url}/api/v1/event/batch`, writeKey, { events });
        if (response.status === 202) break;
        if (response.status !== 429 && response.status !== 503) {
          throw new Error(`ingest answered ${response.status}: ${await response.text()}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      sent += events.length;
      if (sent % 100_000 === 0) process.stdout.write(`  sent ${sent} events\r`);
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  console.log(`  ${EVENTS} events sent in ${((performance.now() - started) / 1000).toFixed(1)} s`);
}

/** In the page: every panel has its answer (six queries answered, none busy) and the chart is drawn. */
function overviewShown(): boolean {
  const answered = performance.getEntriesByType("resource").filter((e) => e.name.includes("/api/v1/query"));
  return (
    answered.length >= 6 &&
    document.querySelectorAll("[aria-busy=true]").length === 0 &&
    /\d/.test(document.querySelector("[data-testid=stat-users]")?.textContent ?? "") &&
    document.querySelector("canvas") !== null
  );
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)] ?? Number.NaN;
}

async function main(): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), "tidemark-bench-dashboard-"));
  const server = await startChildServer({ SECRET_TOKEN: ADMIN, TIDEMARK_DATA_DIR: dataDir });
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  try {
    const created = await post(`${server.url}/api/v1/project`, ADMIN, {
      name: "bench dashboard",
      plan: "ENTERPRISE",
    });
    const project = (await created.json()) as { api_key: string; read_key: string };
    await ingest(server.url, project.api_key);
    const context = await browser.newContext({ viewport: { width: 1100, height: 820 } });
    await context.addInitScript((key) => {
      sessionStorage.setItem("tidemark.session", JSON.stringify({ kind: "read", key }));
    }, project.read_key);
    const page = await context.newPage();
    console.log(
      `\n| overview range (${EVENTS.toLocaleString("en")} events) | cold: paint / queries / shown ms | warm median: paint / queries / shown ms | queries |`,
    );
    console.log("| --- | ---: | ---: | ---: |");
    for (const range of ["7d", "30d", "90d"]) {
      const runs: { paint: number; queries: number; shown: number; count: number }[] = [];
      for (let run = 0; run < RUNS; run++) {
        await page.goto("about:blank");
        await page.goto(`${server.url}/#/overview?range=${range}`);
        await page.waitForFunction(overviewShown);
        runs.push(
          await page.evaluate(() => {
            const shown = performance.now();
            const paint = performance.getEntriesByName("first-contentful-paint")[0]?.startTime ?? Number.NaN;
            const queries = performance
              .getEntriesByType("resource")
              .filter((e) => e.name.includes("/api/v1/query")) as PerformanceResourceTiming[];
            return {
              paint,
              queries: Math.max(...queries.map((q) => q.responseEnd)),
              shown,
              count: queries.length,
            };
          }),
        );
      }
      const [cold, ...warm] = runs;
      const f = (n: number) => n.toFixed(0);
      console.log(
        `| ${range} | ${f(cold!.paint)} / ${f(cold!.queries)} / ${f(cold!.shown)} | ${f(median(warm.map((r) => r.paint)))} / ${f(median(warm.map((r) => r.queries)))} / ${f(median(warm.map((r) => r.shown)))} | ${cold!.count} |`,
      );
    }
    if (args.screenshot) {
      await page.goto("about:blank");
      await page.goto(`${server.url}/#/overview?range=30d`);
      await page.waitForFunction(overviewShown);
      await page.waitForTimeout(300);
      mkdirSync(dirname(args.screenshot), { recursive: true });
      await page.screenshot({ path: args.screenshot });
      console.log(`\nscreenshot: ${args.screenshot}`);
    }
  } finally {
    await browser.close();
    server.process.kill("SIGTERM");
    await server.exited;
    if (!args["keep-data"]) rmSync(dataDir, { recursive: true, force: true });
  }
}

await main();

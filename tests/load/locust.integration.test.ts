// Locust load-test suite, run for real: the smoke scenario against a Tidemark server started
// here, the rate-limit verdicts both ways (a real FREE key driven past 100 RPM; fake servers
// that refuse too early or never), a key supplied through LOAD_TEST_API_KEY, and distributed
// mode (one master, two workers).
//
//   node --import tsx --test tests/load/locust.integration.test.ts
//
// Needs `uv` on PATH (`pip install uv`); the Python side comes from pyproject.toml/uv.lock.
// Without uv the tests skip with a loud message, or fail when TIDEMARK_REQUIRE_SERVICES=1.
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const LOCUSTFILE = "tests/load/locustfile.py";
const REQUIRE = process.env.TIDEMARK_REQUIRE_SERVICES === "1";

function onPath(cmd: string): string | null {
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
    if (dir && existsSync(path.join(dir, cmd))) return path.join(dir, cmd);
  }
  return null;
}

const UV = onPath("uv");
let skipReason: string | false = false;
if (!UV) {
  const msg = "uv is not on PATH: the Locust load tests cannot run (install it with `pip install uv`)";
  skipReason = msg;
  if (REQUIRE) {
    test("uv is available for the Locust load tests", () => {
      assert.fail(`${msg}; TIDEMARK_REQUIRE_SERVICES=1 makes this a failure`);
    });
  } else {
    const bar = "!".repeat(msg.length + 12);
    console.error(`\n${bar}\n!!! SKIP: ${msg} !!!\n${bar}\n`);
  }
}

// ---------------------------------------------------------------------------------------------
// helpers

type Row = Record<string, string>;

function parseCsv(text: string): Row[] {
  const rows: string[][] = [];
  let field = "";
  let row: string[] = [];
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") {
      row.push(field);
      field = "";
    } else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      row.push(field);
      rows.push(row);
      row = [];
      field = "";
    } else field += c;
  }
  if (field !== "" || row.length > 0) {
    row.push(field);
    rows.push(row);
  }
  const [header, ...body] = rows;
  if (!header) return [];
  return body
    .filter((r) => r.length > 1 || (r[0] ?? "") !== "")
    .map((r) => Object.fromEntries(header.map((h, i) => [h, r[i] ?? ""])));
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Environment for Locust processes: none of the caller's load-test settings leak in. */
function locustEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of [
    "LOAD_TEST_API_KEY",
    "LOAD_TEST_API_KEYS",
    "LOAD_TEST_PLAN",
    "PROJECT_NAME_PREFIX",
    "SECRET_TOKEN",
    "VIRTUAL_ENV",
  ]) {
    delete env[k];
  }
  return { ...env, PYTHONUNBUFFERED: "1", ...extra };
}

interface Proc {
  child: ChildProcess;
  output: () => string;
  done: Promise<number | null>;
}

function start(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Proc {
  const child = spawn(cmd, args, { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout?.on("data", (d: Buffer) => {
    out += d.toString();
  });
  child.stderr?.on("data", (d: Buffer) => {
    out += d.toString();
  });
  const timer = setTimeout(() => {
    out += `\n[test] killed after ${timeoutMs} ms\n`;
    child.kill("SIGKILL");
  }, timeoutMs);
  const done = new Promise<number | null>((resolve) => {
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
  return { child, output: () => out, done };
}

interface LocustResult {
  code: number | null;
  output: string;
  stats: Row[];
  failures: Row[];
}

function readResults(csvPrefix: string): { stats: Row[]; failures: Row[] } {
  const read = (f: string) => (existsSync(f) ? parseCsv(readFileSync(f, "utf8")) : []);
  return { stats: read(`${csvPrefix}_stats.csv`), failures: read(`${csvPrefix}_failures.csv`) };
}

/** `uv run locust -f tests/load/locustfile.py --host URL --headless --csv PREFIX --only-summary ...` */
async function runLocust(
  host: string,
  csvPrefix: string,
  args: string[],
  env: Record<string, string>,
  runSeconds: number,
  locustfile = LOCUSTFILE,
): Promise<LocustResult> {
  const p = start(
    UV!,
    [
      "run",
      "locust",
      "-f",
      locustfile,
      `--host=${host}`,
      "--headless",
      "--csv",
      csvPrefix,
      "--only-summary",
      "-t",
      `${runSeconds}s`,
      ...args,
    ],
    locustEnv(env),
    (runSeconds + 45) * 1000,
  );
  const code = await p.done;
  return { code, output: p.output(), ...readResults(csvPrefix) };
}

const num = (r: Row | undefined, col: string) => Number(r?.[col] ?? Number.NaN);
const byName = (rows: Row[], name: string) => rows.find((r) => r.Name === name);
const aggregated = (rows: Row[]) => byName(rows, "Aggregated");

function explain(r: LocustResult): string {
  return `exit ${r.code}\n--- failures ---\n${JSON.stringify(r.failures, null, 1)}\n--- output (tail) ---\n${r.output.slice(-4000)}`;
}

// --- a fake ingest API: refuses after 3 requests per key ("early"), or never ("nolimit") ---
const PLAN_LIMITS: Record<string, number> = { FREE: 100, PRO: 1000, ENTERPRISE: 10000 };

function fakeServer(mode: "early" | "nolimit", token: string): Promise<{ url: string; close: () => void }> {
  const keys = new Map<string, { limit: number; used: number }>();
  const srv = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const send = (code: number, body: unknown, headers: Record<string, string> = {}) => {
        res.writeHead(code, { "content-type": "application/json", ...headers });
        res.end(JSON.stringify(body));
      };
      const auth = (req.headers.authorization ?? "").replace(/^Bearer /, "");
      if (req.method === "POST" && req.url === "/api/v1/project") {
        if (auth !== token) return send(401, { error: { code: "unauthorized", message: "bad token" } });
        const body = JSON.parse(Buffer.concat(chunks).toString() || "{}") as { name?: string; plan?: string };
        const plan = body.plan ?? "FREE";
        const limit = PLAN_LIMITS[plan] ?? 100;
        const key = `wk_dev_fake${randomBytes(8).toString("hex")}`;
        keys.set(key, { limit, used: 0 });
        return send(201, {
          id: randomBytes(8).toString("hex"),
          name: body.name,
          plan,
          rate_limit_rpm: limit,
          api_key: key,
          read_key: "rk_dev_fake",
          created_at: new Date().toISOString(),
        });
      }
      if (req.method === "POST" && req.url?.startsWith("/api/v1/event")) {
        const p = keys.get(auth);
        if (!p) return send(401, { error: { code: "unauthorized", message: "unknown key" } });
        const reset = String(Math.floor(Date.now() / 1000) + 60);
        if (mode === "early" && p.used >= 3) {
          return send(
            429,
            { error: { code: "rate_limited", message: "too many requests" } },
            {
              "retry-after": "30",
              "x-ratelimit-limit": String(p.limit),
              "x-ratelimit-remaining": "0",
              "x-ratelimit-reset": reset,
            },
          );
        }
        p.used++;
        return send(
          202,
          { accepted: 1 },
          {
            "x-ratelimit-limit": String(p.limit),
            "x-ratelimit-remaining": String(Math.max(0, p.limit - p.used)),
            "x-ratelimit-reset": reset,
          },
        );
      }
      send(404, { error: { code: "not_found", message: "no route" } });
    });
  });
  return new Promise((resolve) => {
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      resolve({
        url: `http://127.0.0.1:${port}`,
        close: () => {
          srv.closeAllConnections();
          srv.close();
        },
      });
    });
  });
}

// ---------------------------------------------------------------------------------------------

describe("Locust load tests", () => {
  const skip = skipReason;
  const token = randomBytes(16).toString("hex");
  let tmp = "";
  let dataDir = "";
  let server: Proc | null = null;
  let host = "";

  before(async () => {
    if (skip) return;
    tmp = mkdtempSync(path.join(os.tmpdir(), "tidemark-locust-"));
    dataDir = mkdtempSync(path.join(os.tmpdir(), "tidemark-locust-data-"));

    const sync = spawnSync(UV!, ["sync", "--group", "dev"], {
      cwd: ROOT,
      env: locustEnv({}),
      encoding: "utf8",
      timeout: 300_000,
    });
    assert.equal(sync.status, 0, `uv sync --group dev failed:\n${sync.stdout}\n${sync.stderr}`);

    if (!existsSync(path.join(ROOT, "dist/cli.js"))) {
      const build = spawnSync("npm", ["run", "build"], { cwd: ROOT, encoding: "utf8", timeout: 300_000 });
      assert.equal(build.status, 0, `npm run build failed:\n${build.stdout}\n${build.stderr}`);
    }

    const port = await freePort();
    host = `http://127.0.0.1:${port}`;
    server = start(
      process.execPath,
      ["dist/cli.js", "serve"],
      {
        ...process.env,
        PORT: String(port),
        HOST: "127.0.0.1",
        TIDEMARK_DATA_DIR: dataDir,
        SECRET_TOKEN: token,
      },
      600_000,
    );
    const deadline = Date.now() + 30_000;
    let exited = false;
    void server.done.then(() => {
      exited = true;
    });
    for (;;) {
      try {
        const r = await fetch(`${host}/health`);
        if (r.ok) break;
      } catch {
        // not listening yet
      }
      if (exited) assert.fail(`the server exited during start-up:\n${server.output()}`);
      if (Date.now() > deadline) assert.fail(`no GET /health within 30 s:\n${server.output()}`);
      await sleep(100);
    }
  });

  after(async () => {
    if (server && server.child.exitCode === null) {
      server.child.kill("SIGTERM");
      const stopped = await Promise.race([server.done.then(() => true), sleep(10_000).then(() => false)]);
      if (!stopped) server.child.kill("SIGKILL");
    }
    for (const d of [tmp, dataDir]) if (d) rmSync(d, { recursive: true, force: true });
  });

  test("smoke: MixedLoadUser -u 5 -r 1 runs without a failure", { skip }, async () => {
    const r = await runLocust(
      host,
      path.join(tmp, "smoke"),
      ["-u", "5", "-r", "1", "MixedLoadUser"],
      { SECRET_TOKEN: token },
      20,
    );
    const agg = aggregated(r.stats);
    assert.ok(agg, `no Aggregated row in _stats.csv\n${explain(r)}`);
    assert.ok(num(agg, "Request Count") > 0, `Locust made no request\n${explain(r)}`);
    assert.equal(num(agg, "Failure Count"), 0, `Locust reported failures\n${explain(r)}`);
    assert.equal(r.failures.length, 0, `_failures.csv is not empty\n${explain(r)}`);
    assert.equal(r.code, 0, explain(r));
    assert.match(r.output, /Created 4 projects/, "the run creates its 4 projects");
    assert.ok(
      r.stats.some((s) => s.Name?.startsWith("/api/v1/event (")),
      `no single-event row named like "/api/v1/event (Page View)"\n${explain(r)}`,
    );
  });

  test("a slow start does not use up the run time: -t counts from when Locust starts the run", {
    skip,
  }, async () => {
    // Locust's modules are imported, then this file blocks for longer than the whole run, as slow
    // imports do on a busy machine, then the project's locustfile is loaded.
    const slow = path.join(tmp, "slow_start_locustfile.py");
    writeFileSync(
      slow,
      [
        "import sys",
        `sys.path.insert(0, ${JSON.stringify(path.join(ROOT, "tests/load"))})`,
        "import locust  # noqa: F401",
        "from gevent.monkey import get_original",
        "get_original('time', 'sleep')(8)  # blocks the process, as slow imports do",
        "from locustfile import *  # noqa: F401,F403",
        "",
      ].join("\n"),
    );
    const started = Date.now();
    const r = await runLocust(
      host,
      path.join(tmp, "slow"),
      ["-u", "2", "-r", "2", "MixedLoadUser"],
      { SECRET_TOKEN: token },
      5,
      slow,
    );
    assert.ok(Date.now() - started >= 13_000, `the run ended early\n${explain(r)}`);
    assert.ok(num(aggregated(r.stats), "Request Count") > 0, `Locust made no request\n${explain(r)}`);
    assert.equal(r.code, 0, explain(r));
  });

  test("a FREE key driven past 100 RPM gets 429s, reported as expected, none as failures", {
    skip,
  }, async () => {
    const r = await runLocust(
      host,
      path.join(tmp, "free"),
      ["-u", "10", "-r", "10", "SingleEventUser"],
      { SECRET_TOKEN: token, LOAD_TEST_PLAN: "FREE" },
      12,
    );
    const limited = byName(r.stats, "/api/v1/event (rate limited: FREE)");
    assert.ok(limited && num(limited, "Request Count") > 0, `no 429 on the FREE key\n${explain(r)}`);
    assert.equal(num(limited, "Failure Count"), 0, `expected 429s counted as failures\n${explain(r)}`);
    assert.equal(num(aggregated(r.stats), "Failure Count"), 0, explain(r));
    assert.equal(r.failures.length, 0, explain(r));
    const accepted = byName(r.stats, "/api/v1/event (Page View)");
    assert.ok(num(accepted, "Request Count") > 0, `nothing accepted\n${explain(r)}`);
    assert.ok(num(accepted, "Request Count") <= 100, `more than 100 accepted in a minute\n${explain(r)}`);
    assert.equal(r.code, 0, explain(r));
  });

  test("an existing FREE key from LOAD_TEST_API_KEY: plan learnt from X-RateLimit-Limit", {
    skip,
  }, async () => {
    const res = await fetch(`${host}/api/v1/project`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({ name: "load_test_supplied_free", plan: "FREE" }),
    });
    assert.equal(res.status, 201);
    const { api_key: key } = (await res.json()) as { api_key: string };
    const r = await runLocust(
      host,
      path.join(tmp, "supplied"),
      ["-u", "10", "-r", "10", "SingleEventUser"],
      // the guide's form: a comma-separated list (with a repeat) in LOAD_TEST_API_KEY
      { LOAD_TEST_API_KEY: `${key},${key}` },
      8,
    );
    assert.doesNotMatch(r.output, /Created 4 projects/, "no project is created when keys are given");
    const limited = byName(r.stats, "/api/v1/event (rate limited: FREE)");
    assert.ok(limited && num(limited, "Request Count") > 0, explain(r));
    assert.equal(num(aggregated(r.stats), "Failure Count"), 0, explain(r));
    assert.equal(r.code, 0, explain(r));
  });

  test("429s well below the plan's limit are failures (fake server refusing after 3 requests)", {
    skip,
  }, async () => {
    const fake = await fakeServer("early", token);
    try {
      const r = await runLocust(
        fake.url,
        path.join(tmp, "early"),
        ["-u", "4", "-r", "4", "SingleEventUser"],
        { SECRET_TOKEN: token },
        8,
      );
      const limitedRows = r.stats.filter((s) => s.Name?.includes("(rate limited: "));
      assert.ok(limitedRows.length > 0, `no 429 row\n${explain(r)}`);
      for (const row of limitedRows) {
        assert.equal(
          row["Failure Count"],
          row["Request Count"],
          `every early 429 is a failure\n${explain(r)}`,
        );
      }
      assert.ok(
        r.failures.some((f) => f.Name?.includes("(rate limited: ") && /well below the/.test(f.Error ?? "")),
        `no "429 well below the limit" failure\n${explain(r)}`,
      );
      assert.notEqual(r.code, 0, "Locust exits non-zero on failures");
    } finally {
      fake.close();
    }
  });

  test("2xx far above the plan's limit are failures (fake server that never refuses)", { skip }, async () => {
    const fake = await fakeServer("nolimit", token);
    try {
      const r = await runLocust(
        fake.url,
        path.join(tmp, "nolimit"),
        ["-u", "10", "-r", "10", "SingleEventUser"],
        { SECRET_TOKEN: token, LOAD_TEST_PLAN: "FREE" },
        8,
      );
      const accepted = byName(r.stats, "/api/v1/event (Page View)");
      assert.ok(num(accepted, "Request Count") > 125, `too little traffic to judge\n${explain(r)}`);
      assert.ok(num(accepted, "Failure Count") > 0, `an unlimited FREE key went unnoticed\n${explain(r)}`);
      assert.ok(
        r.failures.some((f) => /rate limit not enforced/.test(f.Error ?? "")),
        `no "rate limit not enforced" failure\n${explain(r)}`,
      );
    } finally {
      fake.close();
    }
  });

  test("distributed: one master creates the projects once, two workers share the keys and counts", {
    skip,
  }, async () => {
    const masterPort = await freePort();
    const csv = path.join(tmp, "dist");
    const env = locustEnv({ SECRET_TOKEN: token, LOAD_TEST_PLAN: "FREE" });
    const master = start(
      UV!,
      [
        "run",
        "locust",
        "-f",
        LOCUSTFILE,
        `--host=${host}`,
        "--master",
        "--master-bind-host=127.0.0.1",
        `--master-bind-port=${masterPort}`,
        "--headless",
        "-u",
        "10",
        "-r",
        "10",
        "-t",
        "15s",
        "--expect-workers",
        "2",
        "--expect-workers-max-wait",
        "40",
        "--csv",
        csv,
        "--only-summary",
        "SingleEventUser",
      ],
      env,
      90_000,
    );
    const workerArgs = [
      "run",
      "locust",
      "-f",
      LOCUSTFILE,
      "--worker",
      "--master-host=127.0.0.1",
      `--master-port=${masterPort}`,
    ];
    // workers get no SECRET_TOKEN: they must receive the keys from the master
    const workerEnv = locustEnv({});
    const workers = [start(UV!, workerArgs, workerEnv, 90_000), start(UV!, workerArgs, workerEnv, 90_000)];
    const code = await master.done;
    await Promise.all(workers.map((w) => w.done));
    const { stats, failures } = readResults(csv);
    const r: LocustResult = { code, output: master.output(), stats, failures };
    const all = [master, ...workers].map((p) => p.output()).join("\n");
    assert.equal(
      (all.match(/Created 4 projects/g) ?? []).length,
      1,
      `projects created once\n${all.slice(-3000)}`,
    );
    for (const w of workers) assert.match(w.output(), /Received 4 write keys from the master/);
    const limited = byName(stats, "/api/v1/event (rate limited: FREE)");
    assert.ok(limited && num(limited, "Request Count") > 0, `no 429 on the FREE key\n${explain(r)}`);
    assert.equal(
      num(aggregated(stats), "Failure Count"),
      0,
      `failures with 2 workers\n${explain(r)}\n${all.slice(-3000)}`,
    );
    assert.ok(num(byName(stats, "/api/v1/event (Page View)"), "Request Count") <= 100, explain(r));
    assert.equal(code, 0, explain(r));
  });
});

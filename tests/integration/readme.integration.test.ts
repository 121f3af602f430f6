import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { type ChildServer, startChildServer } from "../helpers/child-server.js";
import { ensureFreshBuild } from "../helpers/services.js";

// Every curl example of the README's quick start, HTTP API and SDK sections is run against a real,
// listening server, in order, through the HTTP path curl would take (the command is parsed, not
// spawned, so the test needs no curl). Each must answer the status after its "# ->" line, with
// every field that line shows.

const README = readFileSync(fileURLToPath(new URL("../../README.md", import.meta.url)), "utf8");
const SECTIONS = ["Quick start", "The HTTP API", "Segment and PostHog SDKs"];
const TOKEN = "readme-example-secret-0123456789";

interface Example {
  command: string;
  status: number;
  /** Every "key": of the documented answer. */
  fields: string[];
  line: number;
}

/** The ```bash blocks of a `## ` section. */
function bashBlocks(section: string): { text: string; line: number }[] {
  const start = README.indexOf(`\n## ${section}\n`);
  assert.ok(start >= 0, `README section "${section}"`);
  const end = README.indexOf("\n## ", start + 1);
  const body = README.slice(start, end < 0 ? undefined : end);
  const offset = README.slice(0, start).split("\n").length;
  return [...body.matchAll(/```bash\n([\s\S]*?)```/g)].map((m) => ({
    text: m[1]!,
    line: offset + body.slice(0, m.index).split("\n").length,
  }));
}

/** The curl commands of a block, each with the expectation on the "# ->" line after it. */
function examples(block: { text: string; line: number }): Example[] {
  const lines = block.text.split("\n");
  const found: Example[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (!lines[i]!.startsWith("curl ")) continue;
    const first = i;
    let command = lines[i]!;
    // The command goes on while a line ends with a backslash or a quote is open.
    while (i + 1 < lines.length && (command.endsWith("\\") || openQuote(command)))
      command += `\n${lines[++i]}`;
    const expectation = lines[i + 1] ?? "";
    const match = /^# -> (\d{3})\b(.*)$/.exec(expectation);
    assert.ok(
      match,
      `README line ${block.line + first + 1}: a curl example says what it answers ("# -> <status> ...")`,
    );
    found.push({
      command,
      status: Number(match[1]),
      fields: [...match[2]!.matchAll(/"([A-Za-z_]+)":/g)].map((m) => m[1]!),
      line: block.line + first + 1,
    });
  }
  return found;
}

function openQuote(text: string): boolean {
  let quote: string | undefined;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quote === "'") {
      if (c === "'") quote = undefined;
    } else if (quote === '"') {
      if (c === "\\") i++;
      else if (c === '"') quote = undefined;
    } else if (c === "\\") i++;
    else if (c === "'" || c === '"') quote = c;
  }
  return quote !== undefined;
}

/** Shell words as bash reads them: quotes, backslash-newline, and $VAR / ${VAR} from `vars`. */
function shellWords(command: string, vars: Record<string, string>): string[] {
  const words: string[] = [];
  let word: string | undefined;
  const expand = (text: string, at: number): [string, number] => {
    const match = /^\$(?:\{([A-Za-z_]\w*)\}|([A-Za-z_]\w*))/.exec(text.slice(at));
    if (!match) return ["$", at + 1];
    const name = (match[1] ?? match[2])!;
    assert.ok(name in vars, `the README example uses $${name}, which the test does not know`);
    return [vars[name]!, at + match[0].length];
  };
  for (let i = 0; i < command.length; ) {
    const c = command[i]!;
    if (c === "\\" && command[i + 1] === "\n") {
      i += 2;
    } else if (/\s/.test(c)) {
      if (word !== undefined) words.push(word);
      word = undefined;
      i++;
    } else if (c === "'") {
      const close = command.indexOf("'", i + 1);
      word = (word ?? "") + command.slice(i + 1, close);
      i = close + 1;
    } else if (c === '"') {
      word ??= "";
      i++;
      while (command[i] !== '"') {
        if (command[i] === "\\" && '"\\$`'.includes(command[i + 1]!)) {
          word += command[i + 1];
          i += 2;
        } else if (command[i] === "$") {
          const [value, next] = expand(command, i);
          word += value;
          i = next;
        } else word += command[i++];
      }
      i++;
    } else if (c === "$") {
      const [value, next] = expand(command, i);
      word = (word ?? "") + value;
      i = next;
    } else if (c === "\\") {
      word = (word ?? "") + command[i + 1];
      i += 2;
    } else {
      word = (word ?? "") + c;
      i++;
    }
  }
  if (word !== undefined) words.push(word);
  return words;
}

/** The request curl would send for these words (the options the README uses, nothing else). */
function curlRequest(words: string[]): { method: string; url: string; headers: Headers; body?: string } {
  assert.equal(words[0], "curl");
  const headers = new Headers();
  let method: string | undefined;
  let url: string | undefined;
  let body: string | undefined;
  for (let i = 1; i < words.length; i++) {
    const word = words[i]!;
    if (word === "-X" || word === "--request") method = words[++i];
    else if (word === "-H" || word === "--header") {
      const header = words[++i]!;
      const colon = header.indexOf(":");
      headers.set(header.slice(0, colon).trim(), header.slice(colon + 1).trim());
    } else if (word === "-u" || word === "--user") {
      // Basic auth, as curl sends it: "user:password" in base64.
      headers.set("authorization", `Basic ${Buffer.from(words[++i]!).toString("base64")}`);
    } else if (["-d", "--data", "--data-raw", "--data-binary"].includes(word)) body = words[++i];
    else if (["-s", "-S", "-i", "--silent", "--show-error", "--fail"].includes(word)) continue;
    else if (word.startsWith("-")) assert.fail(`curl option ${word} is not understood by this test`);
    else url = word;
  }
  assert.ok(url, "a URL");
  // As curl: -d makes a POST with a form content type unless the command names another.
  if (body !== undefined && !headers.has("content-type"))
    headers.set("content-type", "application/x-www-form-urlencoded");
  return { method: method ?? (body === undefined ? "GET" : "POST"), url, headers, body };
}

/** Every key of a JSON value, at any depth (array elements included). */
function keysOf(value: unknown, into = new Set<string>()): Set<string> {
  if (Array.isArray(value)) for (const item of value) keysOf(item, into);
  else if (value && typeof value === "object") {
    for (const [key, inner] of Object.entries(value)) {
      into.add(key);
      keysOf(inner, into);
    }
  }
  return into;
}

let server: ChildServer;
let dataDir: string;
before(async () => {
  ensureFreshBuild();
  dataDir = mkdtempSync(join(tmpdir(), "tidemark-readme-"));
  server = await startChildServer({ SECRET_TOKEN: TOKEN, TIDEMARK_DATA_DIR: dataDir });
});
after(async () => {
  server.process.kill("SIGTERM");
  await server.exited;
  rmSync(dataDir, { recursive: true, force: true });
});

test("every curl example of the README's quick start, HTTP API and SDK sections answers as documented", async () => {
  const all = SECTIONS.flatMap((section) => bashBlocks(section).flatMap(examples));
  const kinds = new Set(all.flatMap((e) => [...e.command.matchAll(/"kind": "(\w+)"/g)].map((m) => m[1]!)));
  assert.deepEqual(
    [...kinds].sort(),
    ["events", "funnel", "retention", "top_events", "top_values", "trends"],
    "one example per query kind",
  );
  assert.ok(
    all.some((e) => e.command.includes("/api/v1/event/batch")),
    "a batch example",
  );

  // What the first example (creating a project) answers fills in the placeholders of the rest.
  const placeholders: [string, string][] = [["http://localhost:8000", server.url]];
  for (const example of all) {
    let command = example.command;
    for (const [from, to] of placeholders) command = command.replaceAll(from, to);
    assert.ok(
      !/wk_dev_\.\.\.|rk_dev_\.\.\./.test(command),
      `README line ${example.line}: keys before a project exists`,
    );
    const request = curlRequest(shellWords(command, { SECRET_TOKEN: TOKEN }));
    const response = await fetch(request.url, {
      method: request.method,
      headers: request.headers,
      body: request.body,
    });
    const text = await response.text();
    const label = `README line ${example.line}: ${request.method} ${new URL(request.url).pathname}`;
    assert.equal(response.status, example.status, `${label} answered ${response.status} ${text}`);
    const body: unknown = text === "" ? undefined : JSON.parse(text);
    const keys = keysOf(body);
    for (const field of example.fields) assert.ok(keys.has(field), `${label}: no "${field}" in ${text}`);
    if (request.url.endsWith("/api/v1/project") && request.method === "POST") {
      const created = body as { api_key: string; read_key: string };
      placeholders.push(["wk_dev_...", created.api_key], ["rk_dev_...", created.read_key]);
    }
  }
});

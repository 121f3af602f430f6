import assert from "node:assert/strict";
import { connect } from "node:net";
import { after, before, describe, test } from "node:test";
import { type RawResponse, rawRequest } from "../helpers/raw-http.js";
import { startTestTidemark, type TestTidemark } from "../helpers/tidemark.js";

// A string no answer may contain: it is put into the URL, headers or body of hostile requests.
const MARK = "zqxmarkzqx";

let tidemark: TestTidemark;
let project: { id: string; api_key: string; read_key: string };
before(async () => {
  tidemark = await startTestTidemark({ TIDEMARK_MAX_BODY_BYTES: "2048" });
  project = await tidemark.createProject("ENTERPRISE");
});
after(() => tidemark.close());

/** A raw HTTP/1.1 request with the given head lines and body; the connection closes after it. */
function http(requestLine: string, headers: string[] = [], body = ""): string {
  return `${requestLine}\r\n${[...headers, "Connection: close"].join("\r\n")}\r\n\r\n${body}`;
}
const admin = () => `Authorization: Bearer ${tidemark.token}`;
const json = (body: string) => [
  "Content-Type: application/json",
  `Content-Length: ${Buffer.byteLength(body)}`,
];

/** The one error shape: {"error": {"code", "message", "details"?}}, nothing echoed, no internals. */
function assertErrorShape(response: RawResponse, status: number, code: string, label: string): void {
  assert.equal(response.status, status, `${label}: status (${response.text.slice(0, 300)})`);
  assert.match(response.headers["content-type"] ?? "", /^application\/json/, `${label}: content type`);
  const body = JSON.parse(response.body) as Record<string, unknown>;
  assert.deepEqual(Object.keys(body), ["error"], `${label}: only "error" at the top`);
  const error = body.error as Record<string, unknown>;
  assert.equal(error.code, code, `${label}: code`);
  assert.equal(typeof error.message, "string", `${label}: message`);
  for (const key of Object.keys(error))
    assert.ok(["code", "message", "details"].includes(key), `${label}: ${key}`);
  assert.ok(!response.body.includes(MARK), `${label}: the answer echoes the request: ${response.body}`);
  assert.ok(
    !/stack|FST_|statusCode|node_modules/.test(response.body),
    `${label}: internals: ${response.body}`,
  );
}

describe("errors answered outside the routes have the JSON error shape", () => {
  test("what Node's HTTP parser refuses: bad request lines, framing and headers (400, 431)", async () => {
    const cases: [string, string, number, string][] = [
      ["garbage request line", `GARBAGE ${MARK}\r\n\r\n`, 400, "bad_request"],
      ["unknown HTTP version", http(`GET /${MARK} HTTP/9.9`, ["Host: x"]), 400, "bad_request"],
      ["unknown method", http(`FOO /health HTTP/1.1`, ["Host: x"]), 400, "bad_request"],
      ["HTTP/2 preface on HTTP/1", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, "bad_request"],
      [
        "Content-Length not a number",
        http("POST /api/v1/event HTTP/1.1", ["Host: x", "Content-Length: abc"]),
        400,
        "bad_request",
      ],
      [
        "two Content-Lengths",
        http("POST /api/v1/event HTTP/1.1", ["Host: x", "Content-Length: 2", "Content-Length: 3"], "{}"),
        400,
        "bad_request",
      ],
      [
        "Content-Length with Transfer-Encoding",
        http(
          "POST /api/v1/event HTTP/1.1",
          ["Host: x", "Content-Length: 3", "Transfer-Encoding: chunked"],
          "0\r\n\r\n",
        ),
        400,
        "bad_request",
      ],
      [
        "malformed chunk",
        http(
          "POST /api/v1/event HTTP/1.1",
          ["Host: x", "Transfer-Encoding: chunked"],
          `zz\r\n${MARK}\r\n0\r\n\r\n`,
        ),
        400,
        "bad_request",
      ],
      [
        "control character in a header name",
        http("GET /health HTTP/1.1", ["Host: x", `X-${MARK}\x01: b`]),
        400,
        "bad_request",
      ],
      [
        "headers over the size limit",
        http("GET /health HTTP/1.1", ["Host: x", `X-A: ${MARK.repeat(2000)}`]),
        431,
        "headers_too_large",
      ],
      ["a 20 KB URL", http(`GET /${MARK.repeat(2000)} HTTP/1.1`, ["Host: x"]), 431, "headers_too_large"],
    ];
    for (const [label, data, status, code] of cases) {
      assertErrorShape(await rawRequest(tidemark.url, data), status, code, label);
    }
  });

  test("what Fastify answers while routing: long path parameters (414), bad percent-encodings, no Host", async () => {
    const longId = await rawRequest(
      tidemark.url,
      http(`GET /api/v1/project/${MARK.repeat(15)} HTTP/1.1`, ["Host: x", admin()]),
    );
    assertErrorShape(longId, 414, "uri_too_long", "an :id over 100 characters");
    for (const path of [
      `/api/v1/project/%zz${MARK}`,
      `/%zz${MARK}`,
      `/api/v1/project/${MARK}%E0%A4%A/stats`,
    ]) {
      const response = await rawRequest(tidemark.url, http(`GET ${path} HTTP/1.1`, ["Host: x", admin()]));
      assertErrorShape(response, 400, "bad_request", path);
    }
    const noHost = await rawRequest(tidemark.url, http(`GET /${MARK} HTTP/1.1`));
    assertErrorShape(noHost, 400, "bad_request", "HTTP/1.1 without Host");
    const expect = await rawRequest(
      tidemark.url,
      http("POST /api/v1/event HTTP/1.1", ["Host: x", `Expect: ${MARK}`, "Content-Length: 0"]),
    );
    assertErrorShape(expect, 417, "expectation_failed", "an Expect other than 100-continue");
    const connect = await rawRequest(
      tidemark.url,
      http(`CONNECT ${MARK}.example:443 HTTP/1.1`, [`Host: ${MARK}.example:443`]),
    );
    assertErrorShape(connect, 405, "method_not_allowed", "CONNECT");
  });

  test("unknown routes are 404 and known paths with another method 405 with Allow; nothing echoed", async () => {
    for (const method of ["GET", "POST", "HEAD", "DELETE"]) {
      const response = await rawRequest(
        tidemark.url,
        http(`${method} /${MARK}/<script>?q=${MARK} HTTP/1.1`, ["Host: x", "Content-Length: 0"]),
      );
      if (method === "HEAD") assert.equal(response.status, 404);
      else assertErrorShape(response, 404, "not_found", `${method} unknown route`);
    }
    const put = await rawRequest(
      tidemark.url,
      http("PUT /api/v1/event HTTP/1.1", ["Host: x", "Content-Length: 0"]),
    );
    assertErrorShape(put, 405, "method_not_allowed", "PUT /api/v1/event");
    assert.equal(put.headers.allow, "OPTIONS, POST");
    const deleteStats = await rawRequest(
      tidemark.url,
      http(`DELETE /api/v1/project/${project.id}/stats HTTP/1.1`, ["Host: x", admin()]),
    );
    assertErrorShape(deleteStats, 405, "method_not_allowed", "DELETE .../stats");
    assert.match(deleteStats.headers.allow ?? "", /GET/);
    const postMetrics = await rawRequest(
      tidemark.url,
      http("POST /metrics HTTP/1.1", ["Host: x", "Content-Length: 0"]),
    );
    assertErrorShape(postMetrics, 405, "method_not_allowed", "POST /metrics");
  });

  test("body errors raised by the framework: content type, size, JSON, encoding", async () => {
    const big = `{"name": "${MARK.repeat(300)}"}`;
    const cases: [string, string, number, string][] = [
      [
        "XML body",
        http(
          "POST /api/v1/project HTTP/1.1",
          ["Host: x", admin(), "Content-Type: application/xml", "Content-Length: 14"],
          `<${MARK}/>`,
        ),
        415,
        "unsupported_media_type",
      ],
      [
        "no content type",
        http("POST /api/v1/project HTTP/1.1", ["Host: x", admin(), "Content-Length: 14"], `<${MARK}/>`),
        415,
        "unsupported_media_type",
      ],
      [
        "multipart",
        http(
          "POST /api/v1/project HTTP/1.1",
          ["Host: x", admin(), "Content-Type: multipart/form-data; boundary=x", "Content-Length: 2"],
          "{}",
        ),
        415,
        "unsupported_media_type",
      ],
      [
        "body over the limit (Content-Length)",
        http("POST /api/v1/project HTTP/1.1", ["Host: x", admin(), ...json(big)], big),
        413,
        "payload_too_large",
      ],
      [
        "body over the limit (chunked)",
        http(
          "POST /api/v1/event HTTP/1.1",
          [
            "Host: x",
            `Authorization: Bearer ${project.api_key}`,
            "Content-Type: application/json",
            "Transfer-Encoding: chunked",
          ],
          `bb8\r\n${"a".repeat(3000)}\r\n0\r\n\r\n`,
        ),
        413,
        "payload_too_large",
      ],
      [
        "invalid JSON",
        http("POST /api/v1/project HTTP/1.1", ["Host: x", admin(), ...json(`{${MARK}`)], `{${MARK}`),
        400,
        "invalid_json",
      ],
      [
        "empty JSON body",
        http("POST /api/v1/project HTTP/1.1", ["Host: x", admin(), ...json("")]),
        400,
        "invalid_json",
      ],
      [
        "corrupt gzip",
        http(
          "POST /api/v1/project HTTP/1.1",
          ["Host: x", admin(), "Content-Encoding: gzip", ...json(MARK)],
          MARK,
        ),
        415,
        "unsupported_media_type",
      ],
      [
        "corrupt deflate",
        http(
          "POST /api/v1/project HTTP/1.1",
          ["Host: x", admin(), "Content-Encoding: deflate", ...json(MARK)],
          MARK,
        ),
        415,
        "unsupported_media_type",
      ],
      [
        "unknown encoding",
        http(
          "POST /api/v1/project HTTP/1.1",
          ["Host: x", admin(), "Content-Encoding: br", ...json("{}")],
          "{}",
        ),
        415,
        "unsupported_media_type",
      ],
      [
        "text/plain that is not JSON",
        http(
          "POST /api/v1/query HTTP/1.1",
          [
            "Host: x",
            `Authorization: Bearer ${project.read_key}`,
            "Content-Type: text/plain",
            `Content-Length: ${MARK.length}`,
          ],
          MARK,
        ),
        400,
        "invalid_json",
      ],
    ];
    for (const [label, data, status, code] of cases) {
      assertErrorShape(await rawRequest(tidemark.url, data), status, code, label);
    }
  });

  test("a project id that is not a uuid is 404 on every admin route, and is not echoed", async () => {
    const ids = [MARK, `${MARK}%00`, `${MARK}'--`, "00000000-0000-0000-0000-00000000000g"];
    for (const id of ids) {
      for (const [method, path, body] of [
        ["GET", `/api/v1/project/${id}`, ""],
        ["PATCH", `/api/v1/project/${id}`, '{"plan": "PRO"}'],
        ["DELETE", `/api/v1/project/${id}`, ""],
        ["POST", `/api/v1/project/${id}/rotate-keys`, ""],
        ["GET", `/api/v1/project/${id}/stats`, ""],
      ] as const) {
        const headers = ["Host: x", admin(), ...(body ? json(body) : ["Content-Length: 0"])];
        const response = await rawRequest(tidemark.url, http(`${method} ${path} HTTP/1.1`, headers, body));
        assertErrorShape(response, 404, "not_found", `${method} ${path}`);
      }
    }
    // Without a key the stats route says 401 whatever the id, before looking at it.
    const anonymous = await rawRequest(
      tidemark.url,
      http(`GET /api/v1/project/${MARK}/stats HTTP/1.1`, ["Host: x"]),
    );
    assertErrorShape(anonymous, 401, "unauthorized", "stats without a key");
  });

  test("the query route with the admin token: project_id missing, not a uuid, repeated", async () => {
    const spec = '{"kind": "events"}';
    const ask = (query: string) =>
      rawRequest(
        tidemark.url,
        http(`POST /api/v1/query${query} HTTP/1.1`, ["Host: x", admin(), ...json(spec)], spec),
      );
    assertErrorShape(await ask(""), 400, "invalid_query", "no project_id");
    assertErrorShape(await ask("?project_id="), 400, "invalid_query", "empty project_id");
    assertErrorShape(await ask(`?project_id=${MARK}`), 404, "not_found", "project_id not a uuid");
    assertErrorShape(await ask(`?project_id=%zz${MARK}`), 404, "not_found", "project_id badly encoded");
    assertErrorShape(
      await ask(`?project_id=${project.id}&project_id=${project.id}`),
      400,
      "invalid_query",
      "twice",
    );
    const ok = await ask(`?project_id=${project.id}`);
    assert.equal(ok.status, 200, ok.body);
  });

  test("OPTIONS that is not a preflight is answered, not with a text/plain 400", async () => {
    for (const path of ["/api/v1/event", "*", `/${MARK}`]) {
      const response = await rawRequest(tidemark.url, http(`OPTIONS ${path} HTTP/1.1`, ["Host: x"]));
      assert.equal(response.status, 204, `${path}: ${response.text}`);
      assert.ok(!response.body.includes("Preflight"));
    }
  });

  test("static files of /docs: missing and traversal attempts are 404 in the JSON shape", async () => {
    for (const path of [
      `/docs/static/${MARK}.js`,
      "/docs/static/../../package.json",
      "/docs/static/%2e%2e/%2e%2e/package.json",
    ]) {
      const response = await rawRequest(tidemark.url, http(`GET ${path} HTTP/1.1`, ["Host: x"]));
      assertErrorShape(response, 404, "not_found", path);
    }
  });
});

describe("a malformed request pipelined after a good one", () => {
  test("the good one is answered first, then the error in the JSON shape, then the connection closes", async () => {
    const { port } = new URL(tidemark.url);
    for (const [bad, status] of [
      [`GARBAGE ${MARK}\r\n\r\n`, 400],
      [`GET /health HTTP/1.1\r\nHost: x\r\nX-A: ${MARK.repeat(2000)}\r\n\r\n`, 431],
    ] as const) {
      const text = await new Promise<string>((resolve) => {
        const socket = connect(Number(port), "127.0.0.1", () =>
          socket.write(`GET /ready HTTP/1.1\r\nHost: x\r\n\r\n${bad}`),
        );
        let out = "";
        socket.on("data", (chunk: Buffer) => {
          out += chunk.toString("latin1");
        });
        socket.on("close", () => resolve(out));
        socket.on("error", () => undefined);
      });
      const answers = text.split(/(?=HTTP\/1\.1 \d{3} )/);
      assert.equal(answers.length, 2, text);
      assert.match(answers[0]!, /^HTTP\/1\.1 200 /);
      assert.match(answers[0]!, /"status":"ready"/);
      const error = answers[1]!;
      assert.ok(error.startsWith(`HTTP/1.1 ${status} `), error);
      const body = JSON.parse(error.slice(error.indexOf("\r\n\r\n") + 4)) as { error: { code: string } };
      assert.equal(typeof body.error.code, "string");
      assert.ok(!error.includes(MARK));
    }
  });
});

describe("a server that is shutting down", () => {
  test("answers new requests 503 with Retry-After in the JSON shape, /ready says so", async () => {
    const draining = await startTestTidemark();
    try {
      draining.running.app?.beginShutdown();
      const response = await rawRequest(
        draining.url,
        http("GET /api/v1/project HTTP/1.1", ["Host: x", `Authorization: Bearer ${draining.token}`]),
      );
      assertErrorShape(response, 503, "unavailable", "while shutting down");
      assert.equal(response.headers["retry-after"], "1");
      const ready = await draining.request("GET", "/ready");
      assert.equal(ready.status, 503);
      assert.equal(ready.body.status, "shutting_down");
    } finally {
      await draining.close();
    }
  });
});

import assert from "node:assert/strict";
import type { Socket } from "node:net";
import { test } from "node:test";
import type { FastifyBaseLogger } from "fastify";
import pino from "pino";
import { clientErrorHandler } from "../../src/api/error-handler.js";

/** A socket that records what is written to it. */
function fakeSocket(): Socket & { written: string } {
  const socket = {
    written: "",
    writable: true,
    destroyed: false,
    write(data: string) {
      socket.written += data;
      return true;
    },
    destroy() {
      socket.destroyed = true;
      return socket;
    },
  };
  return socket as unknown as Socket & { written: string };
}

const errorWithCode = (code: string) => Object.assign(new Error(code), { code });

test("the raw socket answers of the HTTP parser use the JSON error shape (408, 431, 400)", () => {
  const handle = clientErrorHandler(pino({ level: "silent" }) as FastifyBaseLogger);
  for (const [code, status, appCode] of [
    ["ERR_HTTP_REQUEST_TIMEOUT", 408, "request_timeout"],
    ["HPE_HEADER_OVERFLOW", 431, "headers_too_large"],
    ["HPE_INVALID_METHOD", 400, "bad_request"],
  ] as const) {
    const socket = fakeSocket();
    handle(errorWithCode(code), socket);
    assert.ok(socket.written.startsWith(`HTTP/1.1 ${status} `), socket.written);
    const body = JSON.parse(socket.written.slice(socket.written.indexOf("\r\n\r\n") + 4));
    assert.equal(body.error.code, appCode);
    assert.ok(socket.destroyed);
  }
  const reset = fakeSocket();
  handle(errorWithCode("ECONNRESET"), reset);
  assert.equal(reset.written, "", "a reset connection is not answered");
});

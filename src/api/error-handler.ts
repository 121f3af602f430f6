import { type IncomingMessage, type Server, type ServerResponse, STATUS_CODES } from "node:http";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import type {
  FastifyBaseLogger,
  FastifyError,
  FastifyInstance,
  FastifyReply,
  FastifyRequest,
  RouteOptions,
} from "fastify";
import { AppError, ERRORS, type ErrorCode, type Problem } from "../core/errors.js";

/** Fastify's own errors, mapped to the registry. Anything else unknown is a 500. */
const FASTIFY_CODES: Record<string, ErrorCode> = {
  FST_ERR_CTP_BODY_TOO_LARGE: "payload_too_large",
  FST_ERR_CTP_INVALID_MEDIA_TYPE: "unsupported_media_type",
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: "validation_failed",
  FST_ERR_CTP_EMPTY_JSON_BODY: "invalid_json",
  FST_ERR_CTP_INVALID_JSON_BODY: "invalid_json",
  FST_ERR_VALIDATION: "validation_failed",
  FST_ERR_BAD_URL: "bad_request",
  FST_ERR_MAX_PARAM_LENGTH: "uri_too_long",
  FST_ERR_NOT_FOUND: "not_found",
};

/** Messages for mapped errors whose Fastify message would echo the request (the URL). */
const FASTIFY_MESSAGES: Record<string, string> = {
  FST_ERR_BAD_URL: "The URL is not valid: a percent-encoding (%xx) is malformed",
  FST_ERR_MAX_PARAM_LENGTH: "A path segment of the URL is too long",
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: "The body's size does not match its Content-Length",
};

/**
 * Errors with a 4xx status and no code of ours (raised by plugins, such as the static files of
 * /docs), by status. Any other status is a 500.
 */
const BY_STATUS: Record<number, ErrorCode> = {
  400: "bad_request",
  // The static files of /docs refuse paths that climb out of their folder with a 403; to the
  // client such a file simply does not exist.
  403: "not_found",
  404: "not_found",
  405: "method_not_allowed",
  408: "request_timeout",
  413: "payload_too_large",
  414: "uri_too_long",
  415: "unsupported_media_type",
  431: "headers_too_large",
};

/** Stream errors a request body raises when its client goes away before sending all of it. */
const ABORT_CODES = new Set(["ECONNRESET", "ECONNABORTED", "EPIPE", "ERR_STREAM_PREMATURE_CLOSE"]);

function fromFastify(error: FastifyError): AppError | undefined {
  if (error.validation) {
    const problems: Problem[] = error.validation.map((v) => ({
      field:
        v.instancePath.replace(/^\//, "").replaceAll("/", ".") ||
        (typeof v.params?.missingProperty === "string" ? v.params.missingProperty : "") ||
        "(body)",
      message: v.message ?? "is not valid",
    }));
    return new AppError("validation_failed", {
      message: `The ${error.validationContext ?? "body"} is not valid`,
      details: problems,
    });
  }
  const code = error.code ? FASTIFY_CODES[error.code] : undefined;
  if (code) return new AppError(code, { message: error.code ? FASTIFY_MESSAGES[error.code] : undefined });
  if (error instanceof SyntaxError || (error.statusCode === 400 && /JSON/i.test(error.message))) {
    return new AppError("invalid_json");
  }
  // Gunzip of a corrupt body.
  if (error.code === "Z_DATA_ERROR" || error.code === "Z_BUF_ERROR") {
    return new AppError("unsupported_media_type", {
      message: "The body does not decode with its Content-Encoding",
    });
  }
  const byStatus = error.statusCode !== undefined ? BY_STATUS[error.statusCode] : undefined;
  return byStatus ? new AppError(byStatus) : undefined;
}

/**
 * True when the error is the request body's stream failing because its client left. A reset on
 * a backend connection has the same code, so the request's own stream must have been cut too.
 */
function isClientAbort(error: unknown, request: FastifyRequest | undefined): boolean {
  if (!request || !(error instanceof Error)) return false;
  const code = (error as NodeJS.ErrnoException).code;
  const raw = request.raw;
  return (
    (ABORT_CODES.has(code ?? "") || error.message === "aborted") &&
    (raw.readableAborted || raw.destroyed || raw.socket?.destroyed === true)
  );
}

/** Turns any error into the one JSON error shape; never leaks a stack or internal message. */
export function errorBody(error: AppError): {
  error: { code: ErrorCode; message: string; details?: readonly Problem[] };
} {
  return {
    error: {
      code: error.code,
      message: error.message,
      ...(error.details && error.details.length > 0 ? { details: error.details } : {}),
    },
  };
}

/**
 * Any error as an AppError: registry errors as they are, Fastify's mapped, a body cut short by
 * its client as `client_aborted` (given the request), the rest internal.
 */
export function toAppError(raw: unknown, request?: FastifyRequest): AppError {
  if (raw instanceof AppError) return raw;
  if (isClientAbort(raw, request)) return new AppError("client_aborted");
  return (raw instanceof Error && fromFastify(raw as FastifyError)) || new AppError("internal");
}

/** Logs an error by what it says about the server: 5xx are faults, 4xx are the client's. */
function logError(log: FastifyBaseLogger, error: AppError, raw: unknown): void {
  if (error.code === "client_aborted") log.info({ code: error.code }, "client left before its body was read");
  else if (error.status >= 500) log.error({ err: raw, code: error.code }, "request failed");
  else log.warn({ code: error.code, reason: error.message }, "request refused");
}

function sendError(request: FastifyRequest, reply: FastifyReply, raw: unknown): void {
  const error = toAppError(raw, request);
  logError(request.log, error, raw);
  if (error.retryAfter !== undefined) reply.header("Retry-After", String(error.retryAfter));
  void reply.status(error.status).send(errorBody(error));
}

/**
 * Fastify's `frameworkErrors` option: errors found while routing, before any hook (a malformed
 * percent-encoding, a path parameter over `maxParamLength`). Fastify's own answer echoes the URL.
 */
export function frameworkErrors(error: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  sendError(request, reply, error);
}

/**
 * Fastify's `clientErrorHandler` option: what Node's HTTP parser refuses before there is a
 * request (a malformed request line or header, headers over the size limit, a timeout). The
 * answer is written on the raw socket, in the same JSON shape as every other error.
 */
export function clientErrorHandler(log: FastifyBaseLogger): (error: Error, socket: Socket) => void {
  return (error, socket) => {
    const code = (error as NodeJS.ErrnoException).code;
    // A reset connection has nobody to answer.
    if (code === "ECONNRESET" || socket.destroyed) return;
    const appError = new AppError(
      code === "HPE_HEADER_OVERFLOW"
        ? "headers_too_large"
        : code === "ERR_HTTP_REQUEST_TIMEOUT"
          ? "request_timeout"
          : "bad_request",
    );
    log.warn({ code: appError.code, reason: code }, "request refused by the HTTP parser");
    // A response may be on its way on this connection (Node's own handler looks at the same
    // field). If its request was read whole, the error is in a later, pipelined request: answer
    // it after that response, not before or inside it. Otherwise the error is in the body of the
    // request being answered: answer the error instead, unless that answer has begun.
    const inFlight = (socket as Socket & { _httpMessage?: ServerResponse })._httpMessage;
    if (inFlight && !inFlight.writableFinished) {
      if (inFlight.req.complete) {
        inFlight.once("finish", () => answerOnSocket(socket, appError));
        inFlight.once("close", () => answerOnSocket(socket, appError));
        return;
      }
      if (inFlight.headersSent) {
        socket.destroy();
        return;
      }
    }
    answerOnSocket(socket, appError);
  };
}

/** Writes an error answer on a socket Node has not made a request of, then closes it. */
function answerOnSocket(socket: Duplex, error: AppError): void {
  if (socket.writable && !socket.destroyed) {
    const body = JSON.stringify(errorBody(error));
    socket.write(
      `HTTP/1.1 ${error.status} ${STATUS_CODES[error.status] ?? ""}\r\n` +
        "Content-Type: application/json; charset=utf-8\r\n" +
        `Content-Length: ${Buffer.byteLength(body)}\r\n` +
        `Connection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy();
}

/**
 * Requests Node's HTTP server answers without asking Fastify: an `Expect` other than
 * 100-continue (Node's 417 has no body) and `CONNECT` (Node drops the connection).
 */
function answerNodeOnlyRequests(app: FastifyInstance): void {
  const server = app.server as Server;
  server.on("checkExpectation", (_request: IncomingMessage, response: ServerResponse) => {
    const body = JSON.stringify(errorBody(new AppError("expectation_failed")));
    response.writeHead(417, {
      "Content-Type": "application/json; charset=utf-8",
      "Content-Length": Buffer.byteLength(body),
      Connection: "close",
    });
    response.end(body);
  });
  server.on("connect", (_request: IncomingMessage, socket: Duplex) => {
    answerOnSocket(socket, new AppError("method_not_allowed", { message: "CONNECT is not supported" }));
  });
}

/** A route's URL pattern as a regular expression over request paths. */
function routePattern(url: string): RegExp {
  const source = url
    .split(/(:[A-Za-z0-9_]+|\*)/)
    .map((part) => {
      if (part === "*") return ".*";
      if (part.startsWith(":")) return "[^/]+";
      return part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    })
    .join("");
  return new RegExp(`^${source}$`);
}

export function registerErrorHandler(app: FastifyInstance): void {
  answerNodeOnlyRequests(app);
  // Routes by path, so a known path with another method is a 405 naming the allowed methods.
  const routes: { pattern: RegExp; methods: string[] }[] = [];
  app.addHook("onRoute", (route: RouteOptions) => {
    // The CORS preflight route answers OPTIONS on every path; it says nothing about the path.
    if (route.url === "*" || route.url === "/*") return;
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    routes.push({ pattern: routePattern(route.url), methods });
  });

  app.setErrorHandler((raw: FastifyError, request: FastifyRequest, reply: FastifyReply) => {
    sendError(request, reply, raw);
  });

  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split("?")[0] ?? "";
    const allowed = new Set<string>();
    for (const route of routes) {
      if (route.pattern.test(path)) for (const method of route.methods) allowed.add(method);
    }
    // A route of this method that found nothing (a missing static file) is a plain 404.
    if (allowed.size > 0 && !allowed.has(request.method)) {
      allowed.add("OPTIONS");
      reply.header("Allow", [...allowed].sort().join(", "));
      sendError(
        request,
        reply,
        new AppError("method_not_allowed", { message: `Allowed: ${[...allowed].sort().join(", ")}` }),
      );
      return;
    }
    // The URL is not echoed: an error answer never carries what the client sent.
    sendError(
      request,
      reply,
      new AppError("not_found", { message: "No route matches this path; the API is described at /docs" }),
    );
  });
}

export { ERRORS };

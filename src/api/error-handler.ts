import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { AppError, ERRORS, type ErrorCode, type Problem } from "../core/errors.js";

/** Fastify's own errors, mapped to the registry. Anything else unknown is a 500. */
const FASTIFY_CODES: Record<string, ErrorCode> = {
  FST_ERR_CTP_BODY_TOO_LARGE: "payload_too_large",
  FST_ERR_CTP_INVALID_MEDIA_TYPE: "unsupported_media_type",
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: "validation_failed",
  FST_ERR_CTP_EMPTY_JSON_BODY: "invalid_json",
  FST_ERR_CTP_INVALID_JSON_BODY: "invalid_json",
  FST_ERR_VALIDATION: "validation_failed",
};

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
  if (code) return new AppError(code, { message: code === "validation_failed" ? error.message : undefined });
  if (error instanceof SyntaxError || (error.statusCode === 400 && /JSON/i.test(error.message))) {
    return new AppError("invalid_json");
  }
  if (error.statusCode === 413) return new AppError("payload_too_large");
  if (error.statusCode === 415) return new AppError("unsupported_media_type");
  // Gunzip of a corrupt body.
  if (
    (error as { code?: string }).code === "Z_DATA_ERROR" ||
    (error as { code?: string }).code === "Z_BUF_ERROR"
  ) {
    return new AppError("unsupported_media_type", { message: "The body is not valid gzip" });
  }
  return undefined;
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

/** Any error as an AppError: registry errors as they are, Fastify's mapped, the rest internal. */
export function toAppError(raw: unknown): AppError {
  if (raw instanceof AppError) return raw;
  return (raw instanceof Error && fromFastify(raw as FastifyError)) || new AppError("internal");
}

export function registerErrorHandler(app: FastifyInstance): void {
  app.setErrorHandler((raw: FastifyError, request: FastifyRequest, reply: FastifyReply) => {
    const error = toAppError(raw);
    if (error.status >= 500) request.log.error({ err: raw, code: error.code }, "request failed");
    else request.log.warn({ code: error.code, msg: error.message }, "request refused");
    if (error.retryAfter !== undefined) reply.header("Retry-After", String(error.retryAfter));
    void reply.status(error.status).send(errorBody(error));
  });
  app.setNotFoundHandler((request, reply) => {
    void reply
      .status(404)
      .send(errorBody(new AppError("not_found", { message: `No route ${request.method} ${request.url}` })));
  });
}

export { ERRORS };

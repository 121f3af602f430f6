import { gunzipSync } from "node:zlib";
import formbody from "@fastify/formbody";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { AppError } from "../../core/errors.js";
import { inexactIntegers } from "../../core/json-numbers.js";

/**
 * The bodies PostHog's SDKs send, read into JSON values for the routes of one Fastify scope:
 *
 * - JSON (`application/json`, or `text/plain` as posthog-js sends to avoid a CORS preflight);
 * - gzip, announced by `Content-Encoding` (posthog-node; src/api/body-parsing.ts inflates it for
 *   every route), by `?compression=gzip-js` (posthog-js before 1.2xx), or by nothing but the
 *   gzip magic bytes (current posthog-js sends a `text/plain` gzip body and no marker; a JSON text
 *   never starts with byte 0x1f, so the bytes alone are unambiguous);
 * - `application/x-www-form-urlencoded` with the JSON, base64-encoded, in `data` (posthog-js's
 *   `sendBeacon` on page unload, and its `compression=base64`), parsed by @fastify/formbody.
 *
 * Inflated bodies obey the same `TIDEMARK_MAX_BODY_BYTES` as every body: past it, a 413. `lz64`
 * (LZ-string, dropped by posthog-js in 2021) is refused with a 415 that says so.
 */
export async function registerPosthogBodies(scope: FastifyInstance, maxBodyBytes: number): Promise<void> {
  const parseJson = scope.getDefaultJsonParser("error", "error");
  const toJson = (request: FastifyRequest, bytes: Buffer): unknown => {
    const text = inflate(bytes, request, maxBodyBytes).toString("utf8");
    let parsed: unknown;
    let failure: Error | null = null;
    // Fastify's own JSON parser (synchronous), for its `__proto__` and `constructor` checks.
    parseJson(request, text, (error, value) => {
      failure = error;
      parsed = value;
    });
    if (failure) throw new AppError("invalid_json");
    const rounded = inexactIntegers(text);
    if (rounded.size > 0) request.inexactIntegers = rounded;
    return parsed;
  };

  scope.removeContentTypeParser(["application/json", "text/plain"]);
  // Any other content type (or none, as some beacons send) is read the same way: JSON or gzip.
  scope.addContentTypeParser(
    ["application/json", "text/plain", "*"],
    { parseAs: "buffer" },
    (request, body, done) => {
      try {
        done(null, toJson(request, body as Buffer));
      } catch (error) {
        done(error as Error, undefined);
      }
    },
  );
  await scope.register(formbody);
  // The form's `data` holds the body itself: decoded before any other hook reads the body.
  scope.addHook("preValidation", async (request) => {
    if (!isForm(request)) return;
    const form = request.body as Record<string, unknown> | undefined;
    const data = form?.data;
    if (typeof data !== "string" || data.length === 0) {
      throw new AppError("validation_failed", {
        message: "A form body carries the events in its data field",
        details: [{ field: "data", message: "is required: the JSON body, base64-encoded" }],
      });
    }
    // A "+" of the base64 sent unescaped reads as a space in a form: put it back.
    request.body = toJson(request, Buffer.from(data.replaceAll(" ", "+"), "base64"));
  });
}

const isForm = (request: FastifyRequest): boolean =>
  (request.headers["content-type"] ?? "").toLowerCase().startsWith("application/x-www-form-urlencoded");

/** `?compression=` of the request, as posthog-js names it. */
function compressionOf(request: FastifyRequest): string | undefined {
  const value = (request.query as Record<string, unknown> | undefined)?.compression;
  return typeof value === "string" ? value.toLowerCase() : undefined;
}

/** The body's bytes, inflated when they are gzip (by marker or by magic bytes). */
function inflate(bytes: Buffer, request: FastifyRequest, maxBodyBytes: number): Buffer {
  const compression = compressionOf(request);
  if (compression === "lz64") {
    throw new AppError("unsupported_media_type", {
      message: "compression=lz64 is not supported; send JSON, gzip-js or base64",
    });
  }
  const gzipMagic = bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b;
  if (!gzipMagic) {
    if (compression === "gzip-js" || compression === "gzip") {
      throw new AppError("unsupported_media_type", {
        message: "The body does not decode with its compression",
      });
    }
    return bytes;
  }
  try {
    return gunzipSync(bytes, { maxOutputLength: maxBodyBytes });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ERR_BUFFER_TOO_LARGE") {
      throw new AppError("payload_too_large", {
        message: `The body inflates past ${maxBodyBytes} bytes`,
      });
    }
    throw new AppError("unsupported_media_type", {
      message: "The body does not decode with its compression",
    });
  }
}

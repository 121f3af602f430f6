import { Transform, type TransformCallback } from "node:stream";
import { createGunzip, createInflate } from "node:zlib";
import type { FastifyInstance } from "fastify";
import { AppError } from "../core/errors.js";
import { inexactIntegers } from "../core/json-numbers.js";

declare module "fastify" {
  interface FastifyRequest {
    /** Integers of the JSON body that JSON.parse rounded (see core/json-numbers.ts); absent when none. */
    inexactIntegers?: ReadonlySet<number>;
  }
}

/** Counts compressed bytes for Fastify, which checks them against Content-Length. */
class EncodedByteCounter extends Transform {
  constructor(private readonly onBytes: (total: number) => void) {
    super();
  }
  private total = 0;
  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.total += chunk.length;
    this.onBytes(this.total);
    done(null, chunk);
  }
}

/**
 * Bodies may be gzip or deflate compressed (`Content-Encoding`). Decompression happens before
 * Fastify reads the body, so the body limit applies to the decompressed size: a small bomb that
 * inflates past the limit is a 413. JSON sent as text/plain (navigator.sendBeacon) is accepted.
 */
export function registerBodyParsing(app: FastifyInstance): void {
  // Fastify's callback form: an async hook would make every body wait a tick (src/api/app.ts).
  app.addHook("preParsing", (request, _reply, payload, done) => {
    const encoding = request.headers["content-encoding"]?.toLowerCase().trim();
    if (!encoding || encoding === "identity") {
      done(null, payload);
      return;
    }
    if (encoding !== "gzip" && encoding !== "deflate" && encoding !== "x-gzip") {
      done(
        new AppError("unsupported_media_type", {
          message: `Content-Encoding "${encoding}" is not supported; use gzip or deflate`,
        }),
      );
      return;
    }
    const inflate = encoding === "deflate" ? createInflate() : createGunzip();
    const decoded = inflate as typeof inflate & { receivedEncodedLength?: number };
    const counter = new EncodedByteCounter((total) => {
      decoded.receivedEncodedLength = total;
    });
    payload.on("error", (error) => decoded.destroy(error));
    counter.on("error", (error) => decoded.destroy(error));
    payload.pipe(counter).pipe(decoded);
    done(null, decoded);
  });
  // Fastify's own JSON parser, so text/plain bodies get the same `__proto__` and `constructor`
  // checks as application/json ones. Both also note the integers the parse rounded, which only
  // the text shows, so that validation can refuse them instead of storing changed values.
  const parseJson = app.getDefaultJsonParser("error", "error");
  app.removeContentTypeParser("application/json");
  app.addContentTypeParser("application/json", { parseAs: "string" }, (request, body, done) => {
    parseJson(request, body as string, (error, parsed) => {
      if (error) return done(error, undefined);
      const rounded = inexactIntegers(body as string);
      if (rounded.size > 0) request.inexactIntegers = rounded;
      done(null, parsed);
    });
  });
  app.addContentTypeParser("text/plain", { parseAs: "string" }, (request, body, done) => {
    parseJson(request, body as string, (error, parsed) => {
      if (error) return done(new AppError("invalid_json"), undefined);
      const rounded = inexactIntegers(body as string);
      if (rounded.size > 0) request.inexactIntegers = rounded;
      done(null, parsed);
    });
  });
}

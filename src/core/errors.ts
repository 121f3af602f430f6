/**
 * The one error registry: every error a client can see has a stable code, a message and an HTTP
 * status, and is raised as an `AppError`. The API's error handler is the only place that turns
 * errors into responses (src/api/error-handler.ts).
 */
export const ERRORS = {
  bad_request: { status: 400, message: "The request is not valid HTTP" },
  validation_failed: { status: 400, message: "The request body is not valid" },
  invalid_json: { status: 400, message: "The request body is not valid JSON" },
  invalid_query: { status: 400, message: "The query spec is not valid" },
  invalid_cursor: { status: 400, message: "The cursor is not valid" },
  unauthorized: { status: 401, message: "Missing or unknown API key" },
  forbidden: { status: 403, message: "This key may not do that" },
  not_found: { status: 404, message: "Not found" },
  method_not_allowed: { status: 405, message: "Method not allowed" },
  request_timeout: { status: 408, message: "The request took too long to arrive" },
  payload_too_large: { status: 413, message: "The request body is too large" },
  batch_too_large: { status: 413, message: "The batch has too many events" },
  uri_too_long: { status: 414, message: "The URL is too long" },
  unsupported_media_type: { status: 415, message: "Unsupported content type or encoding" },
  expectation_failed: { status: 417, message: "Only the Expect value 100-continue is supported" },
  rate_limited: { status: 429, message: "Rate limit exceeded for this project" },
  headers_too_large: { status: 431, message: "The request headers are too large" },
  // Not a status any client reads (it has gone); 499 as nginx logs it, so metrics and logs tell a
  // client that left apart from a server fault.
  client_aborted: { status: 499, message: "The client closed the connection before sending the whole body" },
  internal: { status: 500, message: "Internal error" },
  unavailable: { status: 503, message: "Temporarily unavailable, retry later" },
  overloaded: { status: 503, message: "Ingest is behind; retry later" },
} as const satisfies Record<string, { status: number; message: string }>;

export type ErrorCode = keyof typeof ERRORS;

/** One problem in a request body: where it is and what is wrong. */
export interface Problem {
  /** Position in a batch, when the body is a batch. */
  index?: number;
  /** The field's path inside the event or spec, e.g. `distinct_id` or `properties`. */
  field: string;
  message: string;
}

/** What an `AppError` may carry besides its code; every field is optional. */
export interface AppErrorOptions {
  /** Shown to the client; the registry's message when absent. Never an internal detail. */
  message?: string;
  /** Every problem found in the request, for a 400. */
  details?: readonly Problem[];
  /** Seconds a client should wait before retrying (429, 503): sent as `Retry-After`. */
  retryAfter?: number;
  /** The underlying failure, for the logs; never sent to the client. */
  cause?: unknown;
}

export class AppError extends Error {
  readonly status: number;
  readonly details?: readonly Problem[];
  /** Seconds a client should wait before retrying (429, 503). */
  readonly retryAfter?: number;

  constructor(
    readonly code: ErrorCode,
    options: AppErrorOptions = {},
  ) {
    super(
      options.message ?? ERRORS[code].message,
      options.cause === undefined ? undefined : { cause: options.cause },
    );
    this.name = "AppError";
    this.status = ERRORS[code].status;
    this.details = options.details;
    this.retryAfter = options.retryAfter;
  }
}

/**
 * The outcome of checking a request body on its own: the typed value, or the AppError to answer.
 * It is the shape a Fastify validator returns, so routes use such checks as their validators.
 */
export type BodyCheck<T> = { value: T; error?: undefined } | { value?: undefined; error: AppError };

export const isAppError = (error: unknown): error is AppError => error instanceof AppError;

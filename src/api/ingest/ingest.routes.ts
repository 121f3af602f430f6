import type { TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import { Type } from "@sinclair/typebox";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { Config } from "../../config/config.js";
import { AppError } from "../../core/errors.js";
import type { LedgerDelta } from "../../core/event.js";
import { IncomingBatchSchema, IncomingEventSchema } from "../../core/event-schema.js";
import { PLAN_RATE_LIMIT_RPM } from "../../core/plans.js";
import {
  checkBatchBody,
  checkEventBody,
  normaliseBatch,
  normaliseEvent,
  type ValidatedEvents,
} from "../../core/validation.js";
import type { EventQueue } from "../../pipeline/event-queue.js";
import type { LedgerRecorder } from "../../pipeline/ledger-recorder.js";
import type { Project } from "../../pipeline/project-store.js";
import type { RateDecision, RateLimiter } from "../../pipeline/rate-limiter.js";
import type { KeyResolver } from "../auth.js";
import { toAppError } from "../error-handler.js";
import type { Metrics } from "../ops/metrics.js";
import { ErrorSchema } from "../schemas.js";

interface IngestContext {
  project: Project;
  decision: RateDecision;
  /** Set once the ledger has counted this request, so the error hook does not count it twice. */
  counted: boolean;
}

declare module "fastify" {
  interface FastifyRequest {
    ingest?: IngestContext;
  }
}

const Warnings = Type.Optional(
  Type.Array(Type.Object({ index: Type.Integer(), field: Type.String(), message: Type.String() })),
);
const SingleAccepted = Type.Object({
  status: Type.Literal("accepted"),
  uuid: Type.String(),
  duplicate: Type.Optional(
    Type.Boolean({ description: "Already stored (a retry); absent when the pipeline cannot tell yet" }),
  ),
  warnings: Warnings,
});
const BatchAccepted = Type.Object({
  status: Type.Literal("accepted"),
  count: Type.Integer(),
  duplicates: Type.Optional(
    Type.Integer({
      description:
        "Events not stored again: their uuid was already stored in this project, or repeats earlier in the batch; absent when the pipeline cannot tell yet",
    }),
  ),
  duplicate_indexes: Type.Optional(
    Type.Array(Type.Integer(), { description: "Positions of those events in the batch" }),
  ),
  duplicate_uuids: Type.Optional(Type.Array(Type.String(), { description: "Their uuids, each once" })),
  warnings: Warnings,
});
const errorResponses = {
  400: ErrorSchema,
  401: ErrorSchema,
  403: ErrorSchema,
  413: ErrorSchema,
  415: ErrorSchema,
  429: ErrorSchema,
  503: ErrorSchema,
};
const security: Record<string, string[]>[] = [{ writeKey: [] }, { writeKeyHeader: [] }];

function setRateHeaders(reply: FastifyReply, decision: RateDecision): void {
  reply.header("X-RateLimit-Limit", decision.limit);
  reply.header("X-RateLimit-Remaining", decision.remaining);
  reply.header("X-RateLimit-Reset", decision.resetAt);
}

export function registerIngestRoutes(
  app: FastifyInstance,
  deps: {
    config: Config;
    keys: KeyResolver;
    rateLimiter: RateLimiter;
    queue: EventQueue;
    ledger: LedgerRecorder;
    metrics: Metrics;
  },
): void {
  const { config, keys, rateLimiter, queue, ledger, metrics } = deps;
  const limits = { maxBatchEvents: config.maxBatchEvents, futureToleranceMs: config.futureToleranceMs };

  const count = (projectId: string, delta: LedgerDelta, outcome: string, events: number) => {
    ledger.add(projectId, delta);
    metrics.ingestEvents.inc({ outcome }, events);
  };

  /** The project's rate-limit decision applied to the request: its refusal (429), if it is one. */
  function admit(
    request: FastifyRequest,
    reply: FastifyReply,
    project: Project,
    decision: RateDecision,
  ): AppError | undefined {
    setRateHeaders(reply, decision);
    request.ingest = { project, decision, counted: !decision.allowed };
    if (decision.allowed) return undefined;
    // Refused before the body is read, so a client past its limit costs no parsing; its events
    // are unknown and it counts as one, as an unreadable body does.
    count(project.id, { received: 1, rate_limited: 1 }, "rate_limited", 1);
    return new AppError("rate_limited", {
      message: `Rate limit of ${decision.limit} requests per minute exceeded for plan ${project.plan}`,
      retryAfter: decision.retryAfter,
    });
  }

  async function authoriseAsync(
    request: FastifyRequest,
    reply: FastifyReply,
    resolving: Project | Promise<Project>,
  ): Promise<void> {
    const project = await resolving;
    const decision = await rateLimiter.consume(project.id, PLAN_RATE_LIMIT_RPM[project.plan], Date.now());
    const refusal = admit(request, reply, project, decision);
    if (refusal) throw refusal;
  }

  /**
   * Before the body is read: who is sending, and may they send now. A hook in Fastify's callback
   * form that finishes at once when the key is cached and the limiter decides in memory
   * (embedded): while a hook waits on a promise, Node buffers the body that came with the headers
   * and hands it over a tick later, which costs more than the hook itself.
   */
  function authorise(request: FastifyRequest, reply: FastifyReply, done: (error?: Error) => void): void {
    let resolving: Project | Promise<Project>;
    try {
      resolving = keys.resolve(request, "write");
      if (!(resolving instanceof Promise) && rateLimiter.consumeSync) {
        const limit = PLAN_RATE_LIMIT_RPM[resolving.plan];
        done(admit(request, reply, resolving, rateLimiter.consumeSync(resolving.id, limit, Date.now())));
        return;
      }
    } catch (error) {
      done(error as Error);
      return;
    }
    authoriseAsync(request, reply, resolving).then(() => done(), done);
  }

  /**
   * Gives the slot of a refused request back to the project's rate limit: only requests that
   * reach the store spend it. A refusal of the client's body (invalid, unreadable, too large, cut
   * short) is free while the project's refused requests of the last minute stay within its plan's
   * limit, and beyond that counts like any request, so a key holder sending garbage is limited
   * too. A request the store could not take (503) always gets its slot back.
   */
  async function giveBack(context: IngestContext, reply: FastifyReply, clientFault: boolean): Promise<void> {
    const { project, decision } = context;
    if (!decision.allowed || decision.slot === undefined) return;
    if (clientFault) {
      const allowance = await rateLimiter
        .consume(`${project.id}:refused`, decision.limit, Date.now())
        .catch(() => undefined);
      if (!allowance?.allowed) return;
    }
    await rateLimiter.release(project.id, decision.slot);
    reply.header("X-RateLimit-Remaining", decision.remaining + 1);
  }

  /** How many events a refused body holds, as far as it can be read: a batch's length, else one. */
  const refusedSize = (batch: boolean, body: unknown): number => {
    const events = batch && typeof body === "object" && body !== null && "events" in body ? body.events : [];
    return Array.isArray(events) ? Math.max(1, events.length) : 1;
  };

  /**
   * A request refused before its handler ran: a body that could not be read (too large, not JSON,
   * bad gzip) counts as one rejected event; one its validator refused (src/core/validation.ts)
   * counts as the events it holds.
   */
  const countRefused =
    (batch: boolean) =>
    async (request: FastifyRequest, reply: FastifyReply, error: Error): Promise<void> => {
      const context = request.ingest;
      if (!context || context.counted) return;
      context.counted = true;
      const appError = toAppError(error, request);
      const size =
        appError.code === "validation_failed" || appError.code === "batch_too_large"
          ? refusedSize(batch, request.body)
          : 1;
      count(context.project.id, { received: size, rejected: { [appError.code]: size } }, "rejected", size);
      await giveBack(context, reply, appError.status < 500);
    };

  /**
   * Stores a checked body: `normalise` resolves its times against the receipt time (a 400 when a
   * correction moves one out of range), then the queue makes it durable.
   */
  async function accept(
    request: FastifyRequest,
    reply: FastifyReply,
    size: number,
    normalise: (projectId: string, receivedAt: number) => ValidatedEvents,
  ): Promise<ValidatedEvents & { duplicates?: number[] }> {
    const context = request.ingest;
    if (!context) throw new AppError("internal");
    const { project } = context;
    context.counted = true;
    let validated: ValidatedEvents;
    try {
      validated = normalise(project.id, Date.now());
    } catch (error) {
      // Anything but a validation error is a fault of ours: counted as internal, as it is answered.
      const code = toAppError(error).code;
      count(project.id, { received: size, rejected: { [code]: size } }, "rejected", size);
      await giveBack(context, reply, true);
      throw error;
    }
    try {
      const result = await queue.enqueue(validated.events);
      // Accepted and duplicate events are counted in /metrics where the store commits them
      // (Metrics.recordFlush), as the ledger counts them.
      ledger.add(project.id, { received: size });
      return { ...validated, ...(result.duplicates ? { duplicates: result.duplicates } : {}) };
    } catch (error) {
      const code = error instanceof AppError ? error.code : "unavailable";
      count(project.id, { received: size, rejected: { [code]: size } }, "unavailable", size);
      await giveBack(context, reply, error instanceof AppError && error.status < 500);
      throw error;
    }
  }

  const typed = app.withTypeProvider<TypeBoxTypeProvider>();
  typed.post(
    "/api/v1/event",
    {
      onRequest: authorise,
      onError: countRefused(false),
      // The core check lists every problem with its field; the body is then an IncomingEvent.
      validatorCompiler: () => checkEventBody,
      schema: {
        tags: ["ingest"],
        summary: "Send one event",
        description: "202 once the event is durable. Idempotent by uuid.",
        security,
        body: IncomingEventSchema,
        response: { 202: SingleAccepted, ...errorResponses },
      },
    },
    async (request, reply) => {
      const { body } = request;
      const result = await accept(request, reply, 1, (projectId, receivedAt) =>
        normaliseEvent(body, projectId, receivedAt, { ...limits, roundedIntegers: request.inexactIntegers }),
      );
      const event = result.events[0]!;
      return reply.status(202).send({
        status: "accepted",
        uuid: event.uuid,
        ...(result.duplicates ? { duplicate: result.duplicates.length > 0 } : {}),
        ...(result.warnings.length > 0 ? { warnings: result.warnings } : {}),
      });
    },
  );

  typed.post(
    "/api/v1/event/batch",
    {
      onRequest: authorise,
      onError: countRefused(true),
      // The core check lists every problem with its index and field and answers 413 above the
      // batch limit; the body is then an IncomingBatch.
      validatorCompiler: () => (body: unknown) => checkBatchBody(body, config.maxBatchEvents),
      schema: {
        tags: ["ingest"],
        summary: "Send a batch of events, accepted or rejected whole",
        description: `202 once every event is durable. At most ${config.maxBatchEvents} events (413 above).`,
        security,
        body: IncomingBatchSchema,
        response: { 202: BatchAccepted, ...errorResponses },
      },
    },
    async (request, reply) => {
      const { body } = request;
      const result = await accept(request, reply, body.events.length, (projectId, receivedAt) =>
        normaliseBatch(body, projectId, receivedAt, { ...limits, roundedIntegers: request.inexactIntegers }),
      );
      const duplicates = result.duplicates;
      return reply.status(202).send({
        status: "accepted",
        count: result.events.length,
        ...(duplicates
          ? {
              duplicates: duplicates.length,
              duplicate_indexes: duplicates,
              duplicate_uuids: [...new Set(duplicates.map((i) => result.events[i]!.uuid))],
            }
          : {}),
        ...(result.warnings.length > 0 ? { warnings: result.warnings } : {}),
      });
    },
  );
}

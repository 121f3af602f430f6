import type { FastifyReply, FastifyRequest } from "fastify";
import type { Config } from "../../config/config.js";
import { AppError } from "../../core/errors.js";
import type { LedgerDelta } from "../../core/event.js";
import { PLAN_RATE_LIMIT_RPM } from "../../core/plans.js";
import type { ValidatedEvents, ValidationLimits } from "../../core/validation.js";
import type { EventQueue } from "../../pipeline/event-queue.js";
import type { LedgerRecorder } from "../../pipeline/ledger-recorder.js";
import type { Project } from "../../pipeline/project-store.js";
import type { RateDecision, RateLimiter } from "../../pipeline/rate-limiter.js";
import type { KeyResolver } from "../auth.js";
import { toAppError } from "../error-handler.js";
import type { Metrics } from "../ops/metrics.js";

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

export interface IngestGateDeps {
  config: Config;
  keys: KeyResolver;
  rateLimiter: RateLimiter;
  queue: EventQueue;
  ledger: LedgerRecorder;
  metrics: Metrics;
}

/**
 * The rules every ingest door shares, whatever its wire format (Tidemark's own API, Segment's,
 * PostHog's): the project's rate limit, the loss ledger, and the queue whose promise is
 * 202-means-durable. A door decides only how it finds the key and how its body becomes events;
 * once it hands those here, the events are counted, limited and stored exactly as
 * `POST /api/v1/event` would.
 */
export class IngestGate {
  readonly limits: Omit<ValidationLimits, "roundedIntegers">;

  constructor(private readonly deps: IngestGateDeps) {
    this.limits = {
      maxBatchEvents: deps.config.maxBatchEvents,
      futureToleranceMs: deps.config.futureToleranceMs,
    };
  }

  private count(projectId: string, delta: LedgerDelta, outcome: string, events: number): void {
    this.deps.ledger.add(projectId, delta);
    this.deps.metrics.ingestEvents.inc({ outcome }, events);
  }

  /**
   * An onRequest hook: the key of the usual headers (`Authorization: Bearer`, `X-API-Key`), read
   * before the body is, so a client past its limit costs no parsing. In Fastify's callback form,
   * and finished at once when the key is cached and the limiter decides in memory (embedded):
   * while a hook waits on a promise, Node buffers the body that came with the headers and hands
   * it over a tick later, which costs more than the hook itself.
   */
  readonly authoriseByHeader = (
    request: FastifyRequest,
    reply: FastifyReply,
    done: (error?: Error) => void,
  ): void => {
    const { keys, rateLimiter } = this.deps;
    let resolving: Project | Promise<Project>;
    try {
      resolving = keys.resolve(request, "write");
      if (!(resolving instanceof Promise) && rateLimiter.consumeSync) {
        const limit = PLAN_RATE_LIMIT_RPM[resolving.plan];
        done(
          this.decide(request, reply, resolving, rateLimiter.consumeSync(resolving.id, limit, Date.now())),
        );
        return;
      }
    } catch (error) {
      done(error as Error);
      return;
    }
    this.admit(request, reply, resolving).then(() => done(), done);
  };

  /** Resolves a write key found elsewhere (a Basic-auth user, a body field), then admits it. */
  async admitKey(request: FastifyRequest, reply: FastifyReply, key: string | undefined, missing: string) {
    await this.admit(request, reply, this.deps.keys.resolveKey(key, "write", missing));
  }

  /** Spends one request of the project's rate limit, or refuses the request with a 429. */
  private async admit(
    request: FastifyRequest,
    reply: FastifyReply,
    resolving: Project | Promise<Project>,
  ): Promise<void> {
    const project = await resolving;
    const decision = await this.deps.rateLimiter.consume(
      project.id,
      PLAN_RATE_LIMIT_RPM[project.plan],
      Date.now(),
    );
    const refusal = this.decide(request, reply, project, decision);
    if (refusal) throw refusal;
  }

  /** The rate limit's decision applied to the request: its refusal (429), if it is one. */
  private decide(
    request: FastifyRequest,
    reply: FastifyReply,
    project: Project,
    decision: RateDecision,
  ): AppError | undefined {
    reply.header("X-RateLimit-Limit", decision.limit);
    reply.header("X-RateLimit-Remaining", decision.remaining);
    reply.header("X-RateLimit-Reset", decision.resetAt);
    request.ingest = { project, decision, counted: !decision.allowed };
    if (decision.allowed) return undefined;
    // Its events are unknown (the body is not read, or not trusted) and it counts as one, as an
    // unreadable body does.
    this.count(project.id, { received: 1, rate_limited: 1 }, "rate_limited", 1);
    return new AppError("rate_limited", {
      message: `Rate limit of ${decision.limit} requests per minute exceeded for plan ${project.plan}`,
      retryAfter: decision.retryAfter,
    });
  }

  /**
   * Gives the slot of a refused request back to the project's rate limit: only requests that
   * reach the store spend it. A refusal of the client's body (invalid, unreadable, too large, cut
   * short) is free while the project's refused requests of the last minute stay within its plan's
   * limit, and beyond that counts like any request, so a key holder sending garbage is limited
   * too. A request the store could not take (503) always gets its slot back.
   */
  private async giveBack(context: IngestContext, reply: FastifyReply, clientFault: boolean): Promise<void> {
    const { project, decision } = context;
    if (!decision.allowed || decision.slot === undefined) return;
    const { rateLimiter } = this.deps;
    if (clientFault) {
      const allowance = await rateLimiter
        .consume(`${project.id}:refused`, decision.limit, Date.now())
        .catch(() => undefined);
      if (!allowance?.allowed) return;
    }
    await rateLimiter.release(project.id, decision.slot);
    reply.header("X-RateLimit-Remaining", decision.remaining + 1);
  }

  /**
   * An onError hook for a request refused before its handler ran, once its project is known: a
   * body that could not be read (too large, not JSON, bad gzip) counts as one rejected event; one
   * its validator refused counts as the events it holds (`sizeOf` of the parsed body).
   */
  countRefused(sizeOf: (body: unknown) => number) {
    return async (request: FastifyRequest, reply: FastifyReply, error: Error): Promise<void> => {
      const context = request.ingest;
      if (!context || context.counted) return;
      context.counted = true;
      const appError = toAppError(error, request);
      const size =
        appError.code === "validation_failed" || appError.code === "batch_too_large"
          ? Math.max(1, sizeOf(request.body))
          : 1;
      this.count(
        context.project.id,
        { received: size, rejected: { [appError.code]: size } },
        "rejected",
        size,
      );
      await this.giveBack(context, reply, appError.status < 500);
    };
  }

  /**
   * Stores a checked body: `normalise` resolves its times against the receipt time (a 400 when a
   * correction moves one out of range), then the queue makes it durable. Resolves once it is.
   */
  async accept(
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
      this.count(project.id, { received: size, rejected: { [code]: size } }, "rejected", size);
      await this.giveBack(context, reply, true);
      throw error;
    }
    try {
      const result = await this.deps.queue.enqueue(validated.events);
      // Accepted and duplicate events are counted in /metrics where the store commits them
      // (Metrics.recordFlush), as the ledger counts them.
      this.deps.ledger.add(project.id, { received: size });
      return { ...validated, ...(result.duplicates ? { duplicates: result.duplicates } : {}) };
    } catch (error) {
      const code = error instanceof AppError ? error.code : "unavailable";
      this.count(project.id, { received: size, rejected: { [code]: size } }, "unavailable", size);
      await this.giveBack(context, reply, error instanceof AppError && error.status < 500);
      throw error;
    }
  }
}

import type { TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import { Type } from "@sinclair/typebox";
import type { FastifyInstance } from "fastify";
import type { Config } from "../../config/config.js";
import { IncomingBatchSchema, IncomingEventSchema } from "../../core/event-schema.js";
import { checkBatchBody, checkEventBody, normaliseBatch, normaliseEvent } from "../../core/validation.js";
import { ErrorSchema } from "../schemas.js";
import type { IngestGate } from "./ingest-gate.js";

export const Warnings = Type.Optional(
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
export const errorResponses = {
  400: ErrorSchema,
  401: ErrorSchema,
  403: ErrorSchema,
  413: ErrorSchema,
  415: ErrorSchema,
  429: ErrorSchema,
  503: ErrorSchema,
};
const security: Record<string, string[]>[] = [{ writeKey: [] }, { writeKeyHeader: [] }];

export function registerIngestRoutes(app: FastifyInstance, deps: { config: Config; gate: IngestGate }): void {
  const { config, gate } = deps;
  const limits = gate.limits;
  /** How many events a refused body holds, as far as it can be read: a batch's length, else one. */
  const batchSize = (body: unknown): number => {
    const events = typeof body === "object" && body !== null && "events" in body ? body.events : [];
    return Array.isArray(events) ? events.length : 1;
  };

  const typed = app.withTypeProvider<TypeBoxTypeProvider>();
  typed.post(
    "/api/v1/event",
    {
      onRequest: gate.authoriseByHeader,
      onError: gate.countRefused(() => 1),
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
      const result = await gate.accept(request, reply, 1, (projectId, receivedAt) =>
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
      onRequest: gate.authoriseByHeader,
      onError: gate.countRefused(batchSize),
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
      const result = await gate.accept(request, reply, body.events.length, (projectId, receivedAt) =>
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

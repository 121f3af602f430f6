import { Type } from "@sinclair/typebox";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { Config } from "../../config/config.js";
import { AppError } from "../../core/errors.js";
import { basicAuthUser, requestKey } from "../auth.js";
import { errorResponses, Warnings } from "./ingest.routes.js";
import type { IngestGate } from "./ingest-gate.js";
import { type MappedEvents, normaliseMapped } from "./mapped-events.js";
import {
  checkSegmentBatch,
  checkSegmentCall,
  SEGMENT_TYPES,
  type SegmentType,
  segmentWriteKeys,
} from "./segment.mapping.js";

const Json = Type.Unknown();
const Id = Type.Union([Type.String(), Type.Number()]);
/** A Segment message, for the documentation; src/api/ingest/segment.mapping.ts checks it. */
const SegmentMessage = Type.Object(
  {
    type: Type.Optional(Type.Union(SEGMENT_TYPES.map((t) => Type.Literal(t)))),
    userId: Type.Optional(Id),
    anonymousId: Type.Optional(Id),
    event: Type.Optional(Type.String({ description: "track: the event name" })),
    name: Type.Optional(Type.String({ description: "page, screen: stored as properties.name" })),
    category: Type.Optional(Type.String({ description: "page, screen: stored as properties.category" })),
    properties: Type.Optional(Type.Record(Type.String(), Json)),
    traits: Type.Optional(
      Type.Record(Type.String(), Json, { description: "identify: stored as $set; group: as $group_set" }),
    ),
    groupId: Type.Optional(Id),
    previousId: Type.Optional(Id),
    context: Type.Optional(
      Type.Record(Type.String(), Json, { description: "stored as properties.$context" }),
    ),
    timestamp: Type.Optional(Type.String()),
    originalTimestamp: Type.Optional(Type.String()),
    sentAt: Type.Optional(Type.String()),
    messageId: Type.Optional(
      Type.String({ description: "the idempotency key: a UUID as it is, any other string as its UUID v5" }),
    ),
    receivedAt: Type.Optional(Type.String()),
    integrations: Type.Optional(Json),
    channel: Type.Optional(Type.String()),
    version: Type.Optional(Json),
    writeKey: Type.Optional(
      Type.String({ description: "the write key, when no Authorization header carries it" }),
    ),
  },
  { additionalProperties: false },
);
const SegmentBatch = Type.Object(
  {
    batch: Type.Array(SegmentMessage),
    sentAt: Type.Optional(Type.String()),
    context: Type.Optional(
      Type.Record(Type.String(), Json, { description: "merged under every message's context" }),
    ),
    writeKey: Type.Optional(Type.String()),
  },
  { additionalProperties: false },
);
const CallAccepted = Type.Object({
  success: Type.Literal(true),
  uuid: Type.String({ description: "the uuid the message is stored under" }),
  duplicate: Type.Optional(Type.Boolean()),
  warnings: Warnings,
});
const BatchAccepted = Type.Object({
  success: Type.Literal(true),
  count: Type.Integer(),
  duplicates: Type.Optional(Type.Integer()),
  duplicate_indexes: Type.Optional(Type.Array(Type.Integer())),
  duplicate_uuids: Type.Optional(Type.Array(Type.String())),
  warnings: Warnings,
});
const security: Record<string, string[]>[] = [{ segmentWriteKey: [] }, { writeKey: [] }];
const MISSING =
  "Missing write key: send it as the Basic-auth user name (Segment's way) or as writeKey in the body";

const DESCRIPTIONS: Record<SegmentType, string> = {
  track: "Stored as the event named by `event`.",
  identify:
    "Stored as `$identify`: traits as `$set`, the anonymousId as `$anon_distinct_id` when a userId is sent too.",
  page: "Stored as `Page View`, with `name` and `category` in its properties.",
  screen: "Stored as `Screen View`, with `name` and `category` in its properties.",
  group:
    'Stored as `$groupidentify`: `$group_type` "group", `$group_key` the groupId, `$group_set` the traits.',
  alias: "Stored as `$create_alias` by the userId, with `alias` the previousId.",
};

/**
 * Segment's HTTP Tracking API: `POST /v1/{track,identify,page,screen,group,alias}` and
 * `/v1/batch`. The write key is the Basic-auth user name, as Segment's libraries send it (or a
 * Bearer / X-API-Key header, or `writeKey` in the body). The answer is 200 `{"success": true}`
 * once the events are durable: the same moment as the 202 of /api/v1/event; 200 because several
 * of Segment's libraries count only a 200 as delivered and would otherwise send again.
 */
export function registerSegmentRoutes(
  app: FastifyInstance,
  deps: { config: Config; gate: IngestGate },
): void {
  const { config, gate } = deps;
  const headerKey = (request: FastifyRequest) => basicAuthUser(request) ?? requestKey(request);

  /** With a key in the headers, the rate limit applies before the body is read. */
  const authoriseByHeader = async (request: FastifyRequest, reply: FastifyReply) => {
    const key = headerKey(request);
    if (key !== undefined) await gate.admitKey(request, reply, key, MISSING);
  };
  /** Without one, the body's writeKey decides; with one, the body may not name another. */
  const authoriseByBody = async (request: FastifyRequest, reply: FastifyReply) => {
    const named = segmentWriteKeys(request.body);
    if (!request.ingest) {
      if (named.length > 1) {
        throw new AppError("validation_failed", {
          message: "The body names more than one write key",
          details: [{ field: "writeKey", message: "differs between the batch and its messages" }],
        });
      }
      await gate.admitKey(request, reply, named[0], MISSING);
      return;
    }
    const key = headerKey(request);
    if (named.some((k) => k !== key)) {
      throw new AppError("validation_failed", {
        message: "The body's writeKey is not the key of the Authorization header",
        details: [{ field: "writeKey", message: "differs from the key of the Authorization header" }],
      });
    }
  };
  const limitsOf = (request: FastifyRequest) => ({
    ...gate.limits,
    roundedIntegers: request.inexactIntegers,
  });

  for (const type of SEGMENT_TYPES) {
    app.post<{ Body: MappedEvents }>(
      `/v1/${type}`,
      {
        onRequest: authoriseByHeader,
        preValidation: authoriseByBody,
        onError: gate.countRefused(() => 1),
        validatorCompiler: () => (body: unknown) => checkSegmentCall(body, type),
        schema: {
          tags: ["segment"],
          summary: `Segment ${type} call`,
          description: `${DESCRIPTIONS[type]} 200 once it is durable; idempotent by messageId.`,
          security,
          body: SegmentMessage,
          response: { 200: CallAccepted, ...errorResponses },
        },
      },
      async (request, reply) => {
        const result = await gate.accept(request, reply, 1, (projectId, receivedAt) =>
          normaliseMapped(request.body, projectId, receivedAt, limitsOf(request)),
        );
        return reply.status(200).send({
          success: true,
          uuid: result.events[0]!.uuid,
          ...(result.duplicates ? { duplicate: result.duplicates.length > 0 } : {}),
          ...(result.warnings.length > 0 ? { warnings: result.warnings } : {}),
        });
      },
    );
  }

  const batchSize = (body: unknown): number =>
    typeof body === "object" && body !== null && "batch" in body && Array.isArray(body.batch)
      ? body.batch.length
      : 1;
  app.post<{ Body: MappedEvents }>(
    "/v1/batch",
    {
      onRequest: authoriseByHeader,
      preValidation: authoriseByBody,
      onError: gate.countRefused(batchSize),
      validatorCompiler: () => (body: unknown) => checkSegmentBatch(body, config.maxBatchEvents),
      schema: {
        tags: ["segment"],
        summary: "Segment batch, accepted or refused whole",
        description: `Any mix of the calls above. 200 once every message is durable. At most ${config.maxBatchEvents} messages (413 above); one message that cannot be mapped or is not valid refuses the batch, each problem named with its index.`,
        security,
        body: SegmentBatch,
        response: { 200: BatchAccepted, ...errorResponses },
      },
    },
    async (request, reply) => {
      const result = await gate.accept(request, reply, request.body.events.length, (projectId, receivedAt) =>
        normaliseMapped(request.body, projectId, receivedAt, limitsOf(request)),
      );
      const duplicates = result.duplicates;
      return reply.status(200).send({
        success: true,
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

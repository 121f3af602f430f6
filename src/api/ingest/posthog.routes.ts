import { randomUUID } from "node:crypto";
import { Type } from "@sinclair/typebox";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { Config } from "../../config/config.js";
import type { KeyResolver } from "../auth.js";
import { ErrorSchema } from "../schemas.js";
import { errorResponses, Warnings } from "./ingest.routes.js";
import type { IngestGate } from "./ingest-gate.js";
import { type MappedEvents, normaliseMapped } from "./mapped-events.js";
import { registerPosthogBodies } from "./posthog.body.js";
import { checkPosthogBody, posthogSize, posthogToken } from "./posthog.mapping.js";

/** posthog-js's capture path (`/e/`), the newer `/i/v0/e/`, and the older `/capture/` and `/batch/`. */
export const POSTHOG_CAPTURE_PATHS = ["/capture/", "/batch/", "/e/", "/i/v0/e/"] as const;

const MISSING = "Missing project key: api_key or token in the body (the project's write key)";

const Json = Type.Unknown();
const PosthogEvent = Type.Object(
  {
    event: Type.String(),
    distinct_id: Type.Optional(Type.Union([Type.String(), Type.Number()])),
    properties: Type.Optional(
      Type.Record(Type.String(), Json, {
        description: "distinct_id and token may be here, as posthog-js sends them; token is not stored",
      }),
    ),
    timestamp: Type.Optional(Type.String()),
    offset: Type.Optional(Type.Number({ description: "ms before receipt; instead of timestamp" })),
    uuid: Type.Optional(Type.String({ description: "the idempotency key" })),
    $set: Type.Optional(Type.Record(Type.String(), Json)),
    $set_once: Type.Optional(Type.Record(Type.String(), Json)),
    api_key: Type.Optional(Type.String()),
    token: Type.Optional(Type.String()),
    sent_at: Type.Optional(Type.String()),
    type: Type.Optional(Type.String()),
    library: Type.Optional(Type.String()),
    library_version: Type.Optional(Type.String()),
  },
  { additionalProperties: false },
);
const PosthogBody = Type.Union([
  PosthogEvent,
  Type.Array(PosthogEvent),
  Type.Object(
    {
      batch: Type.Array(PosthogEvent),
      api_key: Type.Optional(Type.String()),
      token: Type.Optional(Type.String()),
      sent_at: Type.Optional(Type.String()),
      historical_migration: Type.Optional(Type.Boolean()),
    },
    { additionalProperties: false },
  ),
]);
const CaptureAccepted = Type.Object({
  status: Type.Literal(1, { description: "PostHog's answer" }),
  count: Type.Integer(),
  duplicates: Type.Optional(Type.Integer()),
  duplicate_indexes: Type.Optional(Type.Array(Type.Integer())),
  duplicate_uuids: Type.Optional(Type.Array(Type.String())),
  warnings: Warnings,
});
const FlagsBody = Type.Object(
  { token: Type.Optional(Type.String()), api_key: Type.Optional(Type.String()) },
  { additionalProperties: true },
);
const NoFlags = Type.Object({}, { additionalProperties: true });
const consumes = ["application/json", "text/plain", "application/x-www-form-urlencoded"];

/**
 * What posthog-js reads from the project's remote configuration: which compressions Tidemark
 * reads (so it sends gzip), and every product Tidemark does not have switched off, so the SDK
 * loads no extension for them.
 */
const REMOTE_CONFIG = {
  supportedCompression: ["gzip-js", "base64"],
  autocapture_opt_out: false,
  capturePerformance: false,
  autocaptureExceptions: false,
  sessionRecording: false,
  heatmaps: false,
  surveys: false,
  productTours: false,
  siteApps: [],
  elementsChainAsString: false,
  defaultIdentifiedOnly: true,
};
/** No flags, in both of PostHog's answer shapes: `flags` (/flags v2) and `featureFlags` (/decide). */
const noFlags = () => ({
  flags: {},
  featureFlags: {},
  featureFlagPayloads: {},
  errorsWhileComputingFlags: false,
  quotaLimited: [],
  requestId: randomUUID(),
});

/**
 * PostHog's capture API (`POST /capture/`, `/batch/`, `/e/`, `/i/v0/e/`, with or without the
 * trailing slash) and the endpoints its SDKs call at start: `/flags` and `/decide` (no flags) and
 * `/array/:token/config` (the remote configuration). The project's write key is the `api_key` or
 * `token` of the body, so the body is read before the rate limit applies. The answer is 200
 * `{"status": 1}` once the events are durable: the same moment as the 202 of /api/v1/event; 200
 * because PostHog's libraries count only a 200 as delivered.
 */
export async function registerPosthogRoutes(
  app: FastifyInstance,
  deps: { config: Config; gate: IngestGate; keys: KeyResolver },
): Promise<void> {
  const { config, gate, keys } = deps;
  // A scope of its own: PostHog's body formats (gzip without a header, base64 forms) are read
  // here and nowhere else.
  await app.register(async (scope) => {
    await registerPosthogBodies(scope, config.maxBodyBytes);

    const authorise = async (request: FastifyRequest, reply: FastifyReply) =>
      gate.admitKey(request, reply, posthogToken(request.body), MISSING);

    for (const path of POSTHOG_CAPTURE_PATHS) {
      for (const url of [path, path.slice(0, -1)]) {
        scope.post<{ Body: MappedEvents }>(
          url,
          {
            preValidation: authorise,
            onError: gate.countRefused(posthogSize),
            validatorCompiler: () => (body: unknown) => checkPosthogBody(body, config.maxBatchEvents),
            schema: {
              // The path without its slash is the same route, documented once.
              hide: url !== path,
              tags: ["posthog"],
              summary: `PostHog capture (${path})`,
              description: `One event, an array of events, or {"batch": [...]}, accepted or refused whole; JSON, gzip (Content-Encoding, ?compression=gzip-js, or the gzip bytes alone) or a base64 \`data=\` form. The write key is \`api_key\` or \`token\` of the body or its events. 200 once every event is durable; idempotent by uuid. At most ${config.maxBatchEvents} events (413 above).`,
              consumes,
              body: PosthogBody,
              response: { 200: CaptureAccepted, ...errorResponses },
            },
          },
          async (request, reply) => {
            const result = await gate.accept(
              request,
              reply,
              request.body.events.length,
              (projectId, receivedAt) =>
                normaliseMapped(request.body, projectId, receivedAt, {
                  ...gate.limits,
                  roundedIntegers: request.inexactIntegers,
                }),
            );
            const duplicates = result.duplicates;
            return reply.status(200).send({
              status: 1,
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
    }

    /** The key of a flags request, checked: a wrong key is a 401 now rather than silence later. */
    const project = (request: FastifyRequest) =>
      keys.requireKey(posthogToken(request.body), "write", MISSING.replace("api_key or token", "token"));
    for (const [path, answer] of [
      [
        "/flags/",
        (request: FastifyRequest) => ({ ...noFlags(), ...(configWanted(request) ? REMOTE_CONFIG : {}) }),
      ],
      ["/decide/", () => ({ ...REMOTE_CONFIG, config: { enable_collect_everything: true }, ...noFlags() })],
    ] as const) {
      for (const url of [path, path.slice(0, -1)]) {
        scope.post(
          url,
          {
            schema: {
              hide: url !== path,
              tags: ["posthog"],
              summary: `PostHog ${path.slice(1, -1)}: no feature flags`,
              description:
                "Tidemark has no feature flags: the answer says so in the shape PostHog's SDKs read, so they start cleanly. The body's `token` must be a project's write key.",
              consumes,
              body: FlagsBody,
              response: {
                200: NoFlags,
                400: ErrorSchema,
                401: ErrorSchema,
                403: ErrorSchema,
                413: ErrorSchema,
              },
            },
          },
          async (request) => {
            await project(request);
            return answer(request);
          },
        );
      }
    }

    scope.get<{ Params: { token: string } }>(
      "/array/:token/config",
      {
        schema: {
          tags: ["posthog"],
          summary: "PostHog remote configuration",
          description:
            "What posthog-js loads at start: the compressions Tidemark reads, and every PostHog product it lacks (recordings, surveys, heatmaps) switched off.",
          params: Type.Object({ token: Type.String({ description: "the project's write key" }) }),
          response: { 200: NoFlags, 401: ErrorSchema, 403: ErrorSchema },
        },
      },
      async (request) => {
        await keys.requireKey(request.params.token, "write", MISSING);
        return { token: request.params.token, ...REMOTE_CONFIG };
      },
    );
  });
}

const configWanted = (request: FastifyRequest) =>
  (request.query as Record<string, unknown> | undefined)?.config === "true";

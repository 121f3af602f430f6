import { after } from "node:test";
import { pipelineConformance } from "../conformance/pipeline.conformance.js";
import { postgresPipelineEnv } from "../helpers/services.js";

// Stage 1 (API -> Postgres) through the same conformance suite as the embedded pipeline, on its
// own database; the shared Redis rate limiter is in the path too.
const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const cleanup of cleanups) await cleanup();
});

pipelineConformance("sync", () => postgresPipelineEnv("sync", cleanups));

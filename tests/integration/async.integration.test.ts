import { after } from "node:test";
import { pipelineConformance } from "../conformance/pipeline.conformance.js";
import { postgresPipelineEnv } from "../helpers/services.js";

// Stage 2 (API -> Redis Stream -> worker -> Postgres), API and worker in one process (role all),
// through the same conformance suite as the embedded pipeline, on its own database and prefix.
const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const cleanup of cleanups) await cleanup();
});

pipelineConformance("async", () => postgresPipelineEnv("async", cleanups));

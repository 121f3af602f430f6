import { pipelineConformance } from "../conformance/pipeline.conformance.js";

pipelineConformance("embedded", async () => ({ TIDEMARK_PIPELINE: "embedded" }));

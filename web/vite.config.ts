import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

// The dashboard is built into dist/web, which Tidemark serves at / (src/api/web.ts). Everything is
// bundled: the page must work offline, with no CDN.
export default defineConfig({
  root: fileURLToPath(new URL(".", import.meta.url)),
  base: "/",
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  build: {
    outDir: fileURLToPath(new URL("../dist/web", import.meta.url)),
    emptyOutDir: true,
    target: "es2022",
    chunkSizeWarningLimit: 300,
  },
});

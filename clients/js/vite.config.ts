import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

// The script-tag build of the client: one minified IIFE, dist/tidemark.js, next to the ES modules
// tsc writes there (clients/js/tsconfig.build.json). Its gzip size is checked by
// tests/unit/client-size.test.ts.
export default defineConfig({
  root: fileURLToPath(new URL(".", import.meta.url)),
  logLevel: "warn",
  build: {
    outDir: fileURLToPath(new URL("./dist", import.meta.url)),
    emptyOutDir: false,
    target: "es2020",
    minify: "esbuild",
    sourcemap: false,
    lib: {
      entry: fileURLToPath(new URL("./src/script.ts", import.meta.url)),
      formats: ["iife"],
      name: "TidemarkScript",
      fileName: () => "tidemark.js",
    },
  },
});

# Tidemark: one image for every pipeline and every role. The container runs `tidemark ARGS`:
# `serve` (the default: every role the pipeline needs), `serve --role api|worker|cdc|sink`,
# `migrate`, `project ...`. Built and checked by tests/unit/dockerfile.test.ts (this repository's
# machines have no Docker engine to build it).
#
# Node 22, pinned to a release: package.json allows ^20.19 || >=22.12, and Node 20 left upstream
# support in April 2026 while 22 is maintained until April 2027. 22.23.3 is the newest 22.x release
# the npm registry listed when this was written (`npm view node@22 version`). Bump it on purpose.
ARG NODE_IMAGE=node:22.23.3-bookworm-slim

# The runtime's packages: production dependencies only (DuckDB's engine among them), no compiler.
FROM ${NODE_IMAGE} AS prod-deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

# The build: the server (tsc into dist/), the dashboard (Vite into dist/web) and the JavaScript
# client (clients/js/dist, whose script-tag build the server serves); `npm run build` does all
# three. Every dependency is installed here, the tests' ones too (chdb's engine alone is about
# 540 MB); none of it reaches the runtime stage.
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY web ./web
COPY clients ./clients
RUN npm run build

# The runtime: the compiled server, the built dashboard and client script, and the production
# packages, owned by root and run by the unprivileged `node` user (uid 1000) of the base image, who
# can write only /data (the embedded store and a generated admin token).
FROM ${NODE_IMAGE}
ENV NODE_ENV=production HOST=0.0.0.0 PORT=8000 TIDEMARK_DATA_DIR=/data
WORKDIR /app
COPY package.json ./
COPY --from=prod-deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/clients/js/dist ./clients/js/dist
RUN mkdir -p /data && chown node:node /data && chmod 700 /data
USER node
VOLUME /data
EXPOSE 8000
# Every role answers /health on PORT (a worker, cdc or sink on a server of the ops routes alone).
# The slim image has no curl or wget: Node's own fetch asks.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 8000) + '/health').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# SIGTERM (docker stop) drains and exits 0: the server handles it itself as PID 1.
ENTRYPOINT ["node", "dist/cli.js"]
CMD ["serve"]

# Tidemark, embedded pipeline: one process, data in /data.
FROM node:20-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY web ./web
COPY clients ./clients
RUN npm run build && npm prune --omit=dev
ENV HOST=0.0.0.0 PORT=8000 TIDEMARK_DATA_DIR=/data
VOLUME /data
EXPOSE 8000
CMD ["node", "dist/cli.js", "serve"]

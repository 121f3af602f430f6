# Tidemark: `make start` runs the platform, `make test` runs every test.
.PHONY: start stop status test deps build check-node services services-stop lint typecheck bench clean

NODE_MODULES_STAMP := node_modules/.package-lock.json
# dist/ is rebuilt only when one of these is newer than dist/cli.js (npm ci refreshes the stamp).
BUILD_INPUTS := $(shell find src -name '*.ts') tsconfig.json tsconfig.build.json $(NODE_MODULES_STAMP)
# The dashboard (dist/web) likewise, from its own sources.
WEB_INPUTS := $(shell find web -type f -not -path '*/node_modules/*') $(NODE_MODULES_STAMP)
# Tidemark's own client (clients/js/dist: ES modules and the script-tag build served at /sdk/tidemark.js).
CLIENT_INPUTS := $(shell find clients/js/src -name '*.ts') clients/js/tsconfig.json clients/js/tsconfig.build.json \
	clients/js/vite.config.ts $(NODE_MODULES_STAMP)

## Stops with a plain message when Node.js is older than Tidemark supports (20.19, or 22.12).
check-node:
	@node scripts/check-node.mjs

$(NODE_MODULES_STAMP): package.json package-lock.json | check-node
	npm ci --no-audit --no-fund

deps: $(NODE_MODULES_STAMP)

dist/cli.js: $(BUILD_INPUTS) | check-node
	npm run build:server
	@touch $@

dist/web/index.html: $(WEB_INPUTS) | check-node
	npm run build:web
	@touch $@

clients/js/dist/tidemark.js: $(CLIENT_INPUTS) | check-node
	npm run build:client
	@touch $@

build: dist/cli.js dist/web/index.html clients/js/dist/tidemark.js

## Run Tidemark on http://localhost:8000. Without STAGE (or STAGE=embedded): one process in the
## foreground, data in ./data, no services needed. STAGE=sync|async|cdc: the stage's services
## (scripts/services.sh), the migrations, then each role in the background on its own port
## (scripts/stage.mjs); `make status` shows them, `make stop` stops them.
STAGE ?=
start: check-node build
ifeq ($(strip $(STAGE)),)
	node dist/cli.js serve
else ifeq ($(strip $(STAGE)),embedded)
	TIDEMARK_PIPELINE=embedded node dist/cli.js serve
else
	node scripts/stage.mjs start $(strip $(STAGE))
endif

## Stops what `make start STAGE=...` started: its roles, then the services it started (not those
## that were already running).
stop: check-node
	@node scripts/stage.mjs stop

## Each service and role of the stage `make start STAGE=...` started, with its port and health.
status: check-node
	@node scripts/stage.mjs status

## Every test: unit, integration (starts the services it can, says which), load smoke.
## KEEP_SERVICES=1 leaves running the services it started.
test: check-node build
	bash scripts/test.sh

## Postgres, Redis, ClickHouse and Kafka on 127.0.0.1 (scripts/services.sh; README has the ports).
services:
	bash scripts/services.sh start

services-stop:
	bash scripts/services.sh stop

typecheck: deps
	npm run typecheck

lint: deps
	npm run lint

bench: build
	npm run bench

clean:
	rm -rf dist

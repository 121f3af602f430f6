# Tidemark: `make start` runs the platform, `make test` runs every test.
.PHONY: start test deps build services services-stop lint typecheck bench clean

NODE_MODULES_STAMP := node_modules/.package-lock.json

$(NODE_MODULES_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund

deps: $(NODE_MODULES_STAMP)

build: deps
	npm run build

## Run Tidemark on http://localhost:8000 with data in ./data (embedded: no services needed).
start: build
	node dist/cli.js serve

## Every test: unit, integration (starts Postgres and Redis when it can), load smoke.
test: build
	bash scripts/test.sh

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

#!/usr/bin/env bash
# The whole test suite. Services: when scripts/services.sh can start Postgres and Redis here it
# does, and the integration tests use them; otherwise those tests skip with a loud message
# (and fail instead when TIDEMARK_REQUIRE_SERVICES=1, as in CI).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f scripts/services.sh ] && [ "${TIDEMARK_SKIP_SERVICES:-0}" != "1" ]; then
  if bash scripts/services.sh start >/tmp/tidemark-services.log 2>&1; then
    eval "$(bash scripts/services.sh env)"
  else
    echo "WARNING: could not start Postgres/Redis (see /tmp/tidemark-services.log); their tests will skip" >&2
    if [ "${TIDEMARK_REQUIRE_SERVICES:-0}" = "1" ]; then
      cat /tmp/tidemark-services.log >&2
      exit 1
    fi
  fi
fi
# The load-test suite (Locust) runs from the project's Python environment.
if [ -f pyproject.toml ]; then
  if ! command -v uv >/dev/null 2>&1; then
    python3 -m pip install --quiet uv >/tmp/tidemark-uv.log 2>&1 || echo "WARNING: could not install uv" >&2
  fi
  if command -v uv >/dev/null 2>&1; then
    uv sync --group dev --quiet || echo "WARNING: uv sync failed; the load-test checks will skip" >&2
  fi
fi
npm run --silent check:boundaries
exec node scripts/run-tests.mjs "$@"

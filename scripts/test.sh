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
    [ "${TIDEMARK_REQUIRE_SERVICES:-0}" = "1" ] && { cat /tmp/tidemark-services.log >&2; exit 1; }
  fi
fi
exec node scripts/run-tests.mjs "$@"

#!/usr/bin/env bash
# The whole test suite (`make test`). Services: scripts/services.sh starts each service it can
# (Postgres, Redis, ClickHouse, Kafka, or $TIDEMARK_SERVICES), and this script says for each one
# which port the tests use and whether it was started now, was already running from this
# checkout, or is REUSED from elsewhere. A service that cannot start makes its tests skip with a
# loud message, or fails the run when TIDEMARK_REQUIRE_SERVICES=1 (CI).
#
# At the end it stops the services it started itself, unless KEEP_SERVICES=1; it never stops one
# that was already running. TIDEMARK_SKIP_SERVICES=1 leaves services alone entirely (the tests
# then use DATABASE_URL etc. as set, or skip). Logs: $TIDEMARK_SERVICES_DIR/logs (.services/logs).
set -euo pipefail
cd "$(dirname "$0")/.."

LOG_DIR="${TIDEMARK_SERVICES_DIR:-.services}/logs"
mkdir -p "$LOG_DIR"
SERVICES_LOG="$LOG_DIR/services.log"
STARTED_NOW=()

# "running" (started from this checkout), "reused" (answers, started elsewhere) or "stopped".
state_of() {
  case "$(bash scripts/services.sh status "$1" 2>/dev/null || true)" in
    "$1: running"*) echo running ;;
    "$1: another"*) echo reused ;;
    *) echo stopped ;;
  esac
}

port_of() { bash scripts/services.sh status "$1" 2>/dev/null | grep -o '127\.0\.0\.1:[0-9]*' | head -n 1 || true; }

stop_started() {
  if [ "${#STARTED_NOW[@]}" -eq 0 ]; then return; fi
  if [ "${KEEP_SERVICES:-0}" = 1 ]; then
    echo "services: KEEP_SERVICES=1: leaving ${STARTED_NOW[*]} running (bash scripts/services.sh stop to stop them)" >&2
  else
    echo "services: stopping what this run started: ${STARTED_NOW[*]} (KEEP_SERVICES=1 keeps them)" >&2
    bash scripts/services.sh stop "${STARTED_NOW[@]}" >>"$SERVICES_LOG" 2>&1 || true
  fi
}

start_services() {
  local service before missing=0 t0 output
  : >"$SERVICES_LOG"
  echo "== services used by the tests (log: $SERVICES_LOG)" >&2
  for service in ${TIDEMARK_SERVICES:-postgres redis clickhouse kafka}; do
    before=$(state_of "$service")
    t0=$(date +%s)
    if ! output=$(bash scripts/services.sh start "$service" 2>&1); then
      echo "$output" >>"$SERVICES_LOG"
      printf '  %-10s NOT AVAILABLE: its tests will skip; %s\n' "$service" \
        "$(grep -m 1 'error:' <<<"$output" | sed 's/^services: //')" >&2
      missing=1
      continue
    fi
    echo "$output" >>"$SERVICES_LOG"
    case "$before" in
      running) printf '  %-10s %-16s already running, started from this checkout earlier (left running)\n' "$service" "$(port_of "$service")" >&2 ;;
      reused) printf '  %-10s %-16s REUSED: started elsewhere (another checkout or the system), never stopped here\n' "$service" "$(port_of "$service")" >&2 ;;
      stopped)
        STARTED_NOW+=("$service")
        printf '  %-10s %-16s started now (%ss); stopped at the end unless KEEP_SERVICES=1\n' "$service" "$(port_of "$service")" "$(($(date +%s) - t0))" >&2
        ;;
    esac
  done
  if [ "$missing" = 1 ] && [ "${TIDEMARK_REQUIRE_SERVICES:-0}" = 1 ]; then
    cat "$SERVICES_LOG" >&2
    echo "error: a service the tests need did not start and TIDEMARK_REQUIRE_SERVICES=1" >&2
    exit 1
  fi
  # Every URL, also of a service that did not start, so that its tests name it when they skip.
  eval "$(bash scripts/services.sh env postgres redis clickhouse kafka)"
}

if [ -f scripts/services.sh ] && [ "${TIDEMARK_SKIP_SERVICES:-0}" != "1" ]; then
  trap stop_started EXIT
  start_services
fi

# The load-test suite (Locust) runs from the project's Python environment.
if [ -f pyproject.toml ]; then
  if ! command -v uv >/dev/null 2>&1; then
    python3 -m pip install --quiet uv >"$LOG_DIR/uv.log" 2>&1 || echo "WARNING: could not install uv (see $LOG_DIR/uv.log)" >&2
  fi
  if command -v uv >/dev/null 2>&1; then
    uv sync --group dev --quiet || echo "WARNING: uv sync failed; the load-test checks will skip" >&2
  fi
fi
# The browser tests (tests/e2e/) drive Debian's Chromium; they skip loudly without it.
if ! bash scripts/chromium.sh >"$LOG_DIR/chromium.log" 2>&1; then
  echo "WARNING: could not install Chromium (see $LOG_DIR/chromium.log); the browser tests will skip" >&2
fi
# The Kubernetes manifests' test renders deploy/k8s with kubectl, or with the pinned kustomize
# that scripts/kustomize.sh builds when this machine has neither; it skips loudly without both.
if ! bash scripts/kustomize.sh install >"$LOG_DIR/kustomize.log" 2>&1; then
  echo "WARNING: no kubectl or kustomize (see $LOG_DIR/kustomize.log); the Kubernetes manifest tests will skip" >&2
fi
npm run --silent check:boundaries
node scripts/run-tests.mjs "$@"

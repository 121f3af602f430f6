#!/usr/bin/env bash
# Installs, starts and stops the real services Tidemark's sync and async pipelines use, on
# 127.0.0.1 only, with their data in a folder of their own (.services/ in the repo, git-ignored).
#
#   scripts/services.sh start | stop | status | env
#   scripts/services.sh start-postgres | stop-postgres | start-redis | stop-redis
#   scripts/services.sh restart-redis [--hard]      (--hard: SIGKILL, then start again)
#   scripts/services.sh kill-redis                  (SIGKILL, as a crash would; start-redis brings it back)
#
# `start` is idempotent: it installs what is missing (apt-get), creates the Postgres cluster and
# the test database once, and starts whatever is not running. A Postgres or Redis already
# answering on the port but started elsewhere (another checkout) is used as it is, and `stop`
# never stops it: it only stops what this folder started. `env` prints the export lines:
#   eval "$(bash scripts/services.sh env)"
#
# Overridable (the fault tests run a private pair this way):
#   TIDEMARK_SERVICES_DIR (.services)  TIDEMARK_PG_PORT (55432)  TIDEMARK_REDIS_PORT (56379)
#   TIDEMARK_PG_DB (tidemark_test)
#
# Durability: Redis runs with `appendonly yes` and `appendfsync always`, so an XADD that returned
# is on disk and survives a kill -9 of Redis or of the machine (the zero-loss profile). With
# `appendfsync everysec` Redis is several times faster on writes but a crash of the machine (not
# just of the process) can lose up to about one second of acknowledged events.
# Postgres keeps its defaults (fsync on, synchronous_commit on) plus wal_level=logical for CDC.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${TIDEMARK_SERVICES_DIR:-$ROOT/.services}"
PG_PORT="${TIDEMARK_PG_PORT:-55432}"
REDIS_PORT="${TIDEMARK_REDIS_PORT:-56379}"
PG_DB="${TIDEMARK_PG_DB:-tidemark_test}"
PG_BIN="${TIDEMARK_PG_BIN:-/usr/lib/postgresql/15/bin}"
PG_DATA="$DIR/postgres"
PG_LOG="$DIR/postgres.log"
REDIS_DIR="$DIR/redis"
REDIS_PID="$REDIS_DIR/redis.pid"
REDIS_LOG="$DIR/redis.log"

log() { printf 'services: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

APT_UPDATED=0
apt_install() {
  command -v apt-get >/dev/null || die "apt-get not found; install $* by hand"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >"$DIR/apt.log" 2>&1; then
    if [ "$APT_UPDATED" = 0 ]; then
      APT_UPDATED=1
      apt-get update -q >>"$DIR/apt.log" 2>&1 || true
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >>"$DIR/apt.log" 2>&1 ||
        die "apt-get install $* failed; see $DIR/apt.log"
    else
      die "apt-get install $* failed; see $DIR/apt.log"
    fi
  fi
}

# Runs a command as the postgres OS user (Postgres refuses to run as root). The daemons must not
# inherit the lock's descriptor (fd 9), or they would hold the lock for as long as they run.
as_postgres() {
  if [ "$(id -u)" = 0 ]; then
    su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
  else
    "$@"
  fi
}

ensure_installed() {
  if [ ! -x "$PG_BIN/postgres" ]; then
    log "installing postgresql-15"
    apt_install postgresql-15
  fi
  if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    log "installing redis-server"
    apt_install redis-server
  fi
  # The Debian package may have started its own Redis on 6379; Tidemark uses its own process.
  id postgres >/dev/null 2>&1 || die "the postgres OS user is missing (it comes with the postgresql-15 package)"
}

pg_running() {
  [ -f "$PG_DATA/PG_VERSION" ] && as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1
}

psql_admin() {
  psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres "$@"
}

start_postgres() {
  if ! pg_running && "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; then
    # Another checkout's services.sh (or another Postgres) has the port: share it, never stop it.
    log "a Postgres that is not ours (data not in $PG_DATA) answers on 127.0.0.1:$PG_PORT: using it"
  else
    start_own_postgres
  fi
  create_database
}

start_own_postgres() {
  # The postgres user must reach the data folder.
  [ "$(id -u)" = 0 ] && chmod o+x "$DIR"
  if [ ! -f "$PG_DATA/PG_VERSION" ]; then
    log "creating a Postgres cluster in $PG_DATA"
    rm -rf "$PG_DATA"
    mkdir -p "$PG_DATA"
    chown postgres: "$PG_DATA" 2>/dev/null || true
    chmod 700 "$PG_DATA"
    as_postgres "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$DIR/initdb.log" 2>&1 ||
      die "initdb failed; see $DIR/initdb.log"
  fi
  if ! pg_running; then
    touch "$PG_LOG"
    chown postgres: "$PG_LOG" 2>/dev/null || true
    as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 -o "-p $PG_PORT -c listen_addresses=127.0.0.1 \
-c unix_socket_directories=$PG_DATA -c wal_level=logical -c max_connections=300 -c shared_buffers=256MB \
-c max_wal_size=2GB -c max_replication_slots=10 -c max_wal_senders=10" start >/dev/null 9>&- ||
      die "Postgres did not start; see $PG_LOG"
    log "Postgres listening on 127.0.0.1:$PG_PORT"
  fi
}

create_database() {
  for _ in $(seq 1 100); do
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && break
    sleep 0.1
  done
  if [ "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" != 1 ]; then
    psql_admin -c "CREATE DATABASE \"$PG_DB\"" 2>/dev/null ||
      [ "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" = 1 ] ||
      die "could not create database $PG_DB"
    log "created database $PG_DB"
  fi
}

stop_postgres() {
  if pg_running; then
    as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null
    log "Postgres stopped"
  fi
}

redis_running() {
  redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1
}

# The Redis this folder started (its pid file names a live process): the only one we stop.
redis_ours() {
  [ -f "$REDIS_PID" ] && kill -0 "$(cat "$REDIS_PID")" 2>/dev/null
}

start_redis() {
  mkdir -p "$REDIS_DIR"
  if ! redis_ours && redis_running; then
    log "a Redis that is not ours (no live pid file in $REDIS_DIR) answers on 127.0.0.1:$REDIS_PORT: using it"
  elif ! redis_running; then
    redis-server --daemonize yes --pidfile "$REDIS_PID" --logfile "$REDIS_LOG" \
      --bind 127.0.0.1 --port "$REDIS_PORT" --protected-mode yes --dir "$REDIS_DIR" \
      --appendonly yes --appendfsync always --save '' --maxmemory-policy noeviction 9>&-
    for _ in $(seq 1 100); do
      # Replaying a long AOF answers LOADING until done: wait for a real PONG.
      [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && break
      sleep 0.1
    done
    redis_running || die "Redis did not start; see $REDIS_LOG"
    log "Redis listening on 127.0.0.1:$REDIS_PORT (appendfsync always)"
  fi
}

stop_redis() {
  if redis_ours && redis_running; then
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown >/dev/null 2>&1 || true
    for _ in $(seq 1 100); do redis_running || break; sleep 0.1; done
    log "Redis stopped"
  fi
}

kill_redis() {
  if [ -f "$REDIS_PID" ]; then
    kill -9 "$(cat "$REDIS_PID")" 2>/dev/null || true
    for _ in $(seq 1 100); do redis_running || break; sleep 0.05; done
    rm -f "$REDIS_PID"
    log "Redis killed (SIGKILL)"
  fi
}

status() {
  local code=0
  if pg_running; then
    echo "postgres: running on 127.0.0.1:$PG_PORT (data $PG_DATA)"
  elif "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; then
    echo "postgres: another Postgres answers on 127.0.0.1:$PG_PORT (not started from $DIR)"
  else
    echo "postgres: stopped"
    code=1
  fi
  if redis_ours && redis_running; then
    echo "redis: running on 127.0.0.1:$REDIS_PORT (data $REDIS_DIR)"
  elif redis_running; then
    echo "redis: another Redis answers on 127.0.0.1:$REDIS_PORT (not started from $DIR)"
  else
    echo "redis: stopped"
    code=1
  fi
  return "$code"
}

print_env() {
  echo "export DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/$PG_DB"
  echo "export REDIS_URL=redis://127.0.0.1:$REDIS_PORT"
}

# One invocation at a time per services folder (parallel test files may all call `start`).
take_lock() {
  mkdir -p "$DIR"
  exec 9>"$DIR/.lock"
  flock -w 300 9 || die "another services.sh holds $DIR/.lock"
}

case "${1:-}" in
  start) take_lock; ensure_installed; start_postgres; start_redis ;;
  stop) take_lock; stop_redis; stop_postgres ;;
  status) status ;;
  env) print_env ;;
  start-postgres) take_lock; ensure_installed; start_postgres ;;
  stop-postgres) take_lock; stop_postgres ;;
  start-redis) take_lock; ensure_installed; start_redis ;;
  stop-redis) take_lock; stop_redis ;;
  kill-redis) take_lock; kill_redis ;;
  restart-redis)
    take_lock
    if [ "${2:-}" = --hard ]; then kill_redis; else stop_redis; fi
    start_redis
    ;;
  *)
    echo "usage: $0 start|stop|status|env|start-postgres|stop-postgres|start-redis|stop-redis|kill-redis|restart-redis [--hard]" >&2
    exit 2
    ;;
esac

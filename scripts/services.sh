#!/usr/bin/env bash
# Installs, starts and stops the real services of Tidemark's sync, async and cdc pipelines, on
# 127.0.0.1 only, with their data in a folder of their own (.services/ in the repo, git-ignored):
# Postgres 15 (wal_level=logical), Redis 7, ClickHouse (Debian's 18.16) and Kafka 4.1 (single-node
# KRaft, broker and controller in one JVM, from Maven Central jars).
#
#   scripts/services.sh start | stop | status | env  [SERVICE...]
#       SERVICE is postgres, redis, clickhouse or kafka; none means $TIDEMARK_SERVICES (all four)
#   scripts/services.sh start-SERVICE | stop-SERVICE | kill-SERVICE | restart-SERVICE [--hard]
#       kill-*: SIGKILL, as a crash would (Postgres: an immediate shutdown, which skips the
#       shutdown checkpoint exactly as a crash does); restart --hard: kill, then start again
#   scripts/services.sh kafka-topics ARG...   Kafka's TopicCommand from the jars, against
#       $KAFKA_BROKERS or this folder's broker (e.g. `kafka-topics --list`)
#
# `start` is idempotent: it installs what is missing (apt-get; Kafka's jars through Maven, once per
# checkout), creates the Postgres cluster, the test database and Kafka's storage once, and starts
# whatever is not running. A service already answering on its port but started elsewhere (another
# checkout) is used as it is, and `stop` never stops it: it only stops what this folder started.
# `env` prints the export lines:   eval "$(bash scripts/services.sh env)"
#
# Overridable (the fault tests run private instances this way; README has the table):
#   TIDEMARK_SERVICES_DIR (.services)   TIDEMARK_SERVICES ("postgres redis clickhouse kafka")
#   TIDEMARK_PG_PORT (55432)  TIDEMARK_PG_DB (tidemark_test)  TIDEMARK_PG_BIN (/usr/lib/postgresql/15/bin)
#   TIDEMARK_REDIS_PORT (56379)
#   TIDEMARK_CLICKHOUSE_PORT (58123, HTTP)  TIDEMARK_CLICKHOUSE_TCP_PORT (59000, native)
#   TIDEMARK_CLICKHOUSE_INTERSERVER_PORT (unset: no interserver listener; only replication uses it)
#   TIDEMARK_KAFKA_PORT (59092, broker)  TIDEMARK_KAFKA_CONTROLLER_PORT (59093, KRaft controller)
#   TIDEMARK_KAFKA_HEAP (384m, the broker's -Xmx)  TIDEMARK_KAFKA_LIBS (.services/kafka-libs)
#
# Durability: Redis runs with `appendonly yes` and `appendfsync always`, so an XADD that returned
# is on disk and survives a kill -9 of Redis or of the machine (the zero-loss profile). With
# `appendfsync everysec` Redis is several times faster on writes but a crash of the machine (not
# just of the process) can lose up to about one second of acknowledged events.
# Postgres keeps its defaults (fsync on, synchronous_commit on) plus wal_level=logical for CDC.
# Kafka keeps its defaults (the page cache, flushed by the OS); acks=all on one broker means the
# write is in the broker's log, which survives a kill -9 of the broker but not of the machine.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${TIDEMARK_SERVICES_DIR:-$ROOT/.services}"
ALL_SERVICES="postgres redis clickhouse kafka"
PG_PORT="${TIDEMARK_PG_PORT:-55432}"
REDIS_PORT="${TIDEMARK_REDIS_PORT:-56379}"
CH_PORT="${TIDEMARK_CLICKHOUSE_PORT:-58123}"
CH_TCP_PORT="${TIDEMARK_CLICKHOUSE_TCP_PORT:-59000}"
CH_INTERSERVER_PORT="${TIDEMARK_CLICKHOUSE_INTERSERVER_PORT:-}"
KAFKA_PORT="${TIDEMARK_KAFKA_PORT:-59092}"
KAFKA_CONTROLLER_PORT="${TIDEMARK_KAFKA_CONTROLLER_PORT:-59093}"
KAFKA_HEAP="${TIDEMARK_KAFKA_HEAP:-384m}"
PG_DB="${TIDEMARK_PG_DB:-tidemark_test}"
PG_BIN="${TIDEMARK_PG_BIN:-/usr/lib/postgresql/15/bin}"

LOG_DIR="$DIR/logs"
PG_DATA="$DIR/postgres"
PG_LOG="$LOG_DIR/postgres.log"
REDIS_DIR="$DIR/redis"
REDIS_PID="$REDIS_DIR/redis.pid"
REDIS_LOG="$LOG_DIR/redis.log"
CH_DIR="$DIR/clickhouse"
CH_CONF="$CH_DIR/config.xml"
CH_PID="$CH_DIR/clickhouse.pid"
CH_URL_PATH="http://127.0.0.1"
KAFKA_DIR="$DIR/kafka"
KAFKA_DATA="$KAFKA_DIR/data"
KAFKA_CONF="$KAFKA_DIR/server.properties"
KAFKA_PID="$KAFKA_DIR/kafka.pid"
KAFKA_OUT="$LOG_DIR/kafka.out"
# The jars are the same for every folder of a checkout (private test instances included): fetched once.
KAFKA_LIBS="${TIDEMARK_KAFKA_LIBS:-$ROOT/.services/kafka-libs}"
KAFKA_POM="$ROOT/scripts/kafka/pom.xml"

log() { printf 'services: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

for var in PG_PORT REDIS_PORT CH_PORT CH_TCP_PORT KAFKA_PORT KAFKA_CONTROLLER_PORT; do
  if ! [[ "${!var}" =~ ^[0-9]+$ ]] || [ "${!var}" -lt 1 ] || [ "${!var}" -gt 65535 ]; then
    die "port ${!var} (from $var) is not a port number"
  fi
done
[ -z "$CH_INTERSERVER_PORT" ] || [[ "$CH_INTERSERVER_PORT" =~ ^[0-9]+$ ]] ||
  die "TIDEMARK_CLICKHOUSE_INTERSERVER_PORT=$CH_INTERSERVER_PORT is not a port number"
[[ "$KAFKA_HEAP" =~ ^[0-9]+[mMgG]$ ]] || die "TIDEMARK_KAFKA_HEAP=$KAFKA_HEAP: use a size such as 384m"

# Milliseconds since $1 (a now_ms value), for the start-up times the script prints.
elapsed() { echo "$(($(date +%s%N) / 1000000 - $1))ms"; }
now_ms() { echo "$(($(date +%s%N) / 1000000))"; }

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# True when process $1 is alive and its command line contains $2 (guards against pid reuse).
alive() {
  [ -n "$1" ] && kill -0 "$1" 2>/dev/null && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q -- "$2"
}

pid_of() { if [ -f "$1" ]; then tr -dc '0-9' <"$1"; fi; }

APT_UPDATED=0
apt_install() {
  command -v apt-get >/dev/null || die "apt-get not found; install $* by hand"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >"$LOG_DIR/apt.log" 2>&1; then
    if [ "$APT_UPDATED" = 0 ]; then
      APT_UPDATED=1
      apt-get update -q >>"$LOG_DIR/apt.log" 2>&1 || true
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >>"$LOG_DIR/apt.log" 2>&1 ||
        die "apt-get install $* failed; see $LOG_DIR/apt.log"
    else
      die "apt-get install $* failed; see $LOG_DIR/apt.log"
    fi
  fi
}

# ---------------------------------------------------------------------------------------------
# Postgres

# Runs a command as the postgres OS user (Postgres refuses to run as root). The daemons must not
# inherit the lock's descriptor (fd 9), or they would hold the lock for as long as they run.
as_postgres() {
  if [ "$(id -u)" = 0 ]; then
    su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
  else
    "$@"
  fi
}

install_postgres() {
  if [ ! -x "$PG_BIN/postgres" ]; then
    log "installing postgresql-15"
    apt_install postgresql-15
  fi
  id postgres >/dev/null 2>&1 || die "the postgres OS user is missing (it comes with the postgresql-15 package)"
}

pg_running() {
  [ -f "$PG_DATA/PG_VERSION" ] && as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1
}

# The port the Postgres of this folder listens on (line 4 of postmaster.pid), when it runs.
pg_real_port() { sed -n 4p "$PG_DATA/postmaster.pid" 2>/dev/null || true; }

pg_answers() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$1"; }

psql_admin() {
  psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres "$@"
}

start_postgres() {
  install_postgres
  if pg_running; then
    check_same_port Postgres "$(pg_real_port)" "$PG_PORT" TIDEMARK_PG_PORT
    log "postgres: already running on 127.0.0.1:$PG_PORT (started from $DIR)"
  elif pg_answers "$PG_PORT"; then
    # Another checkout's services.sh (or another Postgres) has the port: share it, never stop it.
    log "postgres: REUSING a Postgres this folder did not start, on 127.0.0.1:$PG_PORT (data not in $PG_DATA)"
  else
    start_own_postgres
  fi
  create_database
}

# A service of this folder that already runs must run on the port asked for, or the exports
# would point at nothing: say so instead of starting a second one.
check_same_port() {
  if [ -n "$2" ] && [ "$2" != "$3" ]; then
    die "$1 from $DIR already runs on 127.0.0.1:$2, not on $4=$3; stop it first (bash scripts/services.sh stop ${1,,})"
  fi
}

start_own_postgres() {
  local t0
  t0=$(now_ms)
  # The postgres user must reach the data and log folders.
  if [ "$(id -u)" = 0 ]; then chmod o+x "$DIR" "$LOG_DIR"; fi
  if [ ! -f "$PG_DATA/PG_VERSION" ]; then
    log "postgres: creating a cluster in $PG_DATA"
    rm -rf "$PG_DATA"
    mkdir -p "$PG_DATA"
    chown postgres: "$PG_DATA" 2>/dev/null || true
    chmod 700 "$PG_DATA"
    as_postgres "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$LOG_DIR/initdb.log" 2>&1 ||
      die "initdb failed; see $LOG_DIR/initdb.log"
  fi
  touch "$PG_LOG"
  chown postgres: "$PG_LOG" 2>/dev/null || true
  as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 -o "-p $PG_PORT -c listen_addresses=127.0.0.1 \
-c unix_socket_directories=$PG_DATA -c wal_level=logical -c max_connections=300 -c shared_buffers=256MB \
-c max_wal_size=2GB -c max_replication_slots=10 -c max_wal_senders=10" start >/dev/null 9>&- ||
    die "Postgres did not start; see $PG_LOG"
  log "postgres: STARTED on 127.0.0.1:$PG_PORT (data $PG_DATA, $(elapsed "$t0"))"
}

create_database() {
  for _ in $(seq 1 100); do
    pg_answers "$PG_PORT" && break
    sleep 0.1
  done
  if [ "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" != 1 ]; then
    psql_admin -c "CREATE DATABASE \"$PG_DB\"" 2>/dev/null ||
      [ "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" = 1 ] ||
      die "could not create database $PG_DB"
    log "postgres: created database $PG_DB"
  fi
}

stop_postgres() {
  if pg_running; then
    as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null
    log "postgres: stopped"
  fi
}

kill_postgres() {
  if pg_running; then
    as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w -t 60 stop >/dev/null
    log "postgres: killed (immediate shutdown: crash recovery at the next start)"
  fi
}

status_postgres() {
  if pg_running; then
    echo "postgres: running on 127.0.0.1:$(pg_real_port) (started from $DIR, data $PG_DATA)"
  elif pg_answers "$PG_PORT"; then
    echo "postgres: another Postgres answers on 127.0.0.1:$PG_PORT (not started from $DIR)"
  else
    echo "postgres: stopped (port $PG_PORT)"
    return 1
  fi
}

env_postgres() {
  local port
  port=$(pg_running && pg_real_port || echo "$PG_PORT")
  echo "export DATABASE_URL=postgres://postgres@127.0.0.1:$port/$PG_DB"
}

# ---------------------------------------------------------------------------------------------
# Redis

install_redis() {
  if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    log "installing redis-server"
    # The Debian package may start its own Redis on 6379; Tidemark uses its own process.
    apt_install redis-server
  fi
}

redis_answers() { redis-cli -h 127.0.0.1 -p "$1" ping >/dev/null 2>&1; }

# The Redis this folder started (its pid file names a live redis-server): the only one we stop.
redis_ours() { alive "$(pid_of "$REDIS_PID")" redis-server; }

redis_real_port() { cat "$REDIS_DIR/port" 2>/dev/null || echo "$REDIS_PORT"; }

start_redis() {
  install_redis
  mkdir -p "$REDIS_DIR"
  if redis_ours; then
    check_same_port Redis "$(redis_real_port)" "$REDIS_PORT" TIDEMARK_REDIS_PORT
    log "redis: already running on 127.0.0.1:$REDIS_PORT (started from $DIR)"
  elif redis_answers "$REDIS_PORT"; then
    log "redis: REUSING a Redis this folder did not start, on 127.0.0.1:$REDIS_PORT (no live pid file in $REDIS_DIR)"
  else
    local t0
    t0=$(now_ms)
    redis-server --daemonize yes --pidfile "$REDIS_PID" --logfile "$REDIS_LOG" \
      --bind 127.0.0.1 --port "$REDIS_PORT" --protected-mode yes --dir "$REDIS_DIR" \
      --appendonly yes --appendfsync always --save '' --maxmemory-policy noeviction 9>&- 8>&-
    echo "$REDIS_PORT" >"$REDIS_DIR/port"
    for _ in $(seq 1 300); do
      # Replaying a long AOF answers LOADING until done: wait for a real PONG.
      [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && break
      sleep 0.1
    done
    redis_answers "$REDIS_PORT" || die "Redis did not start; see $REDIS_LOG"
    log "redis: STARTED on 127.0.0.1:$REDIS_PORT (appendfsync always, data $REDIS_DIR, $(elapsed "$t0"))"
  fi
}

stop_redis() {
  if redis_ours; then
    local port
    port=$(redis_real_port)
    redis-cli -h 127.0.0.1 -p "$port" shutdown >/dev/null 2>&1 || true
    for _ in $(seq 1 100); do redis_ours || break; sleep 0.1; done
    log "redis: stopped"
  fi
}

kill_redis() {
  if redis_ours; then
    kill -9 "$(pid_of "$REDIS_PID")" 2>/dev/null || true
    for _ in $(seq 1 100); do redis_ours || break; sleep 0.05; done
    rm -f "$REDIS_PID"
    log "redis: killed (SIGKILL)"
  fi
}

status_redis() {
  if redis_ours; then
    echo "redis: running on 127.0.0.1:$(redis_real_port) (started from $DIR, data $REDIS_DIR)"
  elif redis_answers "$REDIS_PORT"; then
    echo "redis: another Redis answers on 127.0.0.1:$REDIS_PORT (not started from $DIR)"
  else
    echo "redis: stopped (port $REDIS_PORT)"
    return 1
  fi
}

env_redis() {
  local port
  port=$(redis_ours && redis_real_port || echo "$REDIS_PORT")
  echo "export REDIS_URL=redis://127.0.0.1:$port"
}

# ---------------------------------------------------------------------------------------------
# ClickHouse (Debian's 18.16 server; the package does not start a service)

install_clickhouse() {
  if ! command -v clickhouse-server >/dev/null || ! command -v clickhouse-client >/dev/null; then
    log "installing clickhouse-server clickhouse-client"
    apt_install clickhouse-server clickhouse-client
  fi
  [ -f /etc/clickhouse-server/users.xml ] || die "/etc/clickhouse-server/users.xml is missing (it comes with clickhouse-server)"
}

clickhouse_answers() {
  [ "$(curl -sf -m 2 "$CH_URL_PATH:$1/?query=SELECT%201" 2>/dev/null)" = 1 ]
}

clickhouse_ours() { alive "$(pid_of "$CH_PID")" clickhouse; }

clickhouse_real_port() { cat "$CH_DIR/port" 2>/dev/null || echo "$CH_PORT"; }

write_clickhouse_config() {
  local interserver=""
  if [ -n "$CH_INTERSERVER_PORT" ]; then
    interserver="<interserver_http_port>$CH_INTERSERVER_PORT</interserver_http_port><interserver_http_host>127.0.0.1</interserver_http_host>"
  fi
  # Caches are allocated on demand; their caps keep the server modest beside the other services.
  cat >"$CH_CONF" <<EOF
<?xml version="1.0"?>
<!-- Written by scripts/services.sh at every start: edit the script, not this file. -->
<yandex>
    <logger>
        <level>warning</level>
        <log>$LOG_DIR/clickhouse.log</log>
        <errorlog>$LOG_DIR/clickhouse.err.log</errorlog>
        <size>20M</size>
        <count>3</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>$CH_PORT</http_port>
    <tcp_port>$CH_TCP_PORT</tcp_port>
    $interserver
    <path>$CH_DIR/data/</path>
    <tmp_path>$CH_DIR/tmp/</tmp_path>
    <user_files_path>$CH_DIR/user_files/</user_files_path>
    <format_schema_path>$CH_DIR/format_schemas/</format_schema_path>
    <users_config>/etc/clickhouse-server/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
    <max_connections>1024</max_connections>
    <keep_alive_timeout>10</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <mark_cache_size>268435456</mark_cache_size>
    <max_session_timeout>3600</max_session_timeout>
    <default_session_timeout>60</default_session_timeout>
    <builtin_dictionaries_reload_interval>3600</builtin_dictionaries_reload_interval>
</yandex>
EOF
}

start_clickhouse() {
  install_clickhouse
  mkdir -p "$CH_DIR/data" "$CH_DIR/tmp" "$CH_DIR/user_files" "$CH_DIR/format_schemas"
  if clickhouse_ours; then
    check_same_port ClickHouse "$(clickhouse_real_port)" "$CH_PORT" TIDEMARK_CLICKHOUSE_PORT
    log "clickhouse: already running on 127.0.0.1:$CH_PORT (started from $DIR)"
    return
  fi
  if clickhouse_answers "$CH_PORT"; then
    log "clickhouse: REUSING a ClickHouse this folder did not start, on 127.0.0.1:$CH_PORT (no live pid file in $CH_DIR)"
    return
  fi
  port_open "$CH_PORT" && die "port $CH_PORT (TIDEMARK_CLICKHOUSE_PORT) is taken by something that is not ClickHouse"
  port_open "$CH_TCP_PORT" && die "port $CH_TCP_PORT (TIDEMARK_CLICKHOUSE_TCP_PORT) is taken"
  local t0 pid
  t0=$(now_ms)
  write_clickhouse_config
  rm -f "$CH_PID"
  # --daemon forks and detaches; the server writes its pid file itself.
  (cd "$CH_DIR" && clickhouse-server --config-file="$CH_CONF" --pid-file="$CH_PID" --daemon \
    >>"$LOG_DIR/clickhouse.out" 2>&1 9>&- 8>&-) || die "clickhouse-server did not start; see $LOG_DIR/clickhouse.err.log"
  echo "$CH_PORT" >"$CH_DIR/port"
  for _ in $(seq 1 600); do
    clickhouse_answers "$CH_PORT" && break
    pid=$(pid_of "$CH_PID")
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 0.1
  done
  clickhouse_answers "$CH_PORT" ||
    die "ClickHouse did not answer SELECT 1 on 127.0.0.1:$CH_PORT; see $LOG_DIR/clickhouse.err.log: $(tail -n 5 "$LOG_DIR/clickhouse.err.log" 2>/dev/null)"
  log "clickhouse: STARTED on 127.0.0.1:$CH_PORT (HTTP) and $CH_TCP_PORT (native), data $CH_DIR, $(elapsed "$t0")"
}

# Sends $1 to the ClickHouse of this folder and waits until it is gone.
signal_clickhouse() {
  local pid
  pid=$(pid_of "$CH_PID")
  kill "-$1" "$pid" 2>/dev/null || true
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    log "clickhouse: still running 30 s after SIG$1: SIGKILL"
    kill -9 "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$CH_PID"
}

stop_clickhouse() {
  if clickhouse_ours; then
    signal_clickhouse TERM
    log "clickhouse: stopped"
  fi
}

kill_clickhouse() {
  if clickhouse_ours; then
    signal_clickhouse KILL
    log "clickhouse: killed (SIGKILL)"
  fi
}

status_clickhouse() {
  if clickhouse_ours; then
    echo "clickhouse: running on 127.0.0.1:$(clickhouse_real_port) (HTTP; started from $DIR, data $CH_DIR)"
  elif clickhouse_answers "$CH_PORT"; then
    echo "clickhouse: another ClickHouse answers on 127.0.0.1:$CH_PORT (not started from $DIR)"
  else
    echo "clickhouse: stopped (port $CH_PORT)"
    return 1
  fi
}

env_clickhouse() {
  local port
  port=$(clickhouse_ours && clickhouse_real_port || echo "$CH_PORT")
  echo "export CLICKHOUSE_URL=$CH_URL_PATH:$port"
}

# ---------------------------------------------------------------------------------------------
# Kafka 4.1: one JVM that is broker and KRaft controller, jars from Maven Central

install_kafka() {
  if ! command -v java >/dev/null; then
    log "installing openjdk-17-jre-headless"
    apt_install openjdk-17-jre-headless
  fi
  local stamp="$KAFKA_LIBS/.pom.sha256" want
  want=$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)
  [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && return
  mkdir -p "$(dirname "$KAFKA_LIBS")"
  # Several folders (private test instances) may share the jars: one download at a time.
  exec 8>"$KAFKA_LIBS.lock"
  flock -w 600 8 || die "another services.sh holds $KAFKA_LIBS.lock"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    if ! command -v mvn >/dev/null; then
      log "installing maven"
      apt_install maven
    fi
    local t0
    t0=$(now_ms)
    log "kafka: fetching the broker's jars from Maven Central into $KAFKA_LIBS (once)"
    rm -rf "$KAFKA_LIBS.tmp"
    mvn -q -B -f "$KAFKA_POM" dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$KAFKA_LIBS.tmp" >"$LOG_DIR/kafka-libs.log" 2>&1 ||
      die "mvn could not fetch Kafka's jars; see $LOG_DIR/kafka-libs.log"
    ls "$KAFKA_LIBS.tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || die "no kafka_2.13 jar in $KAFKA_LIBS.tmp"
    rm -rf "$KAFKA_LIBS"
    mv "$KAFKA_LIBS.tmp" "$KAFKA_LIBS"
    echo "$want" >"$stamp"
    log "kafka: $(find "$KAFKA_LIBS" -name '*.jar' | wc -l) jars, $(du -sh "$KAFKA_LIBS" | cut -f1) in $(elapsed "$t0")"
  fi
  exec 8>&-
}

# Class-data sharing: a JVM maps the classes an earlier run loaded from one archive instead of
# loading them again from 93 jars, which halves the broker's start-up CPU (7.8 -> 4 s measured
# here) and the tools' (1.6 -> 0.8 s). The first run of each kind ($1: broker, tools) writes an
# archive under a name of its own when it exits cleanly; a later run adopts it. JVM warnings
# (such as an archive made for other jars, which the JVM then ignores) go to stderr, so the
# tools' stdout stays theirs.
# Off unless TIDEMARK_KAFKA_CDS=1: when several JVMs start at once (the tests start private
# brokers while tools run), one may adopt an archive another is still writing; a few seconds of
# start-up are not worth that risk.
# Sets CDS to the JVM options.
cds_flags() {
  local archive="$KAFKA_LIBS/$1.jsa" pending
  CDS=(-Xlog:disable -Xlog:all=warning:stderr)
  [ "${TIDEMARK_KAFKA_CDS:-0}" = 1 ] || return 0
  for pending in "$KAFKA_LIBS/$1".*.jsa; do
    if [ -f "$pending" ] && [ ! -f "$archive" ]; then mv -f "$pending" "$archive"; fi
  done
  if [ -f "$archive" ]; then
    CDS+=("-XX:SharedArchiveFile=$archive")
  else
    CDS+=("-XX:ArchiveClassesAtExit=$KAFKA_LIBS/$1.$$.jsa")
  fi
}

# Runs one of Kafka's command-line tools from the jars (class name, then its arguments), for at
# most $KAFKA_TOOL_TIMEOUT seconds (600).
kafka_tool() {
  cds_flags tools
  timeout "${KAFKA_TOOL_TIMEOUT:-600}" java -Xmx128m -XX:TieredStopAtLevel=1 "${CDS[@]}" \
    -Dlog4j2.configurationFile="$ROOT/scripts/kafka/tools-log4j2.properties" -cp "$KAFKA_LIBS/*" "$@" 9>&- 8>&-
}

kafka_ours() { alive "$(pid_of "$KAFKA_PID")" kafka.Kafka; }

kafka_real_port() { cat "$KAFKA_DIR/port" 2>/dev/null || echo "$KAFKA_PORT"; }

# The broker answers a metadata request (TopicCommand --list goes through the admin client).
kafka_answers() {
  port_open "$1" &&
    KAFKA_TOOL_TIMEOUT=60 kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$1" --list >/dev/null 2>&1
}

write_kafka_config() {
  cat >"$KAFKA_CONF" <<EOF
# Written by scripts/services.sh at every start: edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DATA
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
# One broker: the internal topics get one replica and few partitions.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# A restarted broker waits until its previous registration's session expires (9 s by default)
# before it is unfenced; a shorter session brings a restart from ~16 s down to a few seconds.
broker.session.timeout.ms=4000
broker.heartbeat.interval.ms=1000
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.retention.hours=24
log.segment.bytes=134217728
EOF
}

start_kafka() {
  install_kafka
  mkdir -p "$KAFKA_DIR"
  if kafka_ours; then
    check_same_port Kafka "$(kafka_real_port)" "$KAFKA_PORT" TIDEMARK_KAFKA_PORT
    log "kafka: already running on 127.0.0.1:$KAFKA_PORT (started from $DIR)"
    return
  fi
  if port_open "$KAFKA_PORT"; then
    kafka_answers "$KAFKA_PORT" ||
      die "port $KAFKA_PORT (TIDEMARK_KAFKA_PORT) is taken by something that does not answer as a Kafka broker"
    log "kafka: REUSING a Kafka broker this folder did not start, on 127.0.0.1:$KAFKA_PORT (no live pid file in $KAFKA_DIR)"
    return
  fi
  port_open "$KAFKA_CONTROLLER_PORT" && die "port $KAFKA_CONTROLLER_PORT (TIDEMARK_KAFKA_CONTROLLER_PORT) is taken"
  local t0 pid
  t0=$(now_ms)
  write_kafka_config
  if [ ! -f "$KAFKA_DATA/meta.properties" ]; then
    # A cluster id is 16 random bytes in URL-safe base64 without padding (22 characters). One in
    # 64 starts with '-', which the tool reads as an option ("argument --cluster-id/-t: expected
    # one argument"), so such an id is drawn again. A CI run formats several brokers, and some
    # had failed at this step.
    local cluster_id=-
    while [ "${cluster_id:0:1}" = - ]; do
      cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
    done
    # No --standalone: it is refused when controller.quorum.voters is set (a static quorum).
    kafka_tool kafka.tools.StorageTool format -t "$cluster_id" -c "$KAFKA_CONF" >"$LOG_DIR/kafka-format.log" 2>&1 ||
      die "formatting Kafka's storage failed ($(tail -n 2 "$LOG_DIR/kafka-format.log" | tr '\n' ' ')); see $LOG_DIR/kafka-format.log"
    [ -f "$KAFKA_DATA/meta.properties" ] || die "Kafka's storage format wrote no meta.properties; see $LOG_DIR/kafka-format.log"
    log "kafka: formatted storage in $KAFKA_DATA (cluster $cluster_id)"
  fi
  # setsid: the broker outlives the shell (and the test run's process group) that started it.
  cds_flags broker
  setsid java "-Xmx$KAFKA_HEAP" -Xms64m "${CDS[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
    -Dkafka.logs.dir="$LOG_DIR" -Dlog4j2.configurationFile="$ROOT/scripts/kafka/log4j2.properties" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_CONF" </dev/null >>"$KAFKA_OUT" 2>&1 9>&- 8>&- &
  pid=$!
  echo "$pid" >"$KAFKA_PID"
  echo "$KAFKA_PORT" >"$KAFKA_DIR/port"
  for _ in $(seq 1 1200); do
    port_open "$KAFKA_PORT" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if ! kill -0 "$pid" 2>/dev/null; then
    rm -f "$KAFKA_PID"
    die "the Kafka broker exited; see $LOG_DIR/kafka.log and $KAFKA_OUT: $(tail -n 5 "$KAFKA_OUT" "$LOG_DIR/kafka.log" 2>/dev/null)"
  fi
  kafka_answers "$KAFKA_PORT" ||
    die "the Kafka broker on 127.0.0.1:$KAFKA_PORT does not answer metadata requests; see $LOG_DIR/kafka.log"
  log "kafka: STARTED on 127.0.0.1:$KAFKA_PORT (controller $KAFKA_CONTROLLER_PORT, -Xmx$KAFKA_HEAP, data $KAFKA_DATA, $(elapsed "$t0"))"
}

# Sends $1 to the broker of this folder and waits until it is gone.
signal_kafka() {
  local pid
  pid=$(pid_of "$KAFKA_PID")
  kill "-$1" "$pid" 2>/dev/null || true
  for _ in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    log "kafka: still running 60 s after SIG$1: SIGKILL"
    kill -9 "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$KAFKA_PID"
}

stop_kafka() {
  if kafka_ours; then
    signal_kafka TERM
    log "kafka: stopped"
  fi
}

kill_kafka() {
  if kafka_ours; then
    signal_kafka KILL
    log "kafka: killed (SIGKILL)"
  fi
}

status_kafka() {
  if kafka_ours; then
    echo "kafka: running on 127.0.0.1:$(kafka_real_port) (controller $(sed -n 's/^controller.quorum.voters=1@127.0.0.1://p' "$KAFKA_CONF"); started from $DIR, data $KAFKA_DATA)"
  elif port_open "$KAFKA_PORT"; then
    echo "kafka: another process answers on 127.0.0.1:$KAFKA_PORT (not started from $DIR)"
  else
    echo "kafka: stopped (port $KAFKA_PORT)"
    return 1
  fi
}

# This folder's broker's real port while it runs, else the configured one.
kafka_port() { if kafka_ours; then kafka_real_port; else echo "$KAFKA_PORT"; fi; }

env_kafka() { echo "export KAFKA_BROKERS=127.0.0.1:$(kafka_port)"; }

# ---------------------------------------------------------------------------------------------

# One invocation at a time per services folder (parallel test files may all call `start`).
take_lock() {
  mkdir -p "$DIR" "$LOG_DIR"
  exec 9>"$DIR/.lock"
  flock -w 600 9 || die "another services.sh holds $DIR/.lock"
}

# The services named on the command line, else $TIDEMARK_SERVICES, else all four.
selected() {
  local list="${*:-${TIDEMARK_SERVICES:-$ALL_SERVICES}}" name
  for name in $list; do
    case " $ALL_SERVICES " in
      *" $name "*) echo "$name" ;;
      *) die "unknown service '$name' (known: $ALL_SERVICES)" ;;
    esac
  done
}

usage() {
  echo "usage: $0 start|stop|status|env [postgres|redis|clickhouse|kafka ...]" >&2
  echo "       $0 start-SERVICE|stop-SERVICE|kill-SERVICE|restart-SERVICE [--hard]" >&2
  echo "       $0 kafka-topics --list|--describe|--create ...   (Kafka's TopicCommand)" >&2
  exit 2
}

command="${1:-}"
[ $# -gt 0 ] && shift
case "$command" in
  start)
    services=$(selected "$@")
    take_lock
    for service in $services; do "start_$service"; done
    ;;
  stop)
    services=$(selected "$@")
    take_lock
    # Consumers before what they read from: Kafka and ClickHouse first, Postgres last.
    for service in kafka clickhouse redis postgres; do
      if grep -qx "$service" <<<"$services"; then "stop_$service"; fi
    done
    ;;
  status)
    services=$(selected "$@")
    code=0
    for service in $services; do "status_$service" || code=1; done
    exit "$code"
    ;;
  env)
    services=$(selected "$@")
    for service in $services; do "env_$service"; done
    ;;
  kafka-topics)
    mkdir -p "$LOG_DIR"
    install_kafka
    kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "${KAFKA_BROKERS:-127.0.0.1:$(kafka_port)}" "$@"
    ;;
  start-* | stop-* | kill-* | restart-*)
    action="${command%%-*}"
    service=$(selected "${command#*-}")
    take_lock
    case "$action" in
      restart)
        if [ "${1:-}" = --hard ]; then "kill_$service"; else "stop_$service"; fi
        "start_$service"
        ;;
      *) "${action}_$service" ;;
    esac
    ;;
  *) usage ;;
esac

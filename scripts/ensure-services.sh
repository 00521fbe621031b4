#!/usr/bin/env bash
# Makes sure PostgreSQL (15+), RabbitMQ (3.10+) and Redis (7+) answer on localhost, that
# Herald's database roles and database exist, and that Chromium is installed (UI tests).
#
# For each service: reachable -> nothing to do; installed but stopped -> start it;
# not installed on Debian/Ubuntu -> apt-get install it, then start it. No Docker needed.
# Safe to run again and again. Run as root, or as a user with sudo.
set -euo pipefail

PG_PORT=${PGPORT:-5432}
AMQP_PORT=5672
REDIS_PORT=6379
# Passwords of the local development roles; production sets its own roles and URLs.
HERALD_DB=${HERALD_DB_NAME:-herald}

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {  # name port seconds
  local i
  for ((i = 0; i < $3 * 4; i++)); do
    port_open "$2" && return 0
    sleep 0.25
  done
  die "$1 did not start listening on port $2 within $3 s"
}

APT_UPDATED=0
apt_install() {
  command -v apt-get >/dev/null || die "$* not installed and this is not a Debian/Ubuntu machine: install it by hand"
  if [ "$APT_UPDATED" = 0 ]; then
    log "apt-get update"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    APT_UPDATED=1
  fi
  log "installing $*"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_postgres() {
  if ! port_open "$PG_PORT"; then
    if ! command -v pg_ctlcluster >/dev/null && ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
      apt_install postgresql postgresql-contrib
    fi
    local cluster
    cluster=$(pg_lsclusters -h 2>/dev/null | awk 'NR==1 {print $1" "$2}')
    [ -n "$cluster" ] || die "PostgreSQL is installed but has no cluster (pg_createcluster 15 main)"
    log "starting PostgreSQL cluster $cluster"
    # shellcheck disable=SC2086
    $SUDO pg_ctlcluster --skip-systemctl-redirect $cluster start || $SUDO pg_ctlcluster $cluster start
    wait_port PostgreSQL "$PG_PORT" 30
  fi
  local version
  version=$(psql_super -Atc "SHOW server_version_num")
  [ "$version" -ge 150000 ] || die "PostgreSQL 15+ needed, found $version"
  log "PostgreSQL $version ready on port $PG_PORT"
}

psql_super() {
  if psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -Atc "SELECT 1" >/dev/null 2>&1; then
    psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -q "$@"
  else
    $SUDO -u postgres psql -p "$PG_PORT" -d postgres -v ON_ERROR_STOP=1 -q "$@"
  fi
}

ensure_database() {
  # The owner may create databases (the test suite makes one per test) but is no superuser.
  psql_super <<SQL
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'herald') THEN
    CREATE ROLE herald LOGIN CREATEDB PASSWORD 'herald';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'herald_app') THEN
    CREATE ROLE herald_app LOGIN PASSWORD 'herald_app';
  END IF;
  -- Read-only BI access (the bi schema only; README, "BI"): Power BI and SQL clients.
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'herald_bi') THEN
    CREATE ROLE herald_bi LOGIN PASSWORD 'herald_bi';
  END IF;
END \$\$;
SQL
  if [ "$(psql_super -Atc "SELECT count(*) FROM pg_database WHERE datname = '$HERALD_DB'")" = 0 ]; then
    log "creating database $HERALD_DB"
    psql_super -c "CREATE DATABASE \"$HERALD_DB\" OWNER herald ENCODING 'UTF8' TEMPLATE template0"
  fi
}

ensure_rabbitmq() {
  if ! port_open "$AMQP_PORT"; then
    command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
    log "starting RabbitMQ"
    $SUDO rabbitmq-server -detached || true
    wait_port RabbitMQ "$AMQP_PORT" 90
  fi
  log "RabbitMQ ready on port $AMQP_PORT"
}

ensure_redis() {
  if ! port_open "$REDIS_PORT"; then
    command -v redis-server >/dev/null || apt_install redis-server
    log "starting Redis"
    $SUDO mkdir -p /var/lib/redis /var/log/redis
    $SUDO redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" \
      --dir /var/lib/redis --logfile /var/log/redis/herald.log
    wait_port Redis "$REDIS_PORT" 20
  fi
  local version
  version=$(redis-cli -p "$REDIS_PORT" INFO server 2>/dev/null | tr -d '\r' | awk -F: '/^redis_version/ {print $2}')
  [ "${version%%.*}" -ge 7 ] 2>/dev/null || die "Redis 7+ needed, found ${version:-unknown}"
  log "Redis $version ready on port $REDIS_PORT"
}

# The web UI's browser tests and `herald screenshots` drive Debian's Chromium (Playwright's
# own browser download is not used); fonts-dejavu-core gives it Cyrillic glyphs.
ensure_chromium() {
  if [ ! -x "${HERALD_CHROMIUM:-/usr/bin/chromium}" ]; then
    apt_install chromium chromium-l10n fonts-dejavu-core
  elif [ ! -e /usr/lib/chromium/locales/uk.pak ] && [ -d /usr/lib/chromium/locales ]; then
    # The Ukrainian locale of the browser itself: date inputs in dd.mm.yyyy
    apt_install chromium-l10n
  fi
  log "Chromium ready: $("${HERALD_CHROMIUM:-/usr/bin/chromium}" --version 2>/dev/null || echo installed)"
}

command -v psql >/dev/null || apt_install postgresql-client
ensure_postgres
ensure_database
ensure_rabbitmq
ensure_redis
ensure_chromium

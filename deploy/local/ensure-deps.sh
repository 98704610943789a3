#!/usr/bin/env bash
# Makes sure PostgreSQL and RabbitMQ are installed, running and ready, and that the three
# service databases exist, clio_audit with its two logins (audit-svc/README.md, "Database
# logins"). Idempotent and quick: when both already answer on their ports (5432, 5672) it
# installs, starts and waits for nothing, and only creates the databases and logins that
# are missing (a few psql queries, no root needed).
#
# Otherwise it installs with apt-get when missing (root, or sudo), starts what is stopped,
# and waits until each answers. Local development and CI only: it sets trust auth for
# 127.0.0.1 on a fresh PostgreSQL install, which is not how a production database is run.
#
# --browser: also headless Chromium and its WebDriver (Debian's chromium and
# chromium-driver), for the dashboard's browser tests (the test command asks for them).
#
# CLIO_CONNECT_SKIP_DEPS=1: do nothing (PostgreSQL and RabbitMQ are managed elsewhere and
# already have the databases and logins). psql never prompts for a password (-w).
set -euo pipefail

if [ "${CLIO_CONNECT_SKIP_DEPS:-0}" = 1 ]; then
  printf 'ensure-deps: CLIO_CONNECT_SKIP_DEPS=1, not checking PostgreSQL or RabbitMQ\n' >&2
  exit 0
fi

WANT_BROWSER=0
if [ "${1:-}" = --browser ]; then WANT_BROWSER=1; fi

PGHOST=127.0.0.1
PGPORT=5432
PGUSER=postgres
RABBITMQ_PORT=5672
# A psql that cannot connect fails quickly instead of hanging.
export PGCONNECT_TIMEOUT=5
DATABASES=(clio_auth clio_import clio_audit)
# audit-svc: the owner login runs the migrations; the service login owns nothing and works
# as audit_appender (NOINHERIT: it can do nothing without SET ROLE audit_appender).
AUDIT_DB=clio_audit
AUDIT_OWNER=clio_audit_owner
AUDIT_SERVICE=clio_audit_service

log() { printf 'ensure-deps: %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    log "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  log "installing $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

port_open() { timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null; }

wait_for() { # description, seconds, command...
  local what=$1 seconds=$2; shift 2
  for _ in $(seq 1 "$seconds"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  log "timed out after ${seconds}s waiting for $what"
  return 1
}

pg_query() { psql -w -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -d postgres -tAc "$1"; }
pg_query_in() { psql -w -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -d "$1" -v ON_ERROR_STOP=1 -tAc "$2"; }

ensure_role() { # name, attributes
  if [ "$(pg_query "SELECT 1 FROM pg_roles WHERE rolname = '$1'")" != "1" ]; then
    log "creating role $1 ($2)"
    pg_query "CREATE ROLE $1 $2" >/dev/null
  fi
}

# The audit database's logins, as a database administrator sets them up once (locally
# without passwords: the local stack uses trust auth). A clio_audit made before the logins
# were separated (everything owned by postgres) is handed to the owner login.
ensure_audit_logins() {
  ensure_role audit_appender NOLOGIN
  ensure_role "$AUDIT_OWNER" LOGIN
  ensure_role "$AUDIT_SERVICE" "LOGIN NOINHERIT"
  # The owner is a member so migration 0002 finds nothing to grant; the service login
  # needs it to SET ROLE audit_appender.
  pg_query "GRANT audit_appender TO $AUDIT_OWNER" >/dev/null 2>&1 || true
  pg_query "GRANT audit_appender TO $AUDIT_SERVICE" >/dev/null 2>&1 || true
  if [ "$(pg_query "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '$AUDIT_DB'")" != "$AUDIT_OWNER" ]; then
    log "handing database $AUDIT_DB and its objects to $AUDIT_OWNER"
    pg_query "ALTER DATABASE $AUDIT_DB OWNER TO $AUDIT_OWNER" >/dev/null
    pg_query_in "$AUDIT_DB" "DO \$\$
      DECLARE o record;
      BEGIN
        FOR o IN SELECT c.oid::regclass AS name FROM pg_class c
                 WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
                   AND pg_get_userbyid(c.relowner) <> '$AUDIT_OWNER' LOOP
          EXECUTE format('ALTER TABLE %s OWNER TO $AUDIT_OWNER', o.name);
        END LOOP;
        FOR o IN SELECT p.oid::regprocedure AS name FROM pg_proc p
                 WHERE p.pronamespace = 'public'::regnamespace
                   AND pg_get_userbyid(p.proowner) <> '$AUDIT_OWNER' LOOP
          EXECUTE format('ALTER FUNCTION %s OWNER TO $AUDIT_OWNER', o.name);
        END LOOP;
      END \$\$" >/dev/null
  fi
}

ensure_postgres() {
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    apt_install postgresql postgresql-client
  fi
  if ! port_open "$PGHOST" "$PGPORT"; then
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n1)
    log "starting PostgreSQL $version"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    wait_for "PostgreSQL to accept connections" 60 port_open "$PGHOST" "$PGPORT"
  fi
  if ! pg_query 'SELECT 1' >/dev/null 2>&1; then
    # A fresh Debian install asks for a password on TCP; the local stack uses trust.
    local version hba
    version=$(ls /etc/postgresql | sort -V | tail -n1)
    hba=/etc/postgresql/$version/main/pg_hba.conf
    log "allowing trust auth for 127.0.0.1 in $hba (local stack only)"
    as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  fi
  wait_for "PostgreSQL to answer queries" 60 pg_query 'SELECT 1'
}

# The service databases and the audit logins, whichever are missing.
ensure_databases() {
  for db in "${DATABASES[@]}"; do
    if [ "$(pg_query "SELECT 1 FROM pg_database WHERE datname = '$db'")" != "1" ]; then
      log "creating database $db"
      pg_query "CREATE DATABASE $db" >/dev/null
    fi
  done
  ensure_audit_logins
}

ensure_rabbitmq() {
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    apt_install rabbitmq-server
  fi
  if ! port_open 127.0.0.1 "$RABBITMQ_PORT"; then
    log "starting RabbitMQ"
    as_root rabbitmq-server -detached || true
    wait_for "RabbitMQ to listen on $RABBITMQ_PORT" 120 port_open 127.0.0.1 "$RABBITMQ_PORT"
  fi
  # Listening is not ready: wait until the node has booted its applications.
  wait_for "RabbitMQ to finish starting" 120 as_root rabbitmqctl -q await_startup
  # Quorum queues and publishing stop on a disk alarm; say so instead of hanging later.
  if as_root rabbitmqctl -q status 2>/dev/null | grep -qi 'disk.*alarm.*true'; then
    log "warning: RabbitMQ reports a disk alarm; publishing will block"
  fi
}

ensure_browser() {
  if [ "$WANT_BROWSER" = 1 ] && ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1; then
    apt_install chromium chromium-driver
  fi
}
ensure_browser

# Both answer, and PostgreSQL takes our queries: nothing to install, start or wait for.
if port_open "$PGHOST" "$PGPORT" && port_open 127.0.0.1 "$RABBITMQ_PORT"; then
  if ! command -v psql >/dev/null 2>&1; then
    apt_install postgresql-client
  fi
  if pg_query 'SELECT 1' >/dev/null 2>&1; then
    ensure_databases
    log "PostgreSQL ($PGPORT) and RabbitMQ ($RABBITMQ_PORT) already answer; databases and logins ready"
    exit 0
  fi
  log "PostgreSQL answers on $PGPORT but refuses $PGUSER without a password: checking its setup"
fi

ensure_postgres
ensure_databases
ensure_rabbitmq
log "PostgreSQL and RabbitMQ are ready"

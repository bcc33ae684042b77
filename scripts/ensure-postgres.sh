#!/usr/bin/env bash
# Make sure a PostgreSQL server runs on localhost for tests/test_tune_workers.py (methodo tune on one
# PostgreSQL study from several workers), and print its DSN on stdout:
#     postgresql://methodo:methodo@localhost:PORT/methodo_test
# Idempotent: a running server, role and database are kept as they are. As root it installs Debian's
# `postgresql` package when missing (apt-get, under a timeout), creates and starts the cluster (the
# server runs as the `postgres` user) and creates the role and database; every wait is bounded.
# Not root and no server: it says what to do on stderr and exits 1.
set -euo pipefail

APT_TIMEOUT="${APT_TIMEOUT:-600}"   # seconds, per apt-get call
WAIT_S="${PG_WAIT_S:-60}"           # seconds to wait for the server to accept connections
PGPORT="${PGPORT:-5432}"
DB="${METHODO_PG_DB:-methodo_test}"
ROLE="${METHODO_PG_ROLE:-methodo}"
PASSWORD="${METHODO_PG_PASSWORD:-methodo}"

# Only the DSN goes to stdout (the Makefile reads it): everything else the tools print goes to stderr
# (pg_ctlcluster prints "Removed stale pid file." on stdout, which once became part of the DSN).
exec 3>&1 1>&2
say() { echo "ensure-postgres: $*" >&2; }

newest_bin() {  # the bin folder of the newest installed server, or nothing
    local v
    v="$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1 || true)"
    [ -n "$v" ] && [ -x "/usr/lib/postgresql/$v/bin/postgres" ] && echo "$v"
}

ready() { pg_isready -q -h localhost -p "$PGPORT" -t 2 >/dev/null 2>&1; }

if [ "$(id -u)" -ne 0 ]; then
    if command -v pg_isready >/dev/null 2>&1 && ready; then
        echo "postgresql://$ROLE:$PASSWORD@localhost:$PGPORT/$DB" >&3
        exit 0
    fi
    say "no PostgreSQL server on localhost:$PGPORT and not root; as root run: bash scripts/ensure-postgres.sh"
    say "(tests/test_tune_workers.py is skipped without it, and fails when CI=true)"
    exit 1
fi

VERSION="$(newest_bin || true)"
if [ -z "$VERSION" ] || ! command -v pg_ctlcluster >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || { say "PostgreSQL is not installed and apt-get is not available"; exit 1; }
    export DEBIAN_FRONTEND=noninteractive
    apt_opts=(-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold
              -o DPkg::Lock::Timeout=60 -o Acquire::Retries=2 -o Acquire::http::Timeout=30)
    say "installing postgresql (apt-get)..."
    timeout "$APT_TIMEOUT" apt-get update -qq "${apt_opts[@]}"
    timeout "$APT_TIMEOUT" apt-get install -y -qq --no-install-recommends "${apt_opts[@]}" postgresql >/dev/null
    VERSION="$(newest_bin || true)"
    [ -n "$VERSION" ] || { say "apt-get finished but no PostgreSQL server is installed"; exit 1; }
fi

if ! ready; then
    # Debian's cluster tools: the cluster's files belong to `postgres`, and pg_ctlcluster runs the server as it.
    if ! pg_lsclusters -h 2>/dev/null | awk '{print $1" "$2}' | grep -qx "$VERSION main"; then
        say "creating cluster $VERSION/main"
        timeout 120 pg_createcluster "$VERSION" main -p "$PGPORT" >/dev/null
    fi
    say "starting PostgreSQL $VERSION (cluster main, port $PGPORT)"
    # The server must not inherit fd 3 (the caller's stdout, often the pipe of a `$(...)`): a daemon holding
    # it open keeps that command substitution waiting for ever (CI hung 80 min on this).
    timeout 120 pg_ctlcluster "$VERSION" main start </dev/null 3>&- || true
    for _ in $(seq 1 "$WAIT_S"); do
        ready && break
        sleep 1
    done
    ready || { say "the server did not accept connections within ${WAIT_S} s; see /var/log/postgresql/"; exit 1; }
fi

psql_admin() { timeout 60 su postgres -s /bin/sh -c "psql -p $PGPORT -v ON_ERROR_STOP=1 -qtA -c \"$1\""; }
if [ "$(psql_admin "SELECT 1 FROM pg_roles WHERE rolname='$ROLE'")" != "1" ]; then
    psql_admin "CREATE ROLE $ROLE LOGIN PASSWORD '$PASSWORD'" >/dev/null
fi
if [ "$(psql_admin "SELECT 1 FROM pg_database WHERE datname='$DB'")" != "1" ]; then
    psql_admin "CREATE DATABASE $DB OWNER $ROLE" >/dev/null
fi
say "PostgreSQL $VERSION ready on localhost:$PGPORT, database $DB"
echo "postgresql://$ROLE:$PASSWORD@localhost:$PGPORT/$DB" >&3

#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine with Rust: installs what it needs
# (PostgreSQL server binaries via apt-get, the Python test clients into .venv via pip),
# then runs every test. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '[test] %s\n' "$*" >&2; }

have_pg() {
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
    || { [ -n "${WALDEN_PG_BIN:-}" ] && [ -x "$WALDEN_PG_BIN/initdb" ]; }
}

if ! have_pg; then
  log "PostgreSQL server binaries not found; installing them with apt-get"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq postgresql >/dev/null
fi
# psql (the endpoint tests drive it) and the JDBC driver with a JDK (a small Java
# program checks the driver DBeaver, DataGrip and Metabase use).
need=()
command -v psql >/dev/null 2>&1 || need+=(postgresql-client)
[ -f /usr/share/java/postgresql.jar ] || need+=(libpostgresql-jdbc-java)
command -v javac >/dev/null 2>&1 || need+=(default-jdk-headless)
if [ "${#need[@]}" -gt 0 ]; then
  log "installing ${need[*]} with apt-get"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
  log "running as root: creating the postgres OS user the test clusters run as (initdb refuses root)"
  useradd --system --home /var/lib/postgresql --shell /bin/bash postgres
fi

log "preparing the Python venv (pyiceberg, duckdb, psycopg, ...)"
WALDEN_TEST_PYTHON="$(bash scripts/python-env.sh | tail -n1)"
export WALDEN_TEST_PYTHON

log "building and running the tests"
cargo test --workspace --locked "$@"

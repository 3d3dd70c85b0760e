#!/usr/bin/env bash
# Create or refresh the Python virtualenv used by walden's interop tests
# (tests/interop/check_lake.py and friends).
#
#   venv location : $WALDEN_VENV if set, else <repo>/.venv
#   base python   : $WALDEN_PYTHON if set, else python3 on PATH
#
# Progress goes to stderr; the LAST line on stdout is the absolute path of the
# venv's python, so callers can do:  PY=$(scripts/python-env.sh | tail -n1)
#
# Idempotent: a stamp file inside the venv records a hash of the requirement
# list (and the base interpreter version); when it matches, nothing is
# installed and the script returns immediately.
set -euo pipefail

log() { printf '[python-env] %s\n' "$*" >&2; }

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_DIR="$(cd "$SCRIPT_DIR/.." && pwd -P)"
VENV="${WALDEN_VENV:-$REPO_DIR/.venv}"
BASE_PY="${WALDEN_PYTHON:-python3}"

# Keep this list sorted/stable: its hash is the stamp.
REQUIREMENTS=(
  "pyiceberg[sql-sqlite]"
  "pyarrow"
  "duckdb==1.5.5"
  "duckdb-extension-avro==1.5.5"
  "duckdb-extension-iceberg==1.5.5"
  "psycopg[binary]"
  "asyncpg"
  "mcp"
  "pgcli"
)

STAMP_NAME=".walden-requirements.sha256"

hash_requirements() {
  # $1 = python version string of the venv interpreter
  { printf '%s\n' "${REQUIREMENTS[@]}"; printf 'python=%s\n' "$1"; } \
    | sha256sum | cut -d' ' -f1
}

venv_python_ok() {
  [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1
}

ensure_venv_module() {
  if "$BASE_PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    return 0
  fi
  log "python venv/ensurepip module missing for $BASE_PY; installing python3-venv via apt-get"
  if ! command -v apt-get >/dev/null 2>&1; then
    log "apt-get not available; install the python3 venv module by hand"
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update >&2
  apt-get install -y python3-venv >&2
  if ! "$BASE_PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    log "python3-venv installed but $BASE_PY still lacks venv/ensurepip (is $BASE_PY the system python?)"
    exit 1
  fi
}

# --- 1. the virtualenv itself -------------------------------------------------
if ! command -v "$BASE_PY" >/dev/null 2>&1; then
  log "base interpreter '$BASE_PY' not found"
  exit 1
fi

if ! venv_python_ok; then
  if [[ -e "$VENV" ]]; then
    if [[ -f "$VENV/pyvenv.cfg" ]]; then
      log "existing venv at $VENV is broken; recreating"
      rm -rf -- "$VENV"
    else
      log "$VENV exists but is not a virtualenv (no pyvenv.cfg); refusing to touch it"
      exit 1
    fi
  fi
  ensure_venv_module
  log "creating venv at $VENV with $("$BASE_PY" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
  mkdir -p -- "$(dirname -- "$VENV")"
  "$BASE_PY" -m venv "$VENV" >&2
fi

VENV_ABS="$(cd "$VENV" && pwd -P)"
PY="$VENV_ABS/bin/python"

# --- 2. requirements ----------------------------------------------------------
PY_VERSION="$("$PY" -c 'import sys; print(".".join(map(str, sys.version_info[:3])))')"
WANT_HASH="$(hash_requirements "$PY_VERSION")"
STAMP="$VENV_ABS/$STAMP_NAME"
HAVE_HASH=""
[[ -f "$STAMP" ]] && HAVE_HASH="$(cat "$STAMP" 2>/dev/null || true)"

if [[ "$HAVE_HASH" == "$WANT_HASH" ]]; then
  log "requirements up to date ($VENV_ABS)"
else
  log "installing requirements into $VENV_ABS (python $PY_VERSION)"
  export PIP_DISABLE_PIP_VERSION_CHECK=1
  "$PY" -m pip install --quiet --upgrade pip >&2 || log "warning: could not upgrade pip; continuing"
  "$PY" -m pip install --quiet "${REQUIREMENTS[@]}" >&2
  # Fail early (before writing the stamp) if something did not land.
  "$PY" - >&2 <<'EOF'
import importlib, os
for mod in ("pyiceberg.catalog.sql", "sqlalchemy", "pyarrow", "duckdb", "psycopg",
            "asyncpg", "mcp", "pgcli", "duckdb_extension_avro", "duckdb_extension_iceberg"):
    try:
        importlib.import_module(mod)
    except ImportError as e:
        raise SystemExit(f"import {mod} failed after install: {e}")
import duckdb
assert duckdb.__version__ == "1.5.5", f"duckdb {duckdb.__version__} != 1.5.5"
# The extension wheels ship the (signed) binaries at extensions/v<duckdb version>/.
for name in ("avro", "iceberg"):
    pkg = importlib.import_module(f"duckdb_extension_{name}")
    path = os.path.join(os.path.dirname(pkg.__file__), "extensions",
                        "v" + duckdb.__version__, f"{name}.duckdb_extension")
    if not os.path.isfile(path):
        raise SystemExit(f"duckdb extension binary missing: {path}")
EOF
  printf '%s\n' "$WANT_HASH" > "$STAMP"
  log "requirements installed"
fi

printf '%s\n' "$PY"

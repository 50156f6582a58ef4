#!/usr/bin/env bash
# Independent-client interop and WebSocket conformance tests for wscluster:
#   1. tests/interop   pytest + Python `websockets`
#   2. tests/node      node --test + the `ws` package
#   3. tests/autobahn  Autobahn|Testsuite cases via `kosoku` against --echo
#
# Usage: scripts/interop.sh            (from anywhere)
# Needs python3 (3.10+, with venv), node 20+ with npm, and cargo unless
# WSCLUSTER_BIN points at a built server.  Every server is started on an
# OS-chosen port and stopped again; nothing listens on a fixed port.
#
# Environment:
#   WSCLUSTER_BIN   server binary; when unset, `cargo build` is run and
#                   target/debug/wscluster is used
#   PYTHON          interpreter for the venv (default python3)
#   INTEROP_SUITES  subset to run, e.g. "python node" (default: python node autobahn)
#
# Caches it keeps (each ignored by git through its own .gitignore):
#   .venv-test/           Python venv: pytest, websockets, kosoku
#   tests/node/node_modules/
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PYTHONDONTWRITEBYTECODE=1
export PIP_DISABLE_PIP_VERSION_CHECK=1
SUITES="${INTEROP_SUITES:-python node autobahn}"
VENV="$ROOT/.venv-test"
PY_REQS=(pytest==9.2.0 websockets==17.4 kosoku==0.1.0 prometheus_client==0.26.0)

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'interop: %s\n' "$*" >&2; exit 2; }

# ---------------------------------------------------------------- server
if [[ -z "${WSCLUSTER_BIN:-}" ]]; then
  say "cargo build"
  command -v cargo >/dev/null || die "cargo not found and WSCLUSTER_BIN not set"
  cargo build --quiet || die "cargo build failed"
  export WSCLUSTER_BIN="$ROOT/target/debug/wscluster"
fi
case "$WSCLUSTER_BIN" in /*) ;; *) export WSCLUSTER_BIN="$ROOT/$WSCLUSTER_BIN" ;; esac
[[ -x "$WSCLUSTER_BIN" ]] || die "server binary $WSCLUSTER_BIN not found"

# ---------------------------------------------------------------- python venv
need_py=0
[[ " $SUITES " == *" python "* || " $SUITES " == *" autobahn "* ]] && need_py=1
if (( need_py )); then
  say "python venv $VENV"
  PYTHON="${PYTHON:-python3}"
  command -v "$PYTHON" >/dev/null || die "$PYTHON not found"
  if [[ ! -x "$VENV/bin/python" ]]; then
    if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
      rm -rf "$VENV"
      # Debian ships venv/ensurepip separately.
      if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        ver="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
        echo "interop: installing python${ver}-venv (python3 -m venv failed)"
        { apt-get install -y -qq "python${ver}-venv" || { apt-get update -qq && apt-get install -y -qq "python${ver}-venv"; }; } >/dev/null \
          || die "could not install python${ver}-venv"
        "$PYTHON" -m venv "$VENV" || die "python venv creation failed"
      else
        die "'$PYTHON -m venv' failed; install the python3-venv package"
      fi
    fi
  fi
  # Keep the venv out of git without touching the repository's .gitignore.
  [[ -f "$VENV/.gitignore" ]] || echo '*' >"$VENV/.gitignore"
  "$VENV/bin/python" -m pip install -q "${PY_REQS[@]}" || die "pip install failed"
  export KOSOKU="$VENV/bin/kosoku"
fi

# ---------------------------------------------------------------- node deps
if [[ " $SUITES " == *" node "* ]]; then
  say "npm dependencies (tests/node)"
  command -v node >/dev/null || die "node not found"
  command -v npm >/dev/null || die "npm not found (Debian: apt-get install npm)"
  major="$(node -p 'process.versions.node.split(".")[0]')"
  (( major >= 20 )) || die "node $major is too old (need 20+)"
  if [[ -f tests/node/package-lock.json ]]; then
    (cd tests/node && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci failed"
  else
    (cd tests/node && npm install --no-audit --no-fund --loglevel=error) || die "npm install failed"
  fi
fi

# ---------------------------------------------------------------- run
declare -A status
run_suite() {
  local name=$1; shift
  say "$name: $*"
  local t0=$SECONDS
  "$@"
  status[$name]=$?
  echo "interop: $name finished with exit ${status[$name]} in $((SECONDS - t0))s"
}

for suite in $SUITES; do
  case "$suite" in
    python)
      run_suite python timeout 300 "$VENV/bin/python" -m pytest -p no:cacheprovider -q -rfE --tb=short tests/interop ;;
    node)
      run_suite node timeout 180 node --test tests/node ;;
    autobahn)
      run_suite autobahn timeout 300 bash tests/autobahn/run.sh ;;
    *) die "unknown suite '$suite' (python, node, autobahn)" ;;
  esac
done

say "summary"
rc=0
for suite in $SUITES; do
  if [[ ${status[$suite]} -eq 0 ]]; then
    echo "interop: $suite ok"
  else
    echo "interop: $suite FAILED (exit ${status[$suite]})"
    rc=1
  fi
done
exit $rc

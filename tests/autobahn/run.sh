#!/usr/bin/env bash
# WebSocket conformance (Autobahn|Testsuite cases, run by the PyPI package
# `kosoku`) against `wscluster serve --echo`.
#
# kosoku facts this script relies on (kosoku 0.1.0, `kosoku --help` and its
# source kosoku/_cli.py, kosoku/_kosoku.pyi):
#   kosoku [-m fuzzingclient] ADDRESS [-i CASE]... [-x CASE]... [-p N] [-o OUTDIR]
#   * fuzzingclient (the default mode) drives a server under test; ADDRESS is
#     `host:port` or `ws://host:port/`.  One connection per case; the server
#     must echo text as text and binary as binary (hence `--echo`: the sgc
#     protocol would answer text with JSON-RPC and send a session message).
#   * -i/-x take case ids or `*` globs and are repeatable; we exclude 12.* and
#     13.* (permessage-deflate, which the server does not offer).
#   * It writes Autobahn-format reports to OUTDIR: index.json maps
#     agent -> case id -> {behavior, behaviorClose, remoteCloseCode, ...}
#     plus one JSON/HTML file per case.
#   * Exit status: 1 when any case did not pass (it raises FailureError and
#     prints "N of M cases failed:" with one line per failed case on stderr),
#     0 otherwise.  A case passes when `behavior` is OK, NON-STRICT or
#     INFORMATIONAL and `behaviorClose` is OK or INFORMATIONAL.  Everything
#     else fails: behavior FAILED / UNIMPLEMENTED / ERROR (ERROR = could not
#     run to a verdict), behaviorClose FAILED / FAILED BY CLIENT / WRONG CODE /
#     UNCLEAN.  NON-STRICT is Autobahn's "deviates from a SHOULD, still
#     conformant"; INFORMATIONAL cases probe behaviour the RFC leaves open.
#
# Pass criterion here = exactly that, checked twice: kosoku's exit status AND
# our own reading of index.json (which also proves that cases actually ran:
# zero results is a failure).
#
# Environment:
#   WSCLUSTER_BIN   server binary (default target/debug/wscluster; relative
#                   paths are taken from the repository root)
#   KOSOKU          kosoku executable (default .venv-test/bin/kosoku, else PATH)
#   AUTOBAHN_CASES  space-separated include globs (default: the whole suite)
#   AUTOBAHN_PARALLEL  kosoku -p (default 2)
#   AUTOBAHN_REPORT_DIR  keep the reports there (default: temp dir, removed)
#   AUTOBAHN_TIMEOUT seconds for the whole kosoku run (default 240)
#   INTEROP_SERVER_ARGS  extra `wscluster serve` flags (also used by the
#                   Python and Node suites)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="${WSCLUSTER_BIN:-target/debug/wscluster}"
case "$BIN" in /*) ;; *) BIN="$ROOT/$BIN" ;; esac

if [[ -n "${KOSOKU:-}" ]]; then
  :
elif [[ -x "$ROOT/.venv-test/bin/kosoku" ]]; then
  KOSOKU="$ROOT/.venv-test/bin/kosoku"
else
  KOSOKU="$(command -v kosoku || true)"
fi
if [[ -z "$KOSOKU" || ! -x "$KOSOKU" ]]; then
  echo "autobahn: kosoku not found (pip install kosoku, or run scripts/interop.sh)" >&2
  exit 2
fi
KOSOKU="$(cd "$(dirname "$KOSOKU")" && pwd)/$(basename "$KOSOKU")"  # we cd later
# Python of kosoku's environment (for the report check and the echo probe).
PY="$(dirname "$KOSOKU")/python"
[[ -x "$PY" ]] || PY="$(command -v python3)"

if [[ ! -x "$BIN" ]]; then
  echo "autobahn: server binary $BIN not found (cargo build, or set WSCLUSTER_BIN)" >&2
  exit 2
fi

# The server reads WSCLUSTER_* settings from the environment: start it clean.
for name in $(compgen -e); do
  if [[ "$name" == WSCLUSTER_* ]]; then unset "$name"; fi
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/wscluster-autobahn.XXXXXX")"
if [[ -n "${AUTOBAHN_REPORT_DIR:-}" ]]; then
  mkdir -p "$AUTOBAHN_REPORT_DIR"
  REPORTS="$(cd "$AUTOBAHN_REPORT_DIR" && pwd)"
else
  REPORTS="$WORK/reports"  # removed on exit
fi
SERVER_PID=""

cleanup() {
  local rc=$?
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 16 MiB is the largest Autobahn message (9.1.6 / 9.2.6); allow 64 MiB.
# shellcheck disable=SC2086  # INTEROP_SERVER_ARGS: extra flags, word-split on purpose
"$BIN" serve --echo --listen 127.0.0.1:0 --cluster-listen 127.0.0.1:0 --max-message-size 67108864 ${INTEROP_SERVER_ARGS:-} \
  >"$WORK/server.out" 2>"$WORK/server.err" &
SERVER_PID=$!

ADDR=""
for _ in $(seq 150); do  # up to 15 s
  # The contract: the first stdout line is `listening ADDR`; tolerate
  # earlier lines here (the interop suites report them).
  line="$(grep -m1 -E '^listening [^[:space:]]+$' "$WORK/server.out" 2>/dev/null || true)"
  if [[ -n "$line" ]]; then
    ADDR="${line#listening }"
    break
  fi
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then break; fi
  sleep 0.1
done
if [[ -z "$ADDR" ]]; then
  echo "autobahn: server did not print 'listening ADDR' (stdout: $(head -c 300 "$WORK/server.out"))" >&2
  echo "--- server stderr ---" >&2; tail -n 40 "$WORK/server.err" >&2
  exit 1
fi
echo "autobahn: echo server on $ADDR (pid $SERVER_PID)"

# Fail fast with a clear message if the server is not a plain echo server.
"$PY" - "$ADDR" <<'PYEOF'
import asyncio, sys
from websockets.asyncio.client import connect

async def main(addr):
    async with connect(f"ws://{addr}/", proxy=None, open_timeout=5, compression=None) as ws:
        for probe in ("echo-probe", b"\x00\x01binary-probe"):
            await ws.send(probe)
            got = await asyncio.wait_for(ws.recv(), 5)
            if got != probe:
                sys.exit(f"autobahn: --echo server answered {got!r} to {probe!r}; expected an echo")

asyncio.run(main(sys.argv[1]))
PYEOF

args=("ws://$ADDR/" -x '12.*' -x '13.*' -p "${AUTOBAHN_PARALLEL:-2}" -o "$REPORTS")
for c in ${AUTOBAHN_CASES:-}; do args+=(-i "$c"); done

set +e
( cd "$WORK" && timeout "${AUTOBAHN_TIMEOUT:-240}" "$KOSOKU" "${args[@]}" ) >"$WORK/kosoku.out" 2>"$WORK/kosoku.err"
krc=$?
set -e
cat "$WORK/kosoku.out"
# kosoku's own failure summary (one line per failed case) goes to stderr.
[[ -s "$WORK/kosoku.err" ]] && cat "$WORK/kosoku.err" >&2
if [[ $krc -eq 124 ]]; then
  echo "autobahn: kosoku did not finish within ${AUTOBAHN_TIMEOUT:-240}s" >&2
fi

set +e
"$PY" - "$REPORTS/index.json" <<'PYEOF'
import collections, json, sys

PASS_BEHAVIOR = {"OK", "NON-STRICT", "INFORMATIONAL"}
PASS_CLOSE = {"OK", "INFORMATIONAL"}
try:
    with open(sys.argv[1]) as f:
        index = json.load(f)
except (OSError, ValueError) as exc:
    print(f"autobahn: no usable report ({exc})", file=sys.stderr)
    print("autobahn: 0 passed, 1 failed")
    sys.exit(1)

def key(case_id):
    return [int(p) for p in case_id.split(".")]

passed = failed = 0
tally = collections.Counter()
for agent, cases in index.items():
    for case_id in sorted(cases, key=key):
        r = cases[case_id]
        tally[(r["behavior"], r["behaviorClose"])] += 1
        if case_id.split(".")[0] in ("12", "13"):
            continue  # never selected; guard against a changed CLI
        if r["behavior"] in PASS_BEHAVIOR and r["behaviorClose"] in PASS_CLOSE:
            passed += 1
        else:
            failed += 1
            print(f"autobahn: FAIL {case_id}: behavior={r['behavior']} "
                  f"behaviorClose={r['behaviorClose']} remoteCloseCode={r.get('remoteCloseCode')}",
                  file=sys.stderr)
summary = ", ".join(f"{b}/{c}: {n}" for (b, c), n in sorted(tally.items()))
print(f"autobahn: verdicts (behavior/behaviorClose): {summary}")
if passed + failed == 0:
    print("autobahn: no case ran", file=sys.stderr)
    failed = 1
print(f"autobahn: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PYEOF
prc=$?
set -e

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  echo "autobahn: the server died during the run" >&2
  tail -n 40 "$WORK/server.err" >&2
  exit 1
fi
if [[ $krc -ne 0 || $prc -ne 0 ]]; then
  [[ -n "${AUTOBAHN_REPORT_DIR:-}" ]] && echo "autobahn: reports kept in $REPORTS" >&2
  exit 1
fi
exit 0

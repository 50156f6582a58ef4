#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what is missing,
# then runs formatting and lint checks, the Rust tests (unit, integration,
# multi-process cluster), the independent-client interop tests (Python
# websockets, Node ws) and the Autobahn conformance cases.
#
# Also a seconds-long smoke run of the benchmark harness (bench/).
#
# Usage: scripts/test.sh      (CI runs exactly this through .ci/run)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { printf '\n==> %s\n' "$*"; }

# System packages the tests need: a redis-server binary (the Redis tests
# start their own on free ports), python3-venv, node and npm.
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings

say "cargo test"
cargo test --quiet 2>&1 | tee target/cargo-test.log | grep -Ev '^(running [0-9]+ tests?|)$' | grep -v '^test .* ok$' || true
if grep -Eq 'test result: FAILED|error(\[E[0-9]+\])?:' target/cargo-test.log \
   || ! grep -q 'test result: ok' target/cargo-test.log; then
  echo "cargo test failed" >&2
  exit 1
fi
rust_passed=$(grep -Eo 'test result: ok\. [0-9]+ passed' target/cargo-test.log | awk '{s+=$4} END {print s}')

say "interop and conformance"
WSCLUSTER_BIN="$ROOT/target/debug/wscluster" bash scripts/interop.sh

say "benchmark harness smoke run"
# Seconds, not a measurement: it checks every scenario (and the Socket.IO
# peer) still runs end to end. Real runs: README, "Benchmarks".
cargo run --quiet -p wscluster-bench -- --smoke --server-bin "$ROOT/target/debug/wscluster" all \
  > target/bench-smoke.log 2>&1 || { tail -40 target/bench-smoke.log; echo "bench smoke failed" >&2; exit 1; }
echo "bench smoke: ok"

say "summary"
echo "rust: ${rust_passed} passed, 0 failed"

#!/usr/bin/env bash
# The test command: installs the pinned tools, checks formatting and lints, starts a private
# MiniStack on a free port, runs every test against it, and stops it again.
# Nothing needs to be running beforehand. CARGO_TARGET_DIR defaults to /tmp/tenure-target so
# repeated runs (and fresh clones) reuse compiled dependencies.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/tenure-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
started=$SECONDS
step() { echo; echo "== $* ($((SECONDS - started)) s)"; }

step "tools (infra/setup.sh)"
infra/setup.sh

step "format and lint"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "build tests"
cargo test --workspace --no-run --quiet

step "start a private MiniStack"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
trap 'infra/ministack.sh stop --port "$port" >/dev/null' EXIT
infra/ministack.sh start --port "$port"
export TENURE_TEST_ENDPOINT="http://127.0.0.1:$port"

step "tests"
cargo test --workspace

step "done in $((SECONDS - started)) s"

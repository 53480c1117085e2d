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
log="$(mktemp)"
# Doc tests are not run: the crate documents with prose, not runnable examples.
set +e
cargo test --workspace --lib --bins --tests 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
read -r passed failed < <(awk '/^test result:/ { p += $4; f += $6 } END { print p + 0, f + 0 }' "$log")
rm -f "$log"
step "done in $((SECONDS - started)) s"
echo "tests: $passed passed, $failed failed"
if (( status != 0 )); then exit "$status"; fi
if (( passed == 0 )); then echo "no test ran" >&2; exit 1; fi

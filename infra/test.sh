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
# Incremental caches only help edit-compile loops; in a test run they cost gigabytes of disk.
export CARGO_INCREMENTAL=0
started=$SECONDS
step() { echo; echo "== $* ($((SECONDS - started)) s)"; }

step "tools (infra/setup.sh)"
infra/setup.sh

step "format and lint"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
# The core builds without AWS and each feature on its own (docs/architecture.md, "Crate
# features"); a database host embedding replica-agent compiles no Lambda runtime or SDK client.
for features in "" client events aws; do
    cargo clippy -p tenure --lib --quiet --no-default-features --features "$features" -- -D warnings
done
if cargo tree -p replica-agent -e normal --prefix none | grep -E '^(lambda_http|lambda_runtime|aws-sdk-dynamodb|aws-sdk-sqs) '; then
    echo "replica-agent pulls in the crates above; it must build with tenure's 'client' feature alone" >&2
    exit 1
fi

step "template checks: cfn-lint, sam validate --lint, checkov"
export PATH="$root/.venv/bin:$PATH" SAM_CLI_TELEMETRY=0
cfn-lint template.yaml
sam validate --lint
checkov -f template.yaml --framework cloudformation --skip-download --compact --quiet

step "build tests"
cargo test --workspace --no-run --quiet

step "release functions for the local stacks (infra/build-functions.sh)"
infra/build-functions.sh

step "start two private MiniStacks (one with AUTH=true) and deploy the template; meanwhile build the model check and the fuzz targets"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port="$(free_port)"; auth_port="$(free_port)"; proxy_port="$(free_port)"
trap 'infra/ministack.sh stop --port "$port" >/dev/null; infra/ministack.sh stop --port "$auth_port" >/dev/null' EXIT
infra/ministack.sh start --port "$port"
infra/ministack.sh start --port "$auth_port" --auth
export TENURE_TEST_ENDPOINT="http://127.0.0.1:$port"
export TENURE_E2E_REGIONS="$root/.local/test-regions-$port.json"
export TENURE_E2E_AUTH_REGIONS="$root/.local/test-regions-auth-$auth_port.json"
# Workers reach their peer region through the IRC tests' fault proxy (tests/irc.rs serves it).
export TENURE_E2E_IRC_PROXY_PORT="$proxy_port"
# Deploying is mostly waiting on MiniStack: it runs in the background while the two optimised
# builds the end of the run needs (the model check, the fuzz targets) compile, one at a time.
{
    .venv/bin/python infra/local_regions.py deploy --endpoint "$TENURE_TEST_ENDPOINT" \
        --out "$TENURE_E2E_REGIONS" --irc-proxy "http://127.0.0.1:$proxy_port" &&
    .venv/bin/python infra/local_regions.py deploy --endpoint "http://127.0.0.1:$auth_port" \
        --regions us-east-1 --out "$TENURE_E2E_AUTH_REGIONS"
} > .local/test-deploy.log 2>&1 & deploy=$!
cargo test --release -p tenure --no-default-features --test lease_model --no-run --quiet
infra/fuzz.sh --build
deploy_status=0
wait "$deploy" || deploy_status=$?
cat .local/test-deploy.log
(( deploy_status == 0 )) || { echo "deploying the local stacks failed" >&2; exit "$deploy_status"; }

step "tests"
log="$(mktemp)"
# Doc tests are not run: the crate documents with prose, not runnable examples.
set +e
cargo test --workspace --no-fail-fast --lib --bins --tests 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# The exhaustive model checks need an optimised build (ignored in the debug run above); the
# model needs only the core, so its optimised build (done during the deploy) has no AWS SDK.
step "model check (optimised, built during the deploy)"
cargo test --release -p tenure --no-default-features --test lease_model -- --nocapture 2>&1 | tee -a "$log"
model_status=${PIPESTATUS[0]}
(( status == 0 )) && status=$model_status
# Fuzz every external input for a short while (the long run: infra/fuzz.sh 600).
step "fuzz (infra/fuzz.sh, 20 s per target)"
infra/fuzz.sh 20
fuzz_status=$?
(( status == 0 )) && status=$fuzz_status
set -e
read -r passed failed < <(awk '/^test result:/ { p += $4; f += $6 } END { print p + 0, f + 0 }' "$log")
rm -f "$log"
step "done in $((SECONDS - started)) s"
echo "tests: $passed passed, $failed failed"
if (( status != 0 )); then exit "$status"; fi
if (( passed == 0 )); then echo "no test ran" >&2; exit 1; fi

#!/usr/bin/env bash
# Builds the five Lambda functions' release bootstraps in one cargo invocation (cargo-lambda,
# the same command `sam build` runs per function, so sam then finds them built and only
# copies them), showing progress: crates compiled, each function as it is linked, elapsed
# time. Then runs `sam build` (log: .local/sam-build.log), uncached: cargo is the cache, and
# SAM's cache would hash the whole repository (.venv included) once per function first.
#
# Why one invocation: sam builds the functions one after another, and each release link
# (LTO over the AWS SDK) runs on one core; cargo links independent binaries side by side.
# It builds for x86_64, the template's default Architecture; with arm64 sam builds on its own.
#   infra/build-functions.sh            # build, then sam build
#   infra/build-functions.sh --no-sam   # the cargo build alone
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PATH="$root/.venv/bin:$PATH" SAM_CLI_TELEMETRY=0
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/tenure-target}"
mkdir -p .local
functions=(lease-check lease-renewer lease-history irc-remote irc-worker irc-dispatcher irc-events)
bins=()
for f in "${functions[@]}"; do bins+=(--bin "$f"); done

started=$SECONDS
echo "build-functions: cargo lambda build --release (${functions[*]}); a cold build compiles the AWS SDK"
# JSON messages on stdout carry the progress; cargo's own status lines go to the log.
if ! cargo lambda build --release "${bins[@]}" --message-format json-render-diagnostics \
        2>.local/functions-build.log \
        | python3 -u infra/cargo_progress.py --prefix build-functions --watch "${functions[*]}"; then
    tail -40 .local/functions-build.log >&2
    echo "build-functions: cargo lambda build failed (log: .local/functions-build.log)" >&2
    exit 1
fi
echo "build-functions: release bootstraps built in $((SECONDS - started)) s"
ls -l "$CARGO_TARGET_DIR"/lambda/*/bootstrap | awk '{printf "build-functions:   %s %.1f MB\n", $NF, $5 / 1048576}'

if [[ "${1:-}" != "--no-sam" ]]; then
    sam_started=$SECONDS
    sam build --no-cached > .local/sam-build.log 2>&1 || { tail -40 .local/sam-build.log >&2; exit 1; }
    echo "build-functions: sam build (copies the built bootstraps) done in $((SECONDS - sam_started)) s"
fi

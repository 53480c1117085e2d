#!/usr/bin/env bash
# Builds everything the demo runs on this machine (debug): the library's two examples, kvdemo
# and tenurectl, in one cargo invocation, with progress. demo.sh, kv-demo.sh and irc-demo.sh
# all build through this one command, so whichever runs first builds and the others find it
# done (building a subset would resolve other features and compile the library again).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/tenure-target}"
mkdir -p .local
started=$SECONDS
if ! cargo build -p tenure --example lease_demo --example regions_demo \
        -p kvdemo --bin kvdemo -p tenurectl --bin tenurectl \
        --message-format json-render-diagnostics 2>.local/demo-build.log \
        | python3 -u infra/cargo_progress.py --prefix build-demo \
            --watch "lease_demo regions_demo kvdemo tenurectl"; then
    tail -40 .local/demo-build.log >&2
    echo "build-demo: cargo build failed (log: .local/demo-build.log)" >&2
    exit 1
fi
echo "build-demo: done in $((SECONDS - started)) s"

#!/usr/bin/env bash
# Inter-region coordinator benchmark (issue 5): deploys both local regions (infra/local-regions.sh,
# direct worker -> irc-remote URLs) and runs `cargo bench -p tenure-testkit --bench irc_throughput`:
# submit -> SUCCEEDED latency one op at a time, then OPS (default 500) ops in a batch.
# Starts MiniStack on port 4566 if it is not running.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
out="$root/.local/bench-irc-regions.json"
rm -f "$out"
"$root/infra/local-regions.sh" deploy --out "$out"
exec cargo bench -p tenure-testkit --bench irc_throughput -- --ops "${OPS:-500}" --regions "$out"

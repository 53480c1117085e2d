#!/usr/bin/env bash
# The failover benchmark (issue 4): deploys the template to MiniStack twice — us-east-1 with
# the default 10 s lease and us-west-2 with a 2 s lease (samconfig env local-fast-us-west-2) —
# then runs `cargo bench -p kvdemo --bench failover`: CYCLES (default 20) kill -9 cycles and
# drains per lease length, and the dynamodb-lease peer at its 2 s TTL on the same MiniStack.
# Starts MiniStack on port 4566 if it is not running. Takes ~15 minutes at 20 cycles.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
"$root/infra/setup.sh"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/tenure-target}"
"$root/infra/ministack.sh" status >/dev/null 2>&1 || "$root/infra/ministack.sh" start
out="$root/.local/bench-regions.json"
rm -f "$out"
"$root/infra/local-regions.sh" deploy --regions us-east-1 --out "$out"
"$root/.venv/bin/python" "$root/infra/local_regions.py" deploy --regions us-west-2 \
    --config-env 'local-fast-{region}' --out "$out"
exec cargo bench -p kvdemo --bench failover -- --cycles "${CYCLES:-20}" --regions "$out"

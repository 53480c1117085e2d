#!/usr/bin/env bash
# The failover benchmark (issue 4): deploys the template to MiniStack twice — us-east-1 with
# the default 10 s lease and us-west-2 with a 2 s lease (samconfig env local-fast-us-west-2) —
# then runs `cargo bench -p kvdemo --bench failover`: CYCLES (default 20) kill -9 cycles and
# drains per lease length, and the dynamodb-lease peer at its 2 s TTL on the same MiniStack.
# Starts MiniStack on port 4566 if it is not running. Takes ~15 minutes at 20 cycles.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
out="$root/.local/bench-regions.json"
rm -f "$out"
"$root/infra/local-regions.sh" deploy --regions us-east-1 --out "$out"
"$root/.venv/bin/python" "$root/infra/local_regions.py" deploy --regions us-west-2 \
    --config-env 'local-fast-{region}' --out "$out"
exec cargo bench -p kvdemo --bench failover -- --cycles "${CYCLES:-20}" --regions "$out"

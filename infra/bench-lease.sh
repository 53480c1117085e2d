#!/usr/bin/env bash
# Protocol v2 figures (issue 11): deploys the template to MiniStack (us-east-1, default 10 s
# lease) and runs the bench client `cargo bench -p tenure-testkit --bench lease_v2`:
#   infra/bench-lease.sh cost [--seconds 30]       request units per host per poll at 1, 100,
#                                                  1000 groups; v1 at 1 and 10 groups
#   infra/bench-lease.sh failover [--groups 1000]  the host holding every group stops
#   infra/bench-lease.sh renewer-outage [--seconds 180]
# Starts MiniStack on port 4566 if it is not running.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
out="$root/.local/bench-lease-regions.json"
rm -f "$out"
"$root/infra/local-regions.sh" deploy --regions us-east-1 --out "$out"
exec cargo bench -q -p tenure-testkit --bench lease_v2 -- "${@:-cost}" --regions "$out"

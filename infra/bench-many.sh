#!/usr/bin/env bash
# Three kvdemo hosts in many groups (issue 12): deploys the template to MiniStack as us-east-1
# (default 10 s lease), then runs `cargo bench -p kvdemo --bench many_groups` with the given
# arguments: `scale` (10 minutes of 3 hosts x 1,000 groups), `failover` (10 kill -9 of the
# host holding all 1,000), `restart` (10 kill -9 and immediate restarts of that host, a new
# incarnation), `drain` (10 drains of one group among 1,000); these four by default; `cost`
# (request units per poll at 1, 100 and 1,000 groups) when asked.
# Options: --groups N, --cycles N, --seconds N, --cost-seconds N. Starts MiniStack on port 4566
# if needed.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
out="$root/.local/bench-many-regions.json"
rm -f "$out"
"$root/infra/local-regions.sh" deploy --regions us-east-1 --out "$out"
exec cargo bench -p kvdemo --bench many_groups -- --regions "$out" "$@"

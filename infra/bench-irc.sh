#!/usr/bin/env bash
# Inter-region coordinator benchmarks on the local regions (deployed by infra/local-regions.sh,
# workers calling the peers' irc-remote directly). Starts MiniStack on port 4566 if it is not
# running.
#   infra/bench-irc.sh             # throughput: submit -> SUCCEEDED one op at a time, then OPS
#                                  # (default 500) ops in a batch from us-east-1 to every other
#                                  # deployed region (REGIONS, default the three)
#   REGIONS=us-east-1,eu-west-1 infra/bench-irc.sh   # the two-region batch, as a baseline
#   infra/bench-irc.sh awaited     # awaited group.put: member primary -> SUCCEEDED (OPS, default 40)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
regions="${REGIONS:-us-east-1,eu-west-1,ap-southeast-2}"
out="$root/.local/bench-irc-regions.json"
rm -f "$out"
"$root/infra/local-regions.sh" deploy --regions "$regions" --out "$out"
case "${1:-throughput}" in
    throughput)
        targets="$(echo "$regions" | tr ',' '\n' | grep -v '^us-east-1$' | paste -sd, -)"
        exec cargo bench -p tenure-testkit --bench irc_throughput -- --ops "${OPS:-500}" \
            --regions "$out" --targets "$targets"
        ;;
    awaited)
        exec cargo bench -p tenure-testkit --bench irc_awaited -- --ops "${OPS:-40}" --regions "$out"
        ;;
    *)
        echo "usage: infra/bench-irc.sh [throughput|awaited]" >&2
        exit 2
        ;;
esac

#!/usr/bin/env bash
# Demo part 3: the inter-region coordinator. us-east-1 submits a group.put for eu-west-1;
# the op goes PENDING -> IN_FLIGHT -> SUCCEEDED (queue, worker, SigV4 call to eu-west-1's
# irc-remote, completion), and the group is then present in eu-west-1. Submitting the same
# op id again is a no-op. Needs MiniStack and both regions deployed (infra/demo.sh does it).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/tenure-target}"
export AWS_ENDPOINT_URL="${AWS_ENDPOINT_URL:-http://127.0.0.1:4566}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
infra/build-demo.sh >/dev/null
ctl="$CARGO_TARGET_DIR/debug/tenurectl"
regions_file="${TENURE_REGIONS_FILE:-.local/regions.json}"
output() { .venv/bin/python -c "import json; print(json.load(open('$regions_file'))['regions']['$1']['$2'])"; }
east() {
    AWS_REGION=us-east-1 TENURE_WORK_ITEMS_TABLE="$(output us-east-1 WorkItemsTable)" \
        TENURE_IRC_QUEUE_URL="$(output us-east-1 IrcQueueUrl)" "$ctl" "$@"
}
west() { AWS_REGION=eu-west-1 TENURE_LEASES_TABLE="$(output eu-west-1 LeasesTable)" TENURE_HOSTS_TABLE="$(output eu-west-1 HostsTable)" "$ctl" "$@"; }

group="orders-$(date +%s)"
echo "1. us-east-1 submits group.put of $group for eu-west-1"
op="$(east ops submit --target-region eu-west-1 --kind group.put --resource "$group" \
    --lease-ms 10000 --member host-a:euw1-az1:3 --member host-b:euw1-az2:2 --member host-c:euw1-az3:1)"
echo "   op $op"
echo "2. following it (status as seen in us-east-1's WorkItems):"
east ops wait "$op" --timeout-s 90
echo "3. the op as us-east-1 records it:"
east ops status "$op" | sed 's/^/   /'
echo "4. the group in eu-west-1:"
west groups show "$group" | sed 's/^/   /'
echo "5. submitting the same op id again changes nothing:"
again="$(east ops submit --op-id "$op" --target-region eu-west-1 --kind group.put --resource "$group" \
    --lease-ms 10000 --member host-a:euw1-az1:3 --member host-b:euw1-az2:2 --member host-c:euw1-az3:1)"
east ops status "$again" | grep -E 'status|attempts' | sed 's/^/   /'
west groups show "$group" | grep -E '^version' | sed 's/^/   eu-west-1 group /; s/$/ (one group.put applied)/'

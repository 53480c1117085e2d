#!/usr/bin/env bash
# Demo part 3: the inter-region coordinator. us-east-1 submits a group.put for eu-west-1;
# the op goes PENDING -> IN_FLIGHT -> SUCCEEDED (queue, worker, SigV4 call to eu-west-1's
# irc-remote, completion), and the group is then present in eu-west-1. Submitting the same
# op id again is a no-op. Then IRC v2: a group.put for ap-southeast-2 that is done only when a
# host serves the group there (WAITING_REMOTE until a kvdemo host checks in), and a 503 outage
# of eu-west-1's irc-remote that holds its ops (no attempts spent) while ops to ap-southeast-2
# go on, all of them SUCCEEDED after recovery. Needs MiniStack and the three regions deployed
# (infra/demo.sh does it).
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

# --- IRC v2: an op followed to a remote state, and a region that fails alone -------------------
bin="$CARGO_TARGET_DIR/debug"
dir=".local/irc-demo/$(date +%s)"; mkdir -p "$dir"
host_pid=""
cleanup() { [[ -n "$host_pid" ]] && kill -9 "$host_pid" 2>/dev/null || true; }
trap cleanup EXIT

served="served-$(date +%s)"
echo
echo "6. an op followed to a remote state: us-east-1 submits group.put of $served for"
echo "   ap-southeast-2 with --await serving: done only when a member serves the group there"
op2="$(east ops submit --target-region ap-southeast-2 --kind group.put --resource "$served" \
    --lease-ms 10000 --member db-apse2-a:apse2-az1:1 --await serving --await-ms 120000)"
echo "   op $op2 (its steps as us-east-1 records them; the dispatcher polls ap-southeast-2):"
east ops wait "$op2" --timeout-s 120 | sed 's/^/   /' & waiter=$!
sleep 5
echo "   ... 5 s later, database host db-apse2-a starts in ap-southeast-2 and checks in:"
AWS_REGION=ap-southeast-2 "$bin/kvdemo" --host db-apse2-a --groups "$served" \
    --lease-check-url "$(output ap-southeast-2 LeaseCheckLocalUrl)" --data-table kvdemo-apse2 \
    --create-table --gate-log "$dir/db-apse2-a.gate.jsonl" > "$dir/db-apse2-a.out" 2>&1 &
host_pid=$!
disown "$host_pid"
wait "$waiter"
east ops status "$op2" | grep -E '^(status|remote|result)' | sed 's/^/   /'
kill -9 "$host_pid" 2>/dev/null || true; host_pid=""

# eu-west-1's irc-remote loses its store (its InboundOps table name points nowhere): every
# call to it answers 503, as in a regional outage. ap-southeast-2 is untouched.
remote_env() { # REGION [TABLE]: set (or restore) irc-remote's InboundOps table
    .venv/bin/python - "$@" <<'PY'
import sys, time, boto3
region, table = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else None)
lam = boto3.client("lambda", region_name=region)
cfn = boto3.client("cloudformation", region_name=region)
outs = {o["OutputKey"]: o["OutputValue"] for o in cfn.describe_stacks(StackName="tenure")["Stacks"][0]["Outputs"]}
name = "tenure-irc-remote"
env = lam.get_function_configuration(FunctionName=name)["Environment"]["Variables"]
env["TENURE_INBOUND_OPS_TABLE"] = table or outs["InboundOpsTable"]
lam.update_function_configuration(FunctionName=name, Environment={"Variables": env})
while lam.get_function_configuration(FunctionName=name).get("LastUpdateStatus") not in (None, "Successful"):
    time.sleep(0.2)
PY
}
regions() { # the target regions as us-east-1's workers see them (tenurectl ops regions)
    AWS_REGION=us-east-1 TENURE_REGION_HEALTH_TABLE="$(output us-east-1 RegionHealthTable)" \
        "$ctl" ops regions "$@"
}

echo
echo "7. a region fails alone: eu-west-1's irc-remote loses its store and answers 503"
remote_env eu-west-1 missing-table
ops=(); base="$(date +%s)"
for n in 1 2 3 4 5 6; do
    ops+=("$(east ops submit --target-region eu-west-1 --kind group.put --resource "outage-$base-$n" \
        --lease-ms 10000 --member host-a:euw1-az1:1)")
done
calm=()
for n in 1 2 3; do
    calm+=("$(east ops submit --target-region ap-southeast-2 --kind group.put --resource "calm-$base-$n" \
        --lease-ms 10000 --member host-a:apse2-az1:1)")
done
for op in "${calm[@]}"; do east ops wait "$op" --timeout-s 60 >/dev/null; done
echo "   3 ops to ap-southeast-2 meanwhile: all SUCCEEDED ($(east ops status "${calm[2]}" | sed -n 's/^attempts *//p'))"
opening=$SECONDS
until regions --json --target-region eu-west-1 | grep -q '"state":"open"' || (( SECONDS - opening > 60 )); do
    sleep 0.5
done
echo "   us-east-1's view of the regions it calls (tenurectl ops regions):"
regions | sed 's/^/     /'
sleep 6
echo "   an op to eu-west-1 now:"
east ops status "${ops[5]}" | grep -E '^(status|attempts|held|last_error)' | sed 's/^/     /'
echo "   eu-west-1 comes back; the dispatcher's next probe finds it alive, the held ops resume:"
remote_env eu-west-1
resumed=$SECONDS
for op in "${ops[@]}"; do east ops wait "$op" --timeout-s 180 >/dev/null; done
echo "   all 6 SUCCEEDED $((SECONDS - resumed)) s after recovery, none FAILED; attempts per op:" \
    "$(for op in "${ops[@]}"; do east ops status "$op" | sed -n 's/^attempts *\([0-9]*\).*/\1/p'; done | paste -sd' ')"
echo "   us-east-1's view of the regions it calls:"
regions | sed 's/^/     /'

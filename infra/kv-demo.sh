#!/usr/bin/env bash
# Demo part 3: three kvdemo hosts (AZ a, b, c) of one group on the local us-east-1 stack.
# Writes go through the primary; kill -9 of the primary and the measured failover; a drain
# and the measured handover; every acknowledged write read back at the end.
# Needs MiniStack and the deployed stack (infra/demo.sh runs this after deploying).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/tenure-target}"
export AWS_ENDPOINT_URL="${AWS_ENDPOINT_URL:-http://127.0.0.1:4566}" AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
cargo build --quiet -p kvdemo -p tenurectl
bin="$CARGO_TARGET_DIR/debug"
outputs=.local/regions.json
url="$(.venv/bin/python -c "import json; print(json.load(open('$outputs'))['regions']['us-east-1']['LeaseCheckLocalUrl'])")"
export TENURE_LEASES_TABLE="$(.venv/bin/python -c "import json; print(json.load(open('$outputs'))['regions']['us-east-1']['LeasesTable'])")"
export TENURE_HOSTS_TABLE="$(.venv/bin/python -c "import json; print(json.load(open('$outputs'))['regions']['us-east-1']['HostsTable'])")"
group="kv-$(date +%s)"; table="kvdemo-data"; dir=".local/kv-demo/$group"; mkdir -p "$dir"
ms() { echo $(( $(date +%s%N) / 1000000 )); }

"$bin/tenurectl" groups create "$group" --member host-a:us-east-1a:3 --member host-b:us-east-1b:2 --member host-c:us-east-1c:1
declare -A pid addr
cleanup() { for h in "${!pid[@]}"; do kill -9 "${pid[$h]}" 2>/dev/null || true; done; }
trap cleanup EXIT
for h in host-a host-b host-c; do
    "$bin/kvdemo" --group "$group" --host "$h" --lease-check-url "$url" --data-table "$table" \
        --create-table --gate-log "$dir/$h.gate.jsonl" > "$dir/$h.out" 2> "$dir/$h.err" &
    pid[$h]=$!
    disown "$!"  # no job-control chatter when the demo kills it
done
for h in host-a host-b host-c; do
    until grep -q '^listening ' "$dir/$h.out" 2>/dev/null; do sleep 0.1; done
    addr[$h]="$(sed -n 's/^listening //p' "$dir/$h.out")"
done
primary() {
    for h in "$@"; do
        if curl -fs "http://${addr[$h]}/status" | grep -q '"state":"primary"'; then echo "$h"; return 0; fi
    done
    return 1
}
wait_primary() { local p; until p="$(primary "$@")"; do sleep 0.02; done; echo "$p"; }
status_all() { for h in "$@"; do printf '  %s: %s\n' "$h" "$(curl -fs "http://${addr[$h]}/status")"; done; }

first="$(wait_primary host-a host-b host-c)"
echo; echo "1. hosts up; primary is $first"; status_all host-a host-b host-c
acked=()
write() { # write HOST KEY VALUE
    if curl -fs -X PUT "http://${addr[$1]}/kv/$2" --data "$3" > /dev/null; then acked+=("$2=$3"); fi
}
for n in $(seq 1 10); do write "$first" "k$n" "v$n"; done
echo "2. ${#acked[@]} writes acknowledged by $first; a secondary refuses:"
others=(); for h in host-a host-b host-c; do [[ $h != "$first" ]] && others+=("$h"); done
curl -s -X PUT "http://${addr[${others[0]}]}/kv/refused" --data x; echo

echo; echo "3. kill -9 $first"
t0=$(ms); kill -9 "${pid[$first]}"; unset "pid[$first]"
second="$(wait_primary "${others[@]}")"; t1=$(ms)
echo "   $second is primary after $((t1 - t0)) ms (bound: lease + skew + poll = 10700 ms from the last heartbeat)"
for n in $(seq 11 20); do write "$second" "k$n" "v$n"; done

echo; echo "4. drain $second (planned handover)"
"$bin/tenurectl" lease drain "$group" "$second"; t0=$(ms)
rest=(); for h in "${others[@]}"; do [[ $h != "$second" ]] && rest+=("$h"); done
third="$(wait_primary "${rest[@]}")"; t1=$(ms)
echo "   $third is primary after $((t1 - t0)) ms (bound: 2 polls = 1000 ms)"
for n in $(seq 21 30); do write "$third" "k$n" "v$n"; done

echo; echo "5. reading back all ${#acked[@]} acknowledged writes"
lost=0
for kv in "${acked[@]}"; do
    k="${kv%%=*}"; v="${kv#*=}"
    got="$(curl -fs "http://${addr[$third]}/kv/$k" | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["value"])')"
    [[ "$got" == "$v" ]] || { echo "   LOST $k (want $v, got $got)"; lost=$((lost + 1)); }
done
echo "   ${#acked[@]} acknowledged, $lost lost"
"$bin/tenurectl" lease show "$group"
[[ $lost -eq 0 ]]

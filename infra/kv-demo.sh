#!/usr/bin/env bash
# Demo part 4: three kvdemo hosts (AZ a, b, c) on the local us-east-1 stack, each serving the
# same 50 replica groups through one host agent (protocol v2: one check per poll for all 50).
# Writes go through each group's primary; kill -9 of the host holding every group and the
# measured failover of all 50 as one; one group handed over alone; every acknowledged write
# read back at the end, the group's leadership history and a picture of who could write when
# (tenurectl timeline, from the gate logs). Needs MiniStack and the deployed stack (infra/demo.sh runs this after
# deploying). KV_DEMO_GROUPS changes the number of groups.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/tenure-target}"
export AWS_ENDPOINT_URL="${AWS_ENDPOINT_URL:-http://127.0.0.1:4566}" AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
infra/build-demo.sh >/dev/null
bin="$CARGO_TARGET_DIR/debug"
outputs=.local/regions.json
output() { .venv/bin/python -c "import json; print(json.load(open('$outputs'))['regions']['us-east-1']['$1'])"; }
url="$(output LeaseCheckLocalUrl)"
export TENURE_LEASES_TABLE="$(output LeasesTable)" TENURE_HOSTS_TABLE="$(output HostsTable)"
n_groups="${KV_DEMO_GROUPS:-50}"
run="$(date +%s)"; table="kvdemo-data"; dir=".local/kv-demo/$run"; mkdir -p "$dir"
ms() { echo $(( $(date +%s%N) / 1000000 )); }
# Host ids carry the run: a host's lease outlives its process, and a new process under an old
# id would first wait out its predecessor's lease (a new incarnation never inherits grants).
hosts=("a-$run" "b-$run" "c-$run")

echo "creating $n_groups groups, each with members ${hosts[*]} (priorities 3, 2, 1)..."
groups=()
for i in $(seq -w 1 "$n_groups"); do groups+=("kv-$run-$i"); done
for g in "${groups[@]}"; do
    "$bin/tenurectl" groups create "$g" --json \
        --member "${hosts[0]}:us-east-1a:3" --member "${hosts[1]}:us-east-1b:2" \
        --member "${hosts[2]}:us-east-1c:1" > /dev/null &
    while (( $(jobs -rp | wc -l) >= 8 )); do wait -n; done
done
wait
printf '%s\n' "${groups[@]}" > "$dir/groups"

declare -A pid addr
cleanup() { for h in "${!pid[@]}"; do kill -9 "${pid[$h]}" 2>/dev/null || true; done; }
trap cleanup EXIT
start_host() { # HOST: starts it and waits until it listens
    local h="$1"
    "$bin/kvdemo" --host "$h" --groups-file "$dir/groups" --lease-check-url "$url" \
        --data-table "$table" --create-table --gate-log "$dir/$h.gate.jsonl" \
        > "$dir/$h.out" 2> "$dir/$h.err" &
    pid[$h]=$!
    disown "$!"  # no job-control chatter when the demo kills it
    until grep -q '^listening ' "$dir/$h.out" 2>/dev/null; do sleep 0.1; done
    addr[$h]="$(sed -n 's/^listening //p' "$dir/$h.out")"
}
field() { .venv/bin/python -c "import json,sys; print(json.load(sys.stdin).get('$1'))"; }
primaries() { curl -fs "http://${addr[$1]}/status" | field primaries 2>/dev/null || echo 0; }
wait_primaries() { # HOST N: until HOST may write N groups
    until [[ "$(primaries "$1")" -ge "$2" ]]; do sleep 0.02; done
}
role() { curl -fs "http://${addr[$1]}/groups/$2/status" | field state 2>/dev/null || echo down; }
wait_role() { until [[ "$(role "$1" "$2")" == "$3" ]]; do sleep 0.02; done; }
status_all() {
    for h in "$@"; do
        printf '  %s: %s\n' "$h" "$(curl -fs "http://${addr[$h]}/status" || echo down)"
    done
}

a="${hosts[0]}" b="${hosts[1]}" c="${hosts[2]}"
# The first host up takes the free groups, whatever its priority (a free group goes to the best
# member among the live ones): a starts first, so the story below begins with a as primary.
start_host "$a"
wait_primaries "$a" "$n_groups"
start_host "$b"
start_host "$c"
echo; echo "1. hosts up; $a (priority 3) holds all $n_groups groups under one host lease"
status_all "${hosts[@]}"
acked=()
write() { # write HOST GROUP KEY VALUE
    if curl -fs -X PUT "http://${addr[$1]}/groups/$2/kv/$3" --data "$4" > /dev/null; then
        acked+=("$2/$3=$4")
    fi
}
for n in $(seq 1 20); do write "$a" "${groups[$(( n % n_groups ))]}" "k$n" "v$n"; done
echo "2. ${#acked[@]} writes acknowledged by $a across its groups; a secondary refuses:"
curl -s -X PUT "http://${addr[$b]}/groups/${groups[0]}/kv/refused" --data x; echo

echo; echo "3. kill -9 $a: all $n_groups groups fail over as one"
t0=$(ms); kill -9 "${pid[$a]}"; unset "pid[$a]"; killed_at=$t0
wait_primaries "$b" "$n_groups"; t1=$(ms)
echo "   $b holds all $n_groups after $((t1 - t0)) ms (bound: lease + skew + poll = 10700 ms from the last heartbeat, plus a round trip)"
echo "   one revocation of $a's host lease covered every group:"
"$bin/tenurectl" hosts show "$a" | sed -n '1,3p;5p' | sed 's/^/   /'
for n in $(seq 21 40); do write "$b" "${groups[$(( n % n_groups ))]}" "k$n" "v$n"; done

one="${groups[6]}"
echo; echo "4. $b hands one group, $one, over (planned step-down); it keeps the other $((n_groups - 1))"
t0=$(ms); stepped_down_at=$t0; curl -fs -X POST "http://${addr[$b]}/groups/$one/step-down" > /dev/null
wait_role "$c" "$one" primary; t1=$(ms)
echo "   $c is primary of $one after $((t1 - t0)) ms (bound: 2 polls = 1000 ms plus round trips); $b may write $(primaries "$b") groups"
for n in $(seq 41 45); do write "$c" "$one" "k$n" "v$n"; done

echo; echo "5. reading back all ${#acked[@]} acknowledged writes"
lost=0
for kv in "${acked[@]}"; do
    path="${kv%%=*}"; v="${kv#*=}"; g="${path%%/*}"; k="${path#*/}"
    got="$(curl -fs "http://${addr[$c]}/groups/$g/kv/$k" | field value)"
    [[ "$got" == "$v" ]] || { echo "   LOST $g/$k (want $v, got $got)"; lost=$((lost + 1)); }
done
echo "   ${#acked[@]} acknowledged, $lost lost"
"$bin/tenurectl" hosts list | grep -E "^HOST|$run"

echo; echo "6. leadership history of $one (lease-history, from the Leases stream): first holder, the"
echo "   revocation of $a's host lease, the planned handover"
export TENURE_LEASE_HISTORY_TABLE="$(output LeaseHistoryTable)"
for _ in $(seq 1 50); do
    # lease-history follows the stream: wait for the handover's acquisition to arrive.
    acquired="$("$bin/tenurectl" lease history "$one" --json | .venv/bin/python -c \
        "import json,sys; print(sum(e['change'] == 'acquired' for e in json.load(sys.stdin)['entries']))")"
    [[ "$acquired" -ge 3 ]] && break
    sleep 0.2
done
"$bin/tenurectl" lease history "$one" | sed 's/^/   /'

echo; echo "7. who could write when, from the three hosts' gate logs (no two at once; grey: nobody could):"
"$bin/tenurectl" timeline --gate-logs "$dir" --out "$dir/timeline.svg" \
    --title "kvdemo: kill -9 of $a, then $b hands $one to $c" \
    --mark "kill -9 $a@$killed_at" --mark "$b steps down from $one@$stepped_down_at" \
    "${groups[0]}" "${groups[1]}" "$one" | sed 's/^/   /'
"$bin/tenurectl" timeline --gate-logs "$dir" --out "$dir/timeline-all.svg" \
    --title "kvdemo: all $n_groups groups" --mark "kill -9 $a@$killed_at" | head -1 | sed 's/^/   all groups: /'
echo "   the picture: $dir/timeline.svg (all $n_groups groups: $dir/timeline-all.svg)"
[[ $lost -eq 0 ]]

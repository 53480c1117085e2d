#!/usr/bin/env bash
# A failing region fails alone (IRC v2): deploys the three local regions with the IRC fault
# proxy in front of every irc-remote, then runs tests/benches/irc_isolation.rs twice: eu-west-1
# answering 503 (an outage) and then 403 (a bad deploy) for OUTAGE_S seconds (default 180),
# while ops go steadily to eu-west-1 and ap-southeast-2. Needs MiniStack (infra/ministack.sh
# start) and the built functions (infra/build-functions.sh).
#   infra/bench-isolation.sh               # both runs
#   STATUSES=503 OUTAGE_S=60 infra/bench-isolation.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
port="$(free_port)"
out="$root/.local/bench-isolation-regions.json"
rm -f "$out"
"$root/infra/local-regions.sh" deploy --out "$out" --irc-proxy "http://127.0.0.1:$port"
for status in ${STATUSES:-503 403}; do
    echo "== eu-west-1 answers $status for ${OUTAGE_S:-180} s"
    cargo bench -p tenure-testkit --bench irc_isolation -- --regions "$out" --proxy-port "$port" \
        --status "$status" --outage-s "${OUTAGE_S:-180}" --before-s "${BEFORE_S:-60}"
done

#!/usr/bin/env bash
# The fault campaigns (issue 6) against the template deployed to a local MiniStack (port 4566,
# started if none is running):
#   infra/campaign.sh lease [FAILOVERS]   default 100: kvdemo hosts behind chaos proxies; kill -9,
#                                         SIGSTOP past the deadline, cut off from lease-check
#   infra/campaign.sh irc [OPS]           default 1000: ops both ways under remote faults,
#                                         duplicate deliveries and dispatcher kills
# Each prints its figures and fails if a check fails (see README "Proving it").
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
case "${1:-}" in
    lease)
        out="$root/.local/campaign-lease-regions.json"
        "$root/infra/local-regions.sh" deploy --regions us-east-1 --out "$out"
        CAMPAIGN_FAILOVERS="${2:-100}" TENURE_E2E_REGIONS="$out" \
            exec cargo test --quiet -p kvdemo --test campaign -- --nocapture
        ;;
    irc)
        # The workers reach the other region through the campaign's fault proxy on this port.
        port="$(free_port)"
        out="$root/.local/campaign-irc-regions.json"
        "$root/infra/local-regions.sh" deploy --out "$out" --irc-proxy "http://127.0.0.1:$port"
        IRC_CAMPAIGN_OPS="${2:-1000}" TENURE_E2E_REGIONS="$out" TENURE_E2E_IRC_PROXY_PORT="$port" \
            exec cargo test --quiet -p tenure-testkit --test irc_campaign -- --nocapture
        ;;
    *)
        echo "usage: infra/campaign.sh lease [FAILOVERS] | irc [OPS]" >&2
        exit 2
        ;;
esac

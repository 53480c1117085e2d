#!/usr/bin/env bash
# The demo: installs the pinned tools, starts MiniStack on 127.0.0.1:4566 (if not running),
# then
#   1. the lease protocol through the library: three hosts, the primary dies and a secondary
#      takes over with a higher epoch, then a drained primary hands over;
#   2. the real stack: builds the template, deploys it as two regions (us-east-1, eu-west-1)
#      on the same MiniStack, creates a group in each, has hosts check through the SigV4-signed
#      Function URL, and watches the scheduled renewer keep the lease across a schedule tick;
#   3. three kvdemo hosts on that stack, each in the same 50 groups through one host agent:
#      writes through each group's primary, kill -9 of the host holding all 50 and the
#      measured failover of all of them as one, one group handed over alone, every
#      acknowledged write read back;
#   4. the inter-region coordinator: us-east-1 submits a group.put for eu-west-1 and follows it
#      PENDING -> IN_FLIGHT -> SUCCEEDED; the group is then present in eu-west-1.
# Leaves MiniStack and the stacks running; `infra/local-regions.sh teardown` and
# `infra/ministack.sh stop` remove them.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/tenure-target}"

infra/setup.sh
infra/ministack.sh start --port 4566
export AWS_ENDPOINT_URL=http://127.0.0.1:4566 AWS_REGION="${AWS_REGION:-us-east-1}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
started=$SECONDS
echo "demo: building the demo's programs (a first build compiles the AWS SDK: a few minutes)"
infra/build-demo.sh

echo; echo "=== part 1: the lease protocol through the library ==="
"$CARGO_TARGET_DIR/debug/examples/lease_demo"

echo; echo "=== part 2: the template deployed as two regions on MiniStack ==="
mkdir -p .local
infra/local-regions.sh deploy
"$CARGO_TARGET_DIR/debug/examples/regions_demo"

echo; echo "=== part 3: three kvdemo hosts in 50 groups in us-east-1: kill -9 moves all 50 as one, one group handed over, every acked write kept ==="
infra/kv-demo.sh

echo; echo "=== part 4: the inter-region coordinator, us-east-1 -> eu-west-1 ==="
infra/irc-demo.sh
echo; echo "demo: done in $((SECONDS - started)) s"

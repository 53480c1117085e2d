#!/usr/bin/env bash
# The demo: installs the pinned tools, starts MiniStack on 127.0.0.1:4566 (if not running),
# builds the functions and deploys the template as three regions (us-east-1, eu-west-1,
# ap-southeast-2; each a peer of the other two) on that MiniStack while it builds its own
# programs, then
#   1. the lease protocol through the library: three hosts, the primary dies and a secondary
#      takes over with a higher epoch, then a drained primary hands over;
#   2. the real stack, every region: creates a group in each, has hosts check through the SigV4-signed
#      Function URL, and watches the scheduled renewer keep the lease across a schedule tick;
#   3. the inter-region coordinator: us-east-1 submits a group.put for eu-west-1 and follows it
#      PENDING -> IN_FLIGHT -> SUCCEEDED; the group is then present in eu-west-1;
#   4. three kvdemo hosts on that stack, each in the same 50 groups through one host agent:
#      writes through each group's primary, kill -9 of the host holding all 50 and the
#      measured failover of all of them as one, one group handed over alone, every
#      acknowledged write read back; it ends with the handed-over group's leadership history
#      (tenurectl lease history) and the picture of who could write when (tenurectl timeline,
#      an SVG under .local/kv-demo/RUN/).
# Leaves MiniStack and the stacks running; `infra/local-regions.sh teardown` and
# `infra/ministack.sh stop` remove them.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/tenure-target}"

started=$SECONDS
infra/setup.sh
infra/ministack.sh start --port 4566
export AWS_ENDPOINT_URL=http://127.0.0.1:4566 AWS_REGION="${AWS_REGION:-us-east-1}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
mkdir -p .local

# The builds come first, one cargo invocation at a time (a first run compiles the AWS SDK twice:
# release for the functions, debug for the demo's own programs). The regions deploy while
# the debug build runs: deploying is mostly waiting on MiniStack, not compiling.
echo "demo: building the seven functions (release; a first build takes about 6 minutes on 2 cores)"
infra/build-functions.sh
echo "demo: deploying three regions in the background (log: .local/demo-deploy.log)"
TENURE_FUNCTIONS_BUILT=1 infra/local-regions.sh deploy > .local/demo-deploy.log 2>&1 & deploy=$!
echo "demo: building the demo's programs (debug; a first build takes about 3 minutes)"
build_status=0
infra/build-demo.sh || build_status=$?
deploy_status=0
wait "$deploy" || deploy_status=$?
sed 's/^/  /' .local/demo-deploy.log
(( deploy_status == 0 )) || { echo "demo: deploying the regions failed" >&2; exit "$deploy_status"; }
(( build_status == 0 )) || exit "$build_status"
echo "demo: built and deployed in $((SECONDS - started)) s"

echo; echo "=== part 1: the lease protocol through the library ==="
"$CARGO_TARGET_DIR/debug/examples/lease_demo"

echo; echo "=== part 2: the template deployed as three regions on MiniStack ==="
"$CARGO_TARGET_DIR/debug/examples/regions_demo"

echo; echo "=== part 3: the inter-region coordinator: us-east-1 -> eu-west-1, an awaited op to ap-southeast-2, an isolated outage of eu-west-1 ==="
infra/irc-demo.sh

echo; echo "=== part 4: three kvdemo hosts in 50 groups in us-east-1: kill -9 moves all 50 as one, one group handed over, every acked write kept; its history and timeline ==="
infra/kv-demo.sh
echo; echo "demo: done in $((SECONDS - started)) s"

#!/usr/bin/env bash
# The demo: installs the pinned tools, starts MiniStack on 127.0.0.1:4566 (if not running),
# and runs the lease demo: three hosts check in, the primary dies and a secondary takes over
# with a higher epoch, then a drained primary hands over. Leaves MiniStack running for
# exploration; stop it with `infra/ministack.sh stop`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/tenure-target}"

infra/setup.sh
infra/ministack.sh start --port 4566
export AWS_ENDPOINT_URL=http://127.0.0.1:4566 AWS_REGION="${AWS_REGION:-us-east-1}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
echo "demo: building (the first build compiles the AWS SDK and takes a few minutes)..."
cargo build --quiet -p tenure --example lease_demo
"$CARGO_TARGET_DIR/debug/examples/lease_demo"

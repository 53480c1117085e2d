#!/usr/bin/env bash
# Builds the template (infra/build-functions.sh) and deploys it to MiniStack as three regional
# stacks (us-east-1, eu-west-1, ap-southeast-2; --regions for others), each a peer of the rest,
# waiting until each answers; or prints their outputs; or tears them down.
#   infra/local-regions.sh deploy|outputs|teardown [--endpoint URL] [--regions r1,r2] [--out FILE]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PATH="$root/.venv/bin:$PATH" SAM_CLI_TELEMETRY=0
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/tenure-target}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
# TENURE_FUNCTIONS_BUILT=1: the caller ran infra/build-functions.sh already (the demo does,
# then deploys while it compiles something else).
if [[ "${1:-}" == "deploy" && "${TENURE_FUNCTIONS_BUILT:-}" != 1 ]]; then
    mkdir -p .local
    infra/build-functions.sh
fi
exec "$root/.venv/bin/python" "$root/infra/local_regions.py" "$@"

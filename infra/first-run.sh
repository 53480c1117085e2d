#!/usr/bin/env bash
# Times a first run on a fresh machine, as BENCHMARKS.md ("First run") measures it: a new clone
# of this repository at COMMIT, empty cargo target, fuzz and tool directories, no .venv, pip's
# cache off; every output line stamped with the seconds since the start.
#   infra/first-run.sh demo|test [COMMIT] [DIR]    # DIR default /tmp/first-run-<demo|test>
# The log is DIR.log; its last line is `rc=N total=S`. The demo leaves MiniStack on port 4566
# running (`DIR/infra/ministack.sh stop`).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
what="${1:?demo or test}" commit="${2:-HEAD}" dir="${3:-/tmp/first-run-$1}"
[[ "$what" == demo || "$what" == test ]] || { echo "first-run: demo or test, not $what" >&2; exit 2; }
rm -rf "$dir" "$dir-target" "$dir-fuzz" "$dir-tools"
git clone -q "$root" "$dir" && git -C "$dir" checkout -q "$commit" || exit 1
cd "$dir"
export CARGO_TARGET_DIR="$dir-target" TENURE_FUZZ_TARGET_DIR="$dir-fuzz" TENURE_TOOLS_DIR="$dir-tools"
export PIP_NO_CACHE_DIR=1
start=$(date +%s)
"infra/$what.sh" 2>&1 | while IFS= read -r line; do
    printf '%5d %s\n' $(( $(date +%s) - start )) "$line"
done | tee "$dir.log"
status=${PIPESTATUS[0]}
echo "rc=$status total=$(( $(date +%s) - start ))" | tee -a "$dir.log"
exit "$status"

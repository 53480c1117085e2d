#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets) for SECONDS each (default 20, the test
# command's short run; `infra/fuzz.sh 600` is the long run in BENCHMARKS.md) and prints each
# target's executions. Installs the pinned cargo-fuzz on first use. Fails on the first crash,
# leaving the input in .local/fuzz/artifacts/<target>/.
#
# The machine has a stable toolchain only: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags,
# and `-s none` builds without AddressSanitizer (the targets are safe Rust; libFuzzer's
# coverage guidance and the targets' assertions are what find bugs here).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# `--build`: install cargo-fuzz and build the targets, run nothing (the test command builds
# while MiniStack deploys, and runs them at the end).
seconds="${1:-20}"
cargo_fuzz_version=0.13.2
tools="${TENURE_TOOLS_DIR:-/tmp/tenure-tools}"
export CARGO_TARGET_DIR="${TENURE_FUZZ_TARGET_DIR:-/tmp/tenure-fuzz-target}"
export RUSTC_BOOTSTRAP=1

if ! "$tools/bin/cargo-fuzz" --version 2>/dev/null | grep -q "$cargo_fuzz_version"; then
    echo "fuzz: installing cargo-fuzz $cargo_fuzz_version into $tools (first run only)" >&2
    CARGO_TARGET_DIR="$tools/build" cargo install --quiet --locked --root "$tools" \
        --version "$cargo_fuzz_version" cargo-fuzz
fi
cargo_fuzz="$tools/bin/cargo-fuzz"

cd fuzz
"$cargo_fuzz" build -s none 2>&1 | grep -vE '^\s*(Compiling|Downloaded|Downloading)' || true
"$cargo_fuzz" build -s none >/dev/null 2>&1
if [[ "$seconds" == "--build" ]]; then
    echo "fuzz: targets built"
    exit 0
fi
total=0
for target in $("$cargo_fuzz" list); do
    corpus="$root/.local/fuzz/corpus/$target" artifacts="$root/.local/fuzz/artifacts/$target/"
    mkdir -p "$corpus" "$artifacts"
    log="$root/.local/fuzz/$target.log"
    # New inputs go to .local; the committed seeds (fuzz/seeds/<target>) are only read.
    seeds=()
    [[ -d "seeds/$target" ]] && seeds=("seeds/$target")
    if ! "$cargo_fuzz" run -s none "$target" "$corpus" "${seeds[@]}" -- \
            -max_total_time="$seconds" -artifact_prefix="$artifacts" -print_final_stats=1 \
            >"$log" 2>&1; then
        tail -30 "$log" >&2
        echo "fuzz: $target FAILED; the input is in $artifacts" >&2
        exit 1
    fi
    runs="$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)"
    cov="$(grep -oE 'cov: [0-9]+' "$log" | tail -1)"
    echo "fuzz: $target: ${runs:-?} executions in ${seconds} s, ${cov:-cov ?}, corpus $(ls "$corpus" | wc -l), no crash"
    total=$((total + ${runs:-0}))
done
echo "fuzz: $total executions in all, no crash"

"""Turns cargo's JSON messages (stdin, --message-format json-render-diagnostics) into a few
progress lines: crates compiled every 20 s, each watched binary as it is built, errors in full.
Exits non-zero when the build failed, so a pipeline with `set -o pipefail` fails with it.

    cargo build --message-format json-render-diagnostics | python3 cargo_progress.py \
        --prefix demo --watch "kvdemo tenurectl"
"""

import argparse
import json
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prefix", default="build")
    parser.add_argument("--watch", default="", help="binaries to report, space separated")
    parser.add_argument("--every", type=float, default=20.0, help="seconds between updates")
    args = parser.parse_args()
    watched = set(args.watch.split())
    started = last = time.monotonic()
    crates = 0
    success = None
    for line in sys.stdin:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        reason = message.get("reason")
        now = time.monotonic()
        if reason == "compiler-artifact":
            crates += 1
            target = message.get("target", {})
            name = target.get("name", "?")
            if name in watched and {"bin", "example"} & set(target.get("kind", [])):
                print(f"{args.prefix}: {name} built ({now - started:.0f} s)", flush=True)
            elif now - last >= args.every:
                print(f"{args.prefix}: {crates} crates compiled, last {name} ({now - started:.0f} s)",
                      flush=True)
                last = now
        elif reason == "compiler-message":
            rendered = message.get("message", {}).get("rendered")
            level = message.get("message", {}).get("level")
            if rendered and level == "error":
                print(rendered, file=sys.stderr, flush=True)
        elif reason == "build-finished":
            success = message.get("success")
    print(f"{args.prefix}: {crates} crates in {time.monotonic() - started:.0f} s", flush=True)
    return 0 if success else 1


if __name__ == "__main__":
    sys.exit(main())

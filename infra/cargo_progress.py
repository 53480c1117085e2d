"""Turns cargo's JSON messages (stdin, --message-format json-render-diagnostics) into a few
progress lines: crates compiled every 20 s, each watched binary as it is built, a line while
one long step (a big crate, a release link) runs without news, errors in full. Exits non-zero
when the build failed, so a pipeline with `set -o pipefail` fails with it.

    cargo build --message-format json-render-diagnostics | python3 cargo_progress.py \
        --prefix demo --watch "kvdemo tenurectl"
"""

import argparse
import json
import sys
import threading
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prefix", default="build")
    parser.add_argument("--watch", default="", help="binaries to report, space separated")
    parser.add_argument("--every", type=float, default=20.0, help="seconds between updates")
    args = parser.parse_args()
    watched = set(args.watch.split())
    started = time.monotonic()
    state = {"crates": 0, "last_print": started, "last": "", "pending": set(watched)}
    lock = threading.Lock()
    done = threading.Event()

    def say(text: str) -> None:
        with lock:
            print(f"{args.prefix}: {text} ({time.monotonic() - started:.0f} s)", flush=True)
            state["last_print"] = time.monotonic()

    def heartbeat() -> None:
        # Cargo says nothing while one crate compiles or a release binary links (minutes for
        # the AWS SDK under LTO): say what is still being built.
        while not done.wait(5.0):
            with lock:
                quiet = time.monotonic() - state["last_print"]
                pending = sorted(state["pending"])
            if quiet >= args.every:
                waiting = f"; waiting for {', '.join(pending)}" if pending else ""
                say(f"{state['crates']} crates compiled, still building after {state['last']}"
                    f"{waiting}")

    threading.Thread(target=heartbeat, daemon=True).start()
    success = None
    for line in sys.stdin:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        reason = message.get("reason")
        if reason == "compiler-artifact":
            target = message.get("target", {})
            name = target.get("name", "?")
            with lock:
                state["crates"] += 1
                state["last"] = name
            if name in watched and {"bin", "example"} & set(target.get("kind", [])):
                with lock:
                    state["pending"].discard(name)
                say(f"{name} built")
            elif time.monotonic() - state["last_print"] >= args.every:
                say(f"{state['crates']} crates compiled, last {name}")
        elif reason == "compiler-message":
            rendered = message.get("message", {}).get("rendered")
            level = message.get("message", {}).get("level")
            if rendered and level == "error":
                print(rendered, file=sys.stderr, flush=True)
        elif reason == "build-finished":
            success = message.get("success")
    done.set()
    say(f"{state['crates']} crates, finished")
    return 0 if success else 1


if __name__ == "__main__":
    sys.exit(main())

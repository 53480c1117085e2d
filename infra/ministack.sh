#!/usr/bin/env bash
# Starts or stops the local AWS (MiniStack) for tenure.
#
#   infra/ministack.sh start [--port N] [--auth]   start bound to 127.0.0.1, wait until healthy
#   infra/ministack.sh stop  [--port N]            stop the one started from here, by its pid
#   infra/ministack.sh status [--port N]
#
# State and logs live under ./.local/ministack-<port>/ (git-ignored). MiniStack gets
# AWS_ENDPOINT_URL in its own environment because it hands that to the functions it runs;
# without it their SDK goes to real AWS. --auth sets AUTH=true (IAM enforced).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cmd="${1:-}"; shift || true
port=4566; auth=false; timeout_s="${MINISTACK_START_TIMEOUT:-60}"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --port) port="$2"; shift 2 ;;
        --auth) auth=true; shift ;;
        *) echo "ministack.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
dir="$root/.local/ministack-$port"
pidfile="$dir/pid"
url="http://127.0.0.1:$port"

healthy() { curl -fs -o /dev/null --max-time 2 "$url/_ministack/health" 2>/dev/null; }
running_pid() { [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null && cat "$pidfile"; }

case "$cmd" in
start)
    if pid="$(running_pid)"; then
        echo "MiniStack already running on $url (pid $pid)"; exit 0
    fi
    if [[ ! -x "$root/.venv/bin/ministack" ]]; then
        echo "MiniStack is not installed: run infra/setup.sh" >&2; exit 1
    fi
    if healthy; then
        echo "port $port already serves something that is not ours; stop it or use --port" >&2; exit 1
    fi
    mkdir -p "$dir/tmp" "$dir/state"
    (
        cd "$dir"
        export GATEWAY_PORT="$port" BIND_HOST=127.0.0.1 MINISTACK_HOST=127.0.0.1 \
            AWS_ENDPOINT_URL="$url" AUTH="$auth" TMPDIR="$dir/tmp" STATE_DIR="$dir/state" \
            S3_DATA_DIR="$dir/s3" LOG_LEVEL="${MINISTACK_LOG_LEVEL:-WARNING}"
        exec setsid "$root/.venv/bin/ministack" > "$dir/ministack.log" 2>&1 < /dev/null
    ) &
    echo $! > "$pidfile"
    deadline=$((SECONDS + timeout_s))
    until healthy; do
        if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            echo "MiniStack exited during start-up; last log lines:" >&2
            tail -20 "$dir/ministack.log" >&2; rm -f "$pidfile"; exit 1
        fi
        if (( SECONDS >= deadline )); then
            echo "MiniStack not healthy on $url after ${timeout_s}s; log: $dir/ministack.log" >&2
            exit 1
        fi
        sleep 0.2
    done
    echo "MiniStack running on $url (pid $(cat "$pidfile"), auth=$auth, log $dir/ministack.log)"
    ;;
stop)
    if pid="$(running_pid)"; then
        kill -- "-$pid" 2>/dev/null || kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 -- "-$pid" 2>/dev/null || true
        echo "MiniStack on port $port stopped (pid $pid)"
    else
        echo "MiniStack on port $port is not running"
    fi
    rm -f "$pidfile"
    ;;
status)
    if pid="$(running_pid)" && healthy; then echo "running on $url (pid $pid)"; else echo "not running"; exit 1; fi
    ;;
*)
    sed -n '2,10p' "$0" >&2; exit 2 ;;
esac

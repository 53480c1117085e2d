# Shared by the benchmark and campaign scripts (source it): the repo root as the working
# directory, the pinned tools, the shared cargo target dir, and a MiniStack on port 4566
# (started if none is running).
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
"$root/infra/setup.sh"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/tenure-target}"
"$root/infra/ministack.sh" status >/dev/null 2>&1 || "$root/infra/ministack.sh" start

# A free TCP port on loopback.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

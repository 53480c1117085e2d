#!/usr/bin/env bash
# Creates ./.venv with every pinned Python tool tenure needs (see infra/requirements*.txt).
# Idempotent: each venv records the hash of its requirements file and is left alone while it
# matches, so a second run takes well under a second.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"

# install_venv DIR REQUIREMENTS: (re)installs DIR from REQUIREMENTS unless already done.
install_venv() {
    local dir="$1" requirements="$2" stamp hash
    stamp="$dir/.tenure-requirements.sha256"
    hash="$(sha256sum "$requirements" | cut -d' ' -f1)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$hash" && -x "$dir/bin/python" ]]; then
        return 0
    fi
    echo "setup: installing $requirements into $dir (first run takes a few minutes)" >&2
    [[ -x "$dir/bin/python" ]] || "$python" -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    echo "$hash" > "$stamp"
}

install_venv .venv infra/requirements.txt
install_venv .venv/ministack infra/requirements-ministack.txt
install_venv .venv/checkov infra/requirements-checkov.txt
# One bin directory for everything: scripts put only ./.venv/bin on PATH.
ln -sf ../ministack/bin/ministack .venv/bin/ministack
ln -sf ../checkov/bin/checkov .venv/bin/checkov

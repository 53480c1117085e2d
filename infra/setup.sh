#!/usr/bin/env bash
# Creates ./.venv with every pinned Python tool tenure needs (see infra/requirements*.txt).
# Idempotent: each venv records the hash of its requirements file and is left alone while it
# matches, so a second run takes well under a second.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"

# install_venv DIR REQUIREMENTS: (re)installs DIR from REQUIREMENTS unless already done; pip's
# output goes to .local/setup-NAME.log (its tail is shown if it fails).
install_venv() {
    local dir="$1" requirements="$2" stamp hash started=$SECONDS log
    log=".local/setup-$(basename "$requirements" .txt).log"
    stamp="$dir/.tenure-requirements.sha256"
    hash="$(sha256sum "$requirements" | cut -d' ' -f1)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$hash" && -x "$dir/bin/python" ]]; then
        return 0
    fi
    echo "setup: installing $requirements into $dir" >&2
    {
        { [[ -x "$dir/bin/python" ]] || "$python" -m venv "$dir"; } &&
            "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip &&
            "$dir/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    } > "$log" 2>&1 || { tail -30 "$log" >&2; echo "setup: installing $requirements failed (log: $log)" >&2; return 1; }
    echo "$hash" > "$stamp"
    echo "setup: $dir ready in $((SECONDS - started)) s" >&2
}

# The three venvs are independent: install them side by side (pip mostly waits on downloads).
# .venv itself first holds the other two, so it is created before they start.
mkdir -p .venv .local
install_venv .venv infra/requirements.txt & main=$!
install_venv .venv/ministack infra/requirements-ministack.txt & ministack=$!
install_venv .venv/checkov infra/requirements-checkov.txt & checkov=$!
status=0
for pid in "$main" "$ministack" "$checkov"; do wait "$pid" || status=1; done
(( status == 0 )) || exit 1
# One bin directory for everything: scripts put only ./.venv/bin on PATH.
ln -sf ../ministack/bin/ministack .venv/bin/ministack
ln -sf ../checkov/bin/checkov .venv/bin/checkov

#!/usr/bin/env bash
# Creates .cache/venv with the pinned Python clients the end-to-end tests drive vireod with:
# pyVmomi, pytest, and Ansible (the PyPI `ansible` package bundles community.vmware, whose modules
# also import requests). Idempotent: does nothing when the pinned versions are already installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=$PWD/.cache/venv
pins=(pyvmomi==9.1.1.0 pytest==9.2.0 ansible==12.3.0 requests==2.32.5)

installed() {
    [ -x "$venv/bin/python" ] || return 1
    local frozen
    frozen=$("$venv/bin/python" -m pip freeze --disable-pip-version-check 2>/dev/null) || return 1
    for pin in "${pins[@]}"; do
        grep -qix "$pin" <<<"$frozen" || return 1
    done
}

installed && exit 0
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${pins[@]}"
installed

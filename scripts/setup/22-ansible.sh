#!/usr/bin/env bash
# Adds Ansible (the PyPI `ansible` package, which bundles community.vmware) and requests (which
# those modules import) to .cache/venv, so the end-to-end tests run stock vmware_* modules against
# vireod. Runs after 20-python-venv.sh; idempotent: does nothing when the pins are installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=$PWD/.cache/venv
pins=(ansible==12.3.0 requests==2.32.5)

installed() {
    local frozen
    frozen=$("$venv/bin/python" -m pip freeze --disable-pip-version-check 2>/dev/null) || return 1
    for pin in "${pins[@]}"; do
        grep -qix "$pin" <<<"$frozen" || return 1
    done
}

installed && exit 0
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${pins[@]}"
installed

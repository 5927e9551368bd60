#!/usr/bin/env bash
# Creates .cache/venv with the pinned Python clients the end-to-end tests drive vireod with
# (pyVmomi, pytest). Idempotent: does nothing when the pinned versions are already installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=$PWD/.cache/venv
pins=(pyvmomi==9.1.1.0 pytest==9.2.0)

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -m pip freeze 2>/dev/null \
    | grep -qx 'pyvmomi==9.1.1.0' && "$venv/bin/python" -m pip freeze | grep -qx 'pytest==9.2.0'; then
    exit 0
fi
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${pins[@]}"

#!/usr/bin/env bash
# Go and Debian's govmomi sources, for the govmomi client test (tests/e2e/test_govmomi.py),
# which builds its program offline in GOPATH mode. Idempotent: a no-op once installed.
set -euo pipefail
packages=(golang-go golang-github-vmware-govmomi-dev)
if dpkg -s "${packages[@]}" >/dev/null 2>&1; then
    exit 0
fi
apt-get update -qq
apt-get install -y -qq "${packages[@]}" >/dev/null

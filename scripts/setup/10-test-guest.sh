#!/usr/bin/env bash
# Setup step: build the test guest kernel the KVM tests boot (cached; see the script it calls).
set -euo pipefail
exec "$(dirname "$0")/../build-test-guest.sh"

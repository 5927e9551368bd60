#!/usr/bin/env bash
# The tools installer ISO (scripts/build-tools-iso.sh), cached in .cache/tools-iso/.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/setup/35-iso-tools.sh
scripts/build-tools-iso.sh >/dev/null

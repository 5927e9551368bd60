#!/usr/bin/env bash
# xorriso (Debian package xorriso), with which the CD-ROM tests and the tools ISO build ISO 9660
# images. Idempotent: does nothing when it is already installed.
set -euo pipefail
if command -v xorriso >/dev/null; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends xorriso >/dev/null
command -v xorriso >/dev/null

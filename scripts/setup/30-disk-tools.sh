#!/usr/bin/env bash
# Tools the disk crate's tests use as their oracle: qemu-img and qemu-io (package qemu-utils).
# Idempotent: does nothing when both are already installed.
set -euo pipefail
if command -v qemu-img >/dev/null && command -v qemu-io >/dev/null; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends qemu-utils >/dev/null
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null

#!/usr/bin/env bash
# Installs QEMU's x86 system emulator for the benchmarks when it is missing: the version of the
# installed qemu-utils (the disk tests' qemu-img oracle, which may come from the release's
# backports, newer than the release's qemu-system-x86), and never by removing anything. A
# backports version comes through a sources list of its own for this one install; the
# system's sources stay as they are.
set -euo pipefail
command -v qemu-system-x86_64 >/dev/null && exit 0
export DEBIAN_FRONTEND=noninteractive
utils=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
apt_options=()
if [[ "$utils" == *bpo* ]]; then
    # The system's sources plus the release's backports, with package lists of their own.
    work=$(mktemp -d /tmp/vireo-apt-backports.XXXXXX)
    trap 'rm -rf "$work"' EXIT
    chmod 755 "$work"
    mkdir -p "$work/parts" "$work/lists/partial"
    cp /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list "$work/parts/" 2>/dev/null || true
    codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
    echo "deb http://deb.debian.org/debian $codename-backports main" >"$work/parts/backports.list"
    apt_options=(-o Dir::Etc::sourceparts="$work/parts" -o Dir::State::lists="$work/lists"
        -o APT::Default-Release="$codename-backports")
fi
apt-get "${apt_options[@]}" update -qq
apt-get "${apt_options[@]}" install -y -qq --no-remove "qemu-system-x86${utils:+=$utils}" >/dev/null

#!/usr/bin/env bash
# Tools vireod's NAT networks use: nft (package nftables) for the masquerade table and dnsmasq
# (package dnsmasq-base: the binary only, no system service) for DHCP and DNS, plus ip(8)
# (iproute2), with which the networking tests build their namespaces.
# Idempotent: does nothing when all three are already installed.
set -euo pipefail
have() { command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ]; }
if have nft && have dnsmasq && have ip; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends nftables dnsmasq-base iproute2 >/dev/null
have nft && have dnsmasq && have ip

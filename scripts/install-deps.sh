#!/usr/bin/env bash
# Installs what Shoal needs to build and to run its lab, tests and
# benchmarks, from Debian's packages. Skips apt entirely when everything is
# already there. Nothing else is downloaded (cargo fetches crates itself).
set -euo pipefail

PKGS=(clang-19 libbpf-dev linux-libc-dev iproute2 iperf3 ethtool tcpdump iputils-ping sockperf procps util-linux curl dnsutils dnsmasq-base dnsperf knot)

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# bpffs for pinned maps and links.
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf

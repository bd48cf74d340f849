#!/usr/bin/env bash
# Installs what Shoal needs to build and to run its lab, tests and
# benchmarks, from Debian's packages. Skips apt entirely when everything is
# already there. Nothing else is downloaded (cargo fetches crates itself).
set -euo pipefail

PKGS=(clang-19 libbpf-dev linux-libc-dev iproute2 iperf3 ethtool tcpdump iputils-ping sockperf procps util-linux curl dnsutils dnsmasq-base dnsperf knot
      qemu-system-x86 busybox-static ipvsadm nftables kmod bpftool
      podman containernetworking-plugins containerd runc docker.io
      mmdebstrap e2fsprogs qemu-utils openssh-client)

find_missing() {
    missing=()
    for p in "${PKGS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
}
find_missing
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # A package from another suite (a backported qemu-utils, say) can be
    # removed to satisfy one we asked for: a second pass puts Debian's own
    # version back.
    find_missing
    if ((${#missing[@]})); then
        echo "installing again (apt removed them): ${missing[*]}" >&2
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi

# bpffs for pinned maps and links.
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf

# A Debian distribution kernel for the IPVS tests (this machine's kernel has
# no IP_VS): the package's files, unpacked outside /tmp (the VM mounts the
# host's root read-only and has its own /tmp), with module dependencies.
VM_DIR=/var/cache/shoal/vm
if [[ ! -e $VM_DIR/ready ]]; then
    pkg=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' | awk '{print $1}' | sort -V | tail -1)
    if [[ -z $pkg ]]; then
        apt-get update -qq
        pkg=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' | awk '{print $1}' | sort -V | tail -1)
    fi
    echo "unpacking $pkg for the IPVS test VM" >&2
    rm -rf "$VM_DIR" && mkdir -p "$VM_DIR/deb" "$VM_DIR/root"
    (cd "$VM_DIR/deb" && apt-get download -qq "$pkg" 2>&1 | grep -v unsandboxed >&2 || true)
    dpkg-deb -x "$VM_DIR"/deb/*.deb "$VM_DIR/root"
    rm -rf "$VM_DIR/deb"
    kver=$(ls "$VM_DIR/root/lib/modules")
    depmod -b "$VM_DIR/root" "$kver"
    echo "$kver" > "$VM_DIR/ready"
fi

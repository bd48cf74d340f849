#!/usr/bin/env bash
# Builds the VM image the real-host cluster boots (scripts/vm-cluster.sh):
# Debian bookworm with systemd as PID 1, its own kernel and initramfs, an
# SSH server that lets in only this machine's key, and the tools the
# cluster's checks use. Made offline from Debian's packages by mmdebstrap,
# from the machine's own apt sources (nothing else is downloaded). The
# Shoal .deb is not in the image: `vm-cluster.sh up` installs it on each VM
# with dpkg, as README's install path says.
#
# Cached in $SHOAL_VM_IMAGE_CACHE (default /var/cache/shoal/vm-image) under
# a key made of this script and scripts/vm/ (what goes into the image), so
# it is rebuilt only when they change. Prints the cache directory:
#   base.qcow2  vmlinuz  initrd.img  id_ed25519(.pub)
set -euo pipefail
cd "$(dirname "$0")/.."

cache_root="${SHOAL_VM_IMAGE_CACHE:-/var/cache/shoal/vm-image}"
key="$(cat "$0" scripts/vm/* | sha256sum | cut -c1-16)"
out="$cache_root/$key"
# Stdout carries only the cache directory (callers capture it): everything
# the tools below print goes to stderr (mke2fs 1.47 says "Creating regular
# file" on stdout even with -q).
exec 3>&1 1>&2
if [ -f "$out/ready" ]; then
    echo "$out" >&3
    exit 0
fi

for tool in mmdebstrap mke2fs qemu-img ssh-keygen; do
    command -v "$tool" >/dev/null || {
        echo "vm-image: $tool is missing: run ./scripts/install-deps.sh" >&2
        exit 1
    }
done

# The machine's own mirrors (deb822 or one-line sources), bookworm's suites.
apt_sources="$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true)"
uris() {
    printf '%s\n' "$apt_sources" | grep -E '^(URIs:|deb )' |
        sed -E 's/^URIs: *//; s/^deb (\[[^]]*\] )?//; s/ .*//' || true
}
mirror="$(uris | grep -v security | head -1 || true)"
security="$(uris | grep security | head -1 || true)"
[ -n "$mirror" ] || {
    echo "vm-image: no Debian mirror in this machine's apt sources" >&2
    exit 1
}

mkdir -p "$(dirname "$cache_root")"
work="$(mktemp -d "${cache_root%/}.build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
ssh-keygen -q -t ed25519 -N '' -C shoal-vm-cluster -f "$work/id_ed25519"

# Packages: systemd as init, the kernel with its initramfs, what README's
# install path and the cluster's checks use.
packages=(
    systemd-sysv udev dbus kmod procps iproute2 iputils-ping netbase
    linux-image-amd64 initramfs-tools
    openssh-server ca-certificates curl iperf3 sockperf tcpdump ethtool
    nftables ipvsadm dnsutils less
)
sources=("deb $mirror bookworm main" "deb $mirror bookworm-updates main")
[ -n "$security" ] && sources+=("deb $security bookworm-security main")

echo "vm-image: mmdebstrap from $mirror (a few minutes)" >&2
mmdebstrap --quiet --variant=apt --include="$(
    IFS=,
    echo "${packages[*]}"
)" \
    --customize-hook='echo shoal-vm > "$1/etc/hostname"' \
    --customize-hook='mkdir -p "$1/root/.ssh" && chmod 700 "$1/root/.ssh"' \
    --customize-hook="cp '$work/id_ed25519.pub' \"\$1/root/.ssh/authorized_keys\"" \
    --customize-hook='chroot "$1" systemctl enable shoal-vm-net.service systemd-networkd.service ssh.service' \
    --setup-hook='mkdir -p "$1/etc/systemd/system" "$1/usr/local/sbin"' \
    --setup-hook="cp scripts/vm/shoal-vm-net.service \"\$1/etc/systemd/system/\"" \
    --setup-hook="install -m755 scripts/vm/shoal-vm-net \"\$1/usr/local/sbin/\"" \
    --customize-hook='printf "/dev/vda / ext4 defaults 0 1\n" > "$1/etc/fstab"' \
    --customize-hook='sed -i "s/^#\?PasswordAuthentication.*/PasswordAuthentication no/" "$1/etc/ssh/sshd_config"' \
    bookworm "$rootfs" "${sources[@]}"

mkdir -p "$work/out"
cp "$rootfs"/boot/vmlinuz-* "$work/out/vmlinuz"
cp "$rootfs"/boot/initrd.img-* "$work/out/initrd.img"
# The disk: ext4 filled from the tree (no loop device, no mount).
mke2fs -q -t ext4 -L shoal-root -d "$rootfs" "$work/root.img" 4G
qemu-img convert -O qcow2 "$work/root.img" "$work/out/base.qcow2"
cp "$work/id_ed25519" "$work/id_ed25519.pub" "$work/out/"
touch "$work/out/ready"
mkdir -p "$cache_root"
rm -rf "$out"
mv "$work/out" "$out"
echo "$out" >&3

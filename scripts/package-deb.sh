#!/usr/bin/env bash
# Builds target/debian/shoal_VERSION_amd64.deb: the binary, the systemd unit,
# its default options (/etc/default/shoal), shell completions and man pages
# generated from the CLI. `cargo deb` builds the same package from
# [package.metadata.deb] in control/Cargo.toml when cargo-deb is installed;
# this script needs only dpkg-deb (an apt package), which every Debian has.
set -euo pipefail
cd "$(dirname "$0")/.."

# SHOAL_BIN: package that binary (the tests pass the one they run; a
# plain build here could re-resolve features and rebuild it).
bin="${SHOAL_BIN:-}"
if [ -z "$bin" ]; then
    cargo build --release --workspace --quiet
    bin=target/release/shoal
fi
version="$("$bin" --version | awk '{print $2}')"
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT

install -Dm755 "$bin" "$root/usr/bin/shoal"
strip "$root/usr/bin/shoal" 2>/dev/null || true
# The CNI plugin is the binary called shoal-cni, where runtimes look
# (Debian's plugins are in /usr/lib/cni; containerd's ctr also looks in
# /opt/cni/bin).
for d in usr/lib/cni opt/cni/bin; do
    mkdir -p "$root/$d"
    ln -s /usr/bin/shoal "$root/$d/shoal-cni"
done
install -Dm644 packaging/shoal.service "$root/lib/systemd/system/shoal.service"
install -Dm644 packaging/shoal.default "$root/etc/default/shoal"
install -Dm644 packaging/shoal.modules "$root/usr/lib/modules-load.d/shoal.conf"
install -Dm644 packaging/shoal.network "$root/usr/lib/systemd/network/05-shoal.network"
"$bin" completions bash | install -Dm644 /dev/stdin "$root/usr/share/bash-completion/completions/shoal"
"$bin" completions zsh | install -Dm644 /dev/stdin "$root/usr/share/zsh/vendor-completions/_shoal"
"$bin" completions fish | install -Dm644 /dev/stdin "$root/usr/share/fish/vendor_completions.d/shoal.fish"
mkdir -p "$root/usr/share/man/man1"
"$bin" man --dir "$root/usr/share/man/man1"
gzip -9n "$root"/usr/share/man/man1/*.1
install -Dm644 README.md "$root/usr/share/doc/shoal/README.md"

mkdir -p "$root/DEBIAN"
size="$(du -sk --exclude=DEBIAN "$root" | cut -f1)"
cat >"$root/DEBIAN/control" <<CONTROL
Package: shoal
Version: $version
Architecture: amd64
Maintainer: Shoal developers <shoal@example.org>
Installed-Size: $size
Depends: libc6, iproute2
Recommends: nftables, ipvsadm
Suggests: podman, containerd, docker.io
Section: net
Priority: optional
Description: Docker Swarm mode networking on an eBPF dataplane
 One binary: the node daemon (VXLAN overlays in eBPF, gossip, embedded DNS,
 VIP load balancing, the ingress routing mesh that keeps client addresses,
 Raft-backed orchestration), a Docker-like CLI, a debug CLI and a lab.
CONTROL
echo "/etc/default/shoal" >"$root/DEBIAN/conffiles"
install -m755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$root/DEBIAN/"

mkdir -p target/debian
out="target/debian/shoal_${version}_amd64.deb"
dpkg-deb --root-owner-group --build "$root" "$out" >/dev/null
echo "$out"

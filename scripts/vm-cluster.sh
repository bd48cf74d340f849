#!/usr/bin/env bash
# A Shoal cluster on real (virtual) hosts: three VMs, each its own qemu and
# kernel with a virtio-net NIC, on one switch (taps on a bridge inside the
# namespace shoalvm-sw, where the qemu processes run) with an outside
# client (namespace shoalvm-client), all on 198.18.10.0/24. Each VM boots
# the image of scripts/vm-image.sh from a disk of its own, installs the
# Shoal .deb with dpkg and runs it under systemd, as README's install path
# says; vm1 inits the swarm and the others join it.
#
#   scripts/vm-cluster.sh up             boot, install, form the swarm
#   scripts/vm-cluster.sh ls             a header, then one VM a line
#   scripts/vm-cluster.sh exec VM -- CMD run CMD on VM (over ssh)
#   scripts/vm-cluster.sh client -- CMD  run CMD in the outside client
#   scripts/vm-cluster.sh stop VM        power VM off (its disk is kept)
#   scripts/vm-cluster.sh start VM       boot VM again from its disk
#   scripts/vm-cluster.sh down           power everything off, remove it all
#
# SHOAL_VM_ACCEL=tcg|kvm (tcg: the default, what works everywhere),
# SHOAL_VM_MEM (MiB, 1024), SHOAL_VM_CLUSTER_DIR (disks, consoles, key).
# Consoles: $SHOAL_VM_CLUSTER_DIR/vmN.console.log.
set -euo pipefail
cd "$(dirname "$0")/.."

COUNT=3
DIR="${SHOAL_VM_CLUSTER_DIR:-/var/tmp/shoal-vm-cluster}"
SW=shoalvm-sw
CLIENT=shoalvm-client
NET=198.18.10
ACCEL="${SHOAL_VM_ACCEL:-tcg}"
MEM="${SHOAL_VM_MEM:-1024}"
# Under TCG a VM takes a minute or two to boot with systemd.
BOOT_WAIT="${SHOAL_VM_BOOT_WAIT:-600}"

die() {
    echo "vm-cluster: $*" >&2
    exit 1
}

index() {
    case "$1" in
    vm[1-9]) echo "${1#vm}" ;;
    *) die "no VM named ${1@Q} (vm1..vm$COUNT)" ;;
    esac
}

vm_ip() { echo "$NET.$((10 + $1))"; }

ssh_vm() {
    local i="$1"
    shift
    ip netns exec "$SW" ssh -i "$DIR/id_ed25519" -o BatchMode=yes \
        -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -o LogLevel=ERROR -o ConnectTimeout=5 -o ServerAliveInterval=5 \
        "root@$(vm_ip "$i")" "$@"
}

running() {
    local pid
    pid="$(cat "$DIR/vm$1.pid" 2>/dev/null)" || return 1
    kill -0 "$pid" 2>/dev/null
}

switch_up() {
    ip netns list | grep -qx "$SW" && return 0
    ip netns add "$SW"
    ip -n "$SW" link set lo up
    ip -n "$SW" link add br0 type bridge
    ip -n "$SW" addr add "$NET.1/24" dev br0
    ip -n "$SW" link set br0 up
    ip netns add "$CLIENT"
    ip -n "$CLIENT" link set lo up
    ip -n "$SW" link add cl0 type veth peer name eth0 netns "$CLIENT"
    ip -n "$SW" link set cl0 master br0 up
    ip -n "$CLIENT" addr add "$NET.100/24" dev eth0
    ip -n "$CLIENT" link set eth0 up
}

boot() {
    local i="$1" image
    image="$(cat "$DIR/image")"
    running "$i" && return 0
    [ -f "$DIR/vm$i.qcow2" ] ||
        qemu-img create -q -f qcow2 -b "$image/base.qcow2" -F qcow2 "$DIR/vm$i.qcow2"
    ip -n "$SW" link del "tap$i" 2>/dev/null || true
    ip -n "$SW" tuntap add "tap$i" mode tap multi_queue
    ip -n "$SW" link set "tap$i" master br0 up
    # Two queue pairs: native XDP on virtio-net wants a TX queue of its own.
    ip netns exec "$SW" qemu-system-x86_64 -name "vm$i" -machine q35 \
        -accel "$ACCEL" -cpu max -smp 1 -m "$MEM" -nodefaults -display none \
        -kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
        -append "root=/dev/vda rw console=ttyS0 net.ifnames=0 panic=-1 shoal.name=vm$i shoal.ip=$(vm_ip "$i")/24" \
        -drive "file=$DIR/vm$i.qcow2,if=virtio,cache=unsafe" \
        -netdev "tap,id=n0,ifname=tap$i,script=no,downscript=no,queues=2" \
        -device "virtio-net-pci,netdev=n0,mq=on,vectors=6,mac=52:54:00:0a:00:0$i" \
        -serial "file:$DIR/vm$i.console.log" \
        -daemonize -pidfile "$DIR/vm$i.pid"
}

wait_ssh() {
    local i="$1" t=0
    until ssh_vm "$i" true 2>/dev/null; do
        running "$i" || die "vm$i stopped while booting (console: $DIR/vm$i.console.log)"
        t=$((t + 5))
        [ "$t" -lt "$BOOT_WAIT" ] || die "vm$i: no ssh after ${BOOT_WAIT}s (console: $DIR/vm$i.console.log)"
        sleep 5
    done
}

install_shoal() {
    local i="$1" deb="$2"
    ssh_vm "$i" 'cat > /tmp/shoal.deb' <"$deb"
    ssh_vm "$i" "dpkg -i /tmp/shoal.deb >/dev/null &&
        sed -i 's|^SHOAL_OPTS=.*|SHOAL_OPTS=\"--advertise-addr $(vm_ip "$i")\"|' /etc/default/shoal &&
        systemctl enable --now shoal 2>/dev/null &&
        for t in \$(seq 100); do [ -S /run/shoal/shoal.sock ] && exit 0; sleep 0.2; done;
        echo 'shoal did not start:' >&2; journalctl -u shoal --no-pager | tail -20 >&2; exit 1"
}

# A failed `up` leaves nothing behind but says what the consoles said.
up_failed() {
    echo "vm-cluster: up failed; the consoles' last lines, then everything is torn down" >&2
    for f in "$DIR"/vm*.console.log; do
        [ -f "$f" ] && { echo "== $f" >&2; tail -15 "$f" >&2; }
    done
    cmd_down
}

cmd_up() {
    mkdir -p "$DIR"
    trap up_failed EXIT
    local image deb
    image="$(scripts/vm-image.sh)"
    echo "$image" >"$DIR/image"
    cp "$image/id_ed25519" "$DIR/id_ed25519"
    chmod 600 "$DIR/id_ed25519"
    SHOAL_BIN="${SHOAL_BIN:-}" scripts/package-deb.sh >/dev/null
    deb="$(ls -t target/debian/shoal_*_amd64.deb | head -1)"
    switch_up
    for i in $(seq "$COUNT"); do boot "$i"; done
    for i in $(seq "$COUNT"); do wait_ssh "$i"; done
    for i in $(seq "$COUNT"); do install_shoal "$i" "$deb"; done
    ssh_vm 1 "shoal swarm init --advertise-addr $(vm_ip 1)" >/dev/null
    local token
    token="$(ssh_vm 1 shoal swarm join-token -q worker)"
    for i in $(seq 2 "$COUNT"); do
        ssh_vm "$i" "shoal swarm join --token $token $(vm_ip 1):2377" >/dev/null
    done
    trap - EXIT
    cmd_ls
}

cmd_ls() {
    printf '%-6s %-15s %-8s %-8s %s\n' NAME ADDRESS STATE PID CONSOLE
    for i in $(seq "$COUNT"); do
        local state=off pid=-
        if running "$i"; then
            state=running
            pid="$(cat "$DIR/vm$i.pid")"
        fi
        printf '%-6s %-15s %-8s %-8s %s\n' "vm$i" "$(vm_ip "$i")" "$state" "$pid" "$DIR/vm$i.console.log"
    done
}

cmd_stop() {
    local i pid
    i="$(index "$1")"
    running "$i" || return 0
    pid="$(cat "$DIR/vm$i.pid")"
    kill "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
}

cmd_start() {
    local i
    i="$(index "$1")"
    boot "$i"
    wait_ssh "$i"
}

cmd_down() {
    for i in $(seq "$COUNT"); do
        if running "$i"; then
            local pid
            pid="$(cat "$DIR/vm$i.pid")"
            kill "$pid" 2>/dev/null || true
            while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
        fi
    done
    ip netns del "$CLIENT" 2>/dev/null || true
    ip netns del "$SW" 2>/dev/null || true
    rm -rf "$DIR"
}

# The remaining words, each quoted for the remote shell.
quoted() {
    local out=""
    for w in "$@"; do out+=" $(printf '%q' "$w")"; done
    echo "$out"
}

case "${1:-}" in
up) cmd_up ;;
ls) cmd_ls ;;
down) cmd_down ;;
stop) cmd_stop "${2:-}" ;;
start) cmd_start "${2:-}" ;;
exec)
    i="$(index "${2:-}")"
    [ "${3:-}" = "--" ] || die "usage: vm-cluster.sh exec VM -- CMD..."
    shift 3
    ssh_vm "$i" "$(quoted "$@")"
    ;;
client)
    [ "${2:-}" = "--" ] || die "usage: vm-cluster.sh client -- CMD..."
    shift 2
    exec ip netns exec "$CLIENT" "$@"
    ;;
*) die "usage: vm-cluster.sh up|ls|exec VM -- CMD|client -- CMD|stop VM|start VM|down" ;;
esac

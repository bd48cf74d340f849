#!/usr/bin/env bash
# The main job: installs what is missing, builds Shoal, brings up a 3-node
# lab cluster that forms a swarm (n1 the manager, n2 and n3 workers, mutual
# TLS on 2377) with 2 endpoints per node on one overlay network, checks that
# every endpoint reaches every other through the eBPF VXLAN dataplane,
# reaches a TCP service (iperf3) on another node, then runs a swarm service
# (3 whoami tasks on an overlay network, one per node) and has the task on n1
# call the task on n3. The lab stays up; `target/release/shoal lab down`
# removes it.
set -euo pipefail
cd "$(dirname "$0")/.."

LAB="${SHOAL_LAB:-lab}"
scripts/install-deps.sh
cargo build --release --workspace --quiet
SHOAL="$PWD/target/release/shoal"

"$SHOAL" lab down --name "$LAB" 2>/dev/null || true
"$SHOAL" lab up --name "$LAB" --nodes 3 --endpoints 2
echo
"$SHOAL" lab check --name "$LAB"
echo
"$SHOAL" lab exec --name "$LAB" n1 -- "$SHOAL" node ls
echo

# A service on n3: iperf3 in endpoint n3-e2, reached from n1-e1.
svc_ip=$("$SHOAL" lab exec --name "$LAB" n3-e2 -- ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1)
"$SHOAL" lab exec --name "$LAB" n3-e2 -- iperf3 -s -1 -D -p 5201
sleep 0.5
rate=$("$SHOAL" lab exec --name "$LAB" n1-e1 -- iperf3 -c "$svc_ip" -p 5201 -t 2 | awk '/receiver/ {print $(NF-2), $(NF-1)}')
echo "service on n3-e2 ($svc_ip:5201) reached from n1-e1: $rate"
echo
"$SHOAL" debug --lab "$LAB" --node n1 drops | grep -E 'TYPE|encap|decap|local |arp_reply'
echo

# A swarm service: 3 whoami tasks (processes in their own namespaces) on a
# swarm overlay network, one per node.
on_n1() { "$SHOAL" lab exec --name "$LAB" n1 -- "$SHOAL" "$@"; }
on_n1 network create appnet >/dev/null
on_n1 service create --name web --replicas 3 --network appnet -- "$SHOAL" whoami --port 80
on_n1 service ps web
# One JSON row per task, as Docker's `--format '{{json .}}'`; the task's
# address is in its full object (`shoal inspect`).
tasks=$(on_n1 service ps web --format json)
task_on() { echo "$tasks" | grep "\"Node\":\"$1\"" | grep -o '"ID":"[a-z0-9]*' | head -1 | cut -d'"' -f4; }
ip_on() { on_n1 inspect "$(task_on "$1")" | tr -d ' \n' | grep -o '"Addresses":\["[0-9.]*' | head -1 | cut -d'"' -f4; }
ip3=$(ip_on n3)
echo
echo "web task on n3 ($ip3:80) answers the web task on n1:"
on_n1 exec "$(task_on n1)" -- curl -s -m 5 "http://$ip3/"
cat <<EOT

The lab is up. Try:
  $SHOAL lab ls --name $LAB
  $SHOAL lab exec --name $LAB n1 -- $SHOAL service ls
  $SHOAL lab exec --name $LAB n1 -- $SHOAL service scale web=6
  $SHOAL lab exec --name $LAB n1-e1 -- ping -c 3 $svc_ip
  $SHOAL debug --lab $LAB --node n1 maps
  $SHOAL lab down --name $LAB
EOT

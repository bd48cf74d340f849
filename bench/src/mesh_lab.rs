//! The routing mesh from outside, in one run: the lab's `client` host on
//! the underlay, against
//!   (a) the backend task straight, through a host-mode port on its node
//!       (no mesh, no overlay: what `mode=host` publishing gives);
//!   (w) a server in the backend node's own namespace (no task, no
//!       veth into it): the wire, for reference;
//!   (b) Shoal's mesh entering at a node without the backend (n3 -> the
//!       task on n1: Maglev, encap, the client's address kept);
//!   (c) a Docker-style mesh of kernel parts: an entry host with nftables
//!       DNAT and masquerade, a bridge and a kernel vxlan device with a
//!       static FDB to the backend host, whose bridge holds the backend's
//!       namespace.
//! Single-stream TCP throughput (iperf3), TCP request/response latency
//! (sockperf), new TCP connections per second (connect, the server
//! closes: this binary as both ends, `--tcp-client`/`--accept-server`;
//! once with 2 blocking clients, where each connection's wait counts, and
//! once at saturation, 16 connections in flight per client, where only
//! the CPU a connection costs does),
//! HTTP/1.0 requests on new connections per second (against `shoal
//! whoami`), small UDP packets per second (iperf3, 18-byte payloads);
//! alternating rounds, medians. `--accel xdp` builds the lab with XDP (the
//! mesh's entry in XDP; the references are the same in either run).

use std::process::Command;

mod common;

use anyhow::{Context, Result};
use clap::Parser;
use common::{
    conn_rate, create_service, iperf, latency_us, on, run, sh, stats, tcp_conn_rate, udp_kpps,
    LabGuard,
};
use serde_json::json;

#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    lab: common::LabArgs,
    /// The lab's hooks (`tc` or `xdp`).
    #[arg(long, default_value = "tc")]
    accel: String,
}

const LAB: &str = "bms";

/// (c): hosts d1 (entry, 198.18.0.101) and d2 (backend host,
/// 198.18.0.102) on the lab's underlay bridge; the backend in d2's
/// container namespace at 10.9.0.3; d1 DNATs its ports there over the
/// kernel overlay and masquerades (Docker's mesh).
fn docker_style(bin: &str, me: &str) -> Result<()> {
    let (ul, br) = (format!("{LAB}-ul"), format!("{LAB}-br"));
    for (i, host) in ["d1", "d2"].iter().enumerate() {
        let h = format!("{LAB}-{host}");
        let ip = format!("198.18.0.{}", 101 + i);
        let bip = format!("10.9.0.{}", 2 + i);
        sh(&format!(
            "ip netns add {h}; ip -n {h} link set lo up
             ip -n {ul} link add {LAB}-{host}p type veth peer name eth0 netns {h}
             ip -n {ul} link set {LAB}-{host}p master {br} up
             ip -n {h} link set eth0 up; ip -n {h} addr add {ip}/24 dev eth0
             ip -n {h} link add br0 type bridge; ip -n {h} link set br0 up
             ip -n {h} link add vxlan0 type vxlan id 5001 dstport 4789 local {ip} dev eth0 nolearning
             ip -n {h} link set vxlan0 mtu 1450 master br0 up
             ip netns exec {h} sysctl -qw net.ipv4.ip_forward=1
             ip -n {h} link set br0 address 02:42:0a:09:00:0{n}
             ip -n {h} addr add {bip}/24 dev br0",
            n = 2 + i
        ))?;
    }
    // The backend's namespace on d2's bridge.
    let c = format!("{LAB}-d2c");
    sh(&format!(
        "ip netns add {c}; ip -n {c} link set lo up
         ip -n {LAB}-d2 link add veth0 mtu 1450 type veth peer name eth0 netns {c}
         ip -n {LAB}-d2 link set veth0 master br0 up
         ip -n {c} link set eth0 address 02:42:0a:09:00:04 up
         ip -n {c} addr add 10.9.0.4/24 dev eth0
         ip -n {c} route add default via 10.9.0.3
         bridge -n {LAB}-d1 fdb append 02:42:0a:09:00:03 dev vxlan0 dst 198.18.0.102
         bridge -n {LAB}-d1 fdb append 02:42:0a:09:00:04 dev vxlan0 dst 198.18.0.102
         bridge -n {LAB}-d2 fdb append 02:42:0a:09:00:02 dev vxlan0 dst 198.18.0.101
         ip -n {LAB}-d1 neigh add 10.9.0.4 lladdr 02:42:0a:09:00:04 dev br0 nud permanent
         ip -n {LAB}-d2c neigh add 10.9.0.2 lladdr 02:42:0a:09:00:02 dev eth0 nud permanent"
    ))?;
    let nft = "table ip mesh {
  chain pre {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr 198.18.0.101 tcp dport { 5201, 11111, 80, 9000 } dnat to 10.9.0.4
    ip daddr 198.18.0.101 udp dport 5201 dnat to 10.9.0.4
  }
  chain post {
    type nat hook postrouting priority srcnat; policy accept;
    oifname \"br0\" masquerade
  }
}
";
    let mut child = Command::new("ip")
        .args(["netns", "exec", &format!("{LAB}-d1"), "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(child.stdin.as_mut().context("nft stdin")?, nft.as_bytes())?;
    if !child.wait()?.success() {
        anyhow::bail!("nft refused the Docker-style mesh rules");
    }
    sh(&format!(
        "ip netns exec {c} sh -c 'iperf3 -s -D -p 5201; (sockperf sr --tcp -i 0.0.0.0 -p 11111 >/dev/null 2>&1 &); ({bin} whoami --port 80 >/dev/null 2>&1 &); ({me} --accept-server 9000 >/dev/null 2>&1 &)'"
    ))?;
    Ok(())
}

/// Kills every process left in these namespaces when dropped.
struct KillIn(Vec<String>);

impl Drop for KillIn {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = sh(&format!("ip netns pids {ns} | xargs -r kill -9"));
        }
    }
}

fn main() -> Result<()> {
    let a = Args::parse();
    if let Some(done) = a.lab.internal_role() {
        return done;
    }
    let shoal = common::shoal_path(a.lab.shoal.clone());
    let bin = shoal.to_string_lossy().into_owned();
    let _lab = LabGuard::fresh(&shoal, LAB);
    run(Command::new(&shoal).args([
        "lab", "up", "--name", LAB, "--nodes", "3", "--accel", &a.accel,
    ]))?;
    on(&shoal, LAB, "n1", &["network", "create", "appnet"])?;
    let me = std::env::current_exe()?.to_string_lossy().into_owned();
    // Two sets of servers in the task: (a) reaches its own set, so the
    // task never sees the same client address and port for two paths
    // (a TIME_WAIT left by one would hold up the other's SYN).
    let server = format!(
        "iperf3 -s -p 5201 & sockperf sr --tcp -i 0.0.0.0 -p 11111 >/dev/null & {me} --accept-server 9000 & \
         iperf3 -s -p 5202 & sockperf sr --tcp -i 0.0.0.0 -p 11112 >/dev/null & {me} --accept-server 9001 & \
         {bin} whoami --port 81 & exec {bin} whoami --port 80"
    );
    create_service(
        &shoal,
        LAB,
        "srv",
        &[
            "--constraint",
            "node.hostname==n1",
            "-p",
            "5201:5201",
            "-p",
            "published=5201,target=5201,protocol=udp",
            "-p",
            "11111:11111",
            "-p",
            "8080:80",
            "-p",
            "9000:9000",
            // (a): the same servers through host-mode ports on n1.
            "-p",
            "published=5301,target=5202,mode=host",
            "-p",
            "published=5301,target=5202,protocol=udp,mode=host",
            "-p",
            "published=11301,target=11112,mode=host",
            "-p",
            "published=8301,target=81,mode=host",
            "-p",
            "published=9301,target=9001,mode=host",
            "--",
            "sh",
            "-c",
            &server,
        ],
    )?;
    // (w): the same servers in n1's own namespace, on other ports.
    sh(&format!(
        "ip netns exec {LAB}-n1 sh -c 'iperf3 -s -D -p 6201; (sockperf sr --tcp -i 0.0.0.0 -p 12111 >/dev/null 2>&1 &); ({bin} whoami --port 7080 >/dev/null 2>&1 &); ({me} --accept-server 7090 >/dev/null 2>&1 &)'"
    ))?;
    // Dropped before the lab: the servers started by hand above go first.
    let _servers = KillIn(vec![format!("{LAB}-n1"), format!("{LAB}-d2c")]);
    docker_style(&bin, &me)?;
    std::thread::sleep(std::time::Duration::from_secs(2));
    let client = format!("{LAB}-client");

    // (path, ip, iperf port, sockperf port, http port, bare TCP port)
    let paths = [
        (
            "(a) straight to the backend task (host port)",
            "198.18.0.1",
            5301,
            11301,
            8301,
            9301,
        ),
        (
            "(w) a server on the backend's node itself",
            "198.18.0.1",
            6201,
            12111,
            7080,
            7090,
        ),
        (
            "(b) Shoal mesh, entering at n3",
            "198.18.0.3",
            5201,
            11111,
            8080,
            9000,
        ),
        (
            "(c) Docker-style kernel mesh",
            "198.18.0.101",
            5201,
            11111,
            80,
            9000,
        ),
    ];
    let mut m: Vec<[Vec<f64>; 6]> = vec![Default::default(); paths.len()];
    for r in 0..a.lab.rounds {
        for (i, (label, ip, ip_port, sp_port, http, bare)) in paths.iter().enumerate() {
            let t = iperf(&client, ip, *ip_port)?;
            let l = latency_us(&client, ip, *sp_port)?;
            let c = conn_rate(&client, ip, *http)?;
            let p = udp_kpps(&client, ip, *ip_port)?;
            let b = tcp_conn_rate(&client, ip, *bare, a.lab.clients, 0)?;
            let s = tcp_conn_rate(&client, ip, *bare, a.lab.clients, a.lab.in_flight)?;
            eprintln!(
                "round {}: {label}: {t:.2} Gbit/s, {l:.1} us, {c:.0} HTTP conn/s, {p:.0} kpps, {b:.0} TCP conn/s, {s:.0} at saturation",
                r + 1
            );
            m[i][0].push(t);
            m[i][1].push(l);
            m[i][2].push(c);
            m[i][3].push(p);
            m[i][4].push(b);
            m[i][5].push(s);
        }
    }
    // What the datapath itself costs per new connection: every node's
    // eBPF time during one more bare-TCP run of (a) and of (b).
    let mut ebpf = vec![];
    for i in [0, 2] {
        let (label, ip, _, _, _, bare) = paths[i];
        let (rate, runs, ns) =
            common::with_ebpf_time(|| tcp_conn_rate(&client, ip, bare, a.lab.clients, 0))?;
        let conns = rate * 2.0; // the client runs for 2 s
        ebpf.push(json!({
            "label": label,
            "ebpf_us_per_connection": ns as f64 / conns / 1000.0,
            "program_runs_per_connection": runs as f64 / conns,
            "ns_per_program_run": ns as f64 / runs.max(1) as f64,
        }));
    }
    let med = |v: &Vec<f64>| stats(v.clone())["median_ms"].as_f64().unwrap_or(0.0);
    let row = |i: usize| {
        json!({
            "label": paths[i].0,
            "throughput_gbit": med(&m[i][0]),
            "rr_latency_us": med(&m[i][1]),
            "new_connections_per_s": med(&m[i][2]),
            "udp_small_kpps": med(&m[i][3]),
            "tcp_connections_per_s": med(&m[i][4]),
            "tcp_connections_per_s_saturated": med(&m[i][5]),
        })
    };
    let (direct, node, shoal_mesh, docker) = (row(0), row(1), row(2), row(3));
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    let report = json!({
        "benchmark": "mesh_lab",
        "accel": a.accel,
        "rounds": a.lab.rounds,
        "direct": direct,
        "node_wire": node,
        "shoal_mesh": shoal_mesh,
        "docker_style_mesh": docker,
        "mesh_vs_direct_throughput": f(&shoal_mesh, "throughput_gbit") / f(&direct, "throughput_gbit"),
        "mesh_vs_node_wire_throughput": f(&shoal_mesh, "throughput_gbit") / f(&node, "throughput_gbit"),
        "mesh_vs_docker_new_connections": f(&shoal_mesh, "new_connections_per_s") / f(&docker, "new_connections_per_s"),
        "mesh_vs_docker_tcp_connections": f(&shoal_mesh, "tcp_connections_per_s") / f(&docker, "tcp_connections_per_s"),
        "mesh_vs_docker_tcp_connections_saturated": f(&shoal_mesh, "tcp_connections_per_s_saturated") / f(&docker, "tcp_connections_per_s_saturated"),
        "direct_vs_docker_tcp_connections_saturated": f(&direct, "tcp_connections_per_s_saturated") / f(&docker, "tcp_connections_per_s_saturated"),
        "connections_in_flight_saturated": a.lab.clients * a.lab.in_flight,
        "mesh_vs_direct_udp_pps": f(&shoal_mesh, "udp_small_kpps") / f(&direct, "udp_small_kpps"),
        "mesh_vs_docker_udp_pps": f(&shoal_mesh, "udp_small_kpps") / f(&docker, "udp_small_kpps"),
        "ebpf_per_connection": ebpf,
    });
    println!(
        "\nRouting mesh from an outside client, 3-node lab ({}), medians of {} alternating rounds\n",
        a.accel, a.lab.rounds
    );
    println!(
        "{:<46} {:>10} {:>10} {:>12} {:>14} {:>12} {:>12}",
        "", "Gbit/s", "RR us", "TCP conn/s", "saturated", "HTTP conn/s", "UDP kpps"
    );
    for v in [&direct, &node, &shoal_mesh, &docker] {
        println!(
            "{:<46} {:>10.2} {:>10.1} {:>12.0} {:>14.0} {:>12.0} {:>12.0}",
            v["label"].as_str().unwrap_or(""),
            f(v, "throughput_gbit"),
            f(v, "rr_latency_us"),
            f(v, "tcp_connections_per_s"),
            f(v, "tcp_connections_per_s_saturated"),
            f(v, "new_connections_per_s"),
            f(v, "udp_small_kpps")
        );
    }
    println!(
        "\nShoal mesh throughput / straight to the task: {:.3} (target >= 0.9; / the node itself: {:.3})\nNew TCP connections Shoal / Docker-style: {:.3}x (target >= 1.5x); HTTP requests on new connections: {:.2}x\nAt saturation ({} connections in flight): Shoal / Docker-style {:.3}x, the task straight / Docker-style {:.3}x",
        report["mesh_vs_direct_throughput"].as_f64().unwrap_or(0.0),
        report["mesh_vs_node_wire_throughput"].as_f64().unwrap_or(0.0),
        report["mesh_vs_docker_tcp_connections"].as_f64().unwrap_or(0.0),
        report["mesh_vs_docker_new_connections"].as_f64().unwrap_or(0.0),
        a.lab.clients * a.lab.in_flight,
        report["mesh_vs_docker_tcp_connections_saturated"].as_f64().unwrap_or(0.0),
        report["direct_vs_docker_tcp_connections_saturated"].as_f64().unwrap_or(0.0)
    );
    println!(
        "Small UDP packets: Shoal mesh / straight {:.2}, Shoal mesh / Docker-style {:.2}x",
        report["mesh_vs_direct_udp_pps"].as_f64().unwrap_or(0.0),
        report["mesh_vs_docker_udp_pps"].as_f64().unwrap_or(0.0)
    );
    for e in &ebpf {
        println!(
            "eBPF per new TCP connection, {}: {:.2} us ({:.1} program runs of {:.0} ns, all nodes)",
            e["label"].as_str().unwrap_or(""),
            f(e, "ebpf_us_per_connection"),
            f(e, "program_runs_per_connection"),
            f(e, "ns_per_program_run")
        );
    }
    let chart = common::rows_chart(
        &format!("Routing mesh from an outside client ({})", a.accel),
        &[&direct, &node, &shoal_mesh, &docker],
        "label",
        &[
            (
                "TCP single stream, Gbit/s (higher is better)",
                "throughput_gbit",
            ),
            (
                "new TCP connections per s (higher is better)",
                "tcp_connections_per_s",
            ),
            (
                "new TCP connections per s at saturation (higher is better)",
                "tcp_connections_per_s_saturated",
            ),
            (
                "TCP request/response, us (lower is better)",
                "rr_latency_us",
            ),
            (
                "HTTP requests on new connections per s (higher is better)",
                "new_connections_per_s",
            ),
            (
                "small UDP packets, kpps (higher is better)",
                "udp_small_kpps",
            ),
        ],
    );
    common::emit(&report, a.lab.json.as_deref(), &chart)?;
    Ok(())
}

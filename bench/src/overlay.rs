//! Overlay benchmark: TCP throughput (iperf3, 1 and 4 streams) and TCP
//! request/response latency (sockperf ping-pong, unpinned and pinned to one
//! CPU) between two hosts, for
//!
//!   (a) the underlay veth (two lab hosts without any eBPF),
//!   (b) a Docker-style kernel overlay built as libnetwork builds it:
//!       bridge + kernel vxlan device + static FDB and neighbour entries,
//!   (c) Shoal with tc hooks (`shoal lab up --accel tc`),
//!   (d) Shoal with XDP hooks (`shoal lab up --accel xdp`),
//!
//! all in one run, rounds alternating between paths so drift on a shared
//! machine hits every path alike. Prints a table and JSON with the ratios to
//! (a) and (b). Needs root, iperf3, sockperf, iproute2.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(about = "Shoal overlay vs underlay vs Docker-style kernel overlay")]
struct Args {
    /// Alternating rounds; the median of each metric is reported.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Seconds per throughput run.
    #[arg(long, default_value_t = 5)]
    duration: u32,
    /// Seconds per latency run.
    #[arg(long, default_value_t = 3)]
    latency_duration: u32,
    /// Write the JSON report here too.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Path of the shoal binary (default: next to this one).
    #[arg(long)]
    shoal: Option<PathBuf>,
}

/// One path between a client and a server namespace.
#[derive(Clone, Debug)]
struct Path {
    key: &'static str,
    label: &'static str,
    client_ns: String,
    server_ns: String,
    server_ip: String,
}

#[derive(Clone, Debug, Default, Serialize)]
struct Metrics {
    gbps_1: f64,
    gbps_4: f64,
    /// sockperf's average latency (half a round trip), microseconds.
    rr_us: f64,
    rr_pinned_us: f64,
}

#[derive(Serialize)]
struct Row {
    path: &'static str,
    label: &'static str,
    #[serde(flatten)]
    m: Metrics,
    vs_underlay: Metrics,
    vs_kernel_overlay: Metrics,
}

const LAB_TC: &str = "bnt";
const LAB_XDP: &str = "bnx";

fn main() -> Result<()> {
    let args = Args::parse();
    let shoal = args.shoal.clone().unwrap_or_else(|| {
        let exe = std::env::current_exe().expect("current_exe");
        exe.parent().expect("bin dir").join("shoal")
    });
    if !shoal.exists() {
        bail!(
            "{} not found: build it with `cargo build --release --workspace`",
            shoal.display()
        );
    }
    let _guard = Cleanup {
        shoal: shoal.clone(),
    };
    cleanup(&shoal);
    let paths = setup(&shoal)?;

    let mut samples: Vec<Vec<Metrics>> = vec![vec![]; paths.len()];
    for round in 0..args.rounds {
        for (i, p) in paths.iter().enumerate() {
            eprintln!("round {}/{}: {}", round + 1, args.rounds, p.label);
            samples[i].push(measure(p, &args)?);
        }
    }
    let med: Vec<Metrics> = samples.iter().map(|s| median(s)).collect();
    let (ul, kov) = (med[0].clone(), med[1].clone());
    let rows: Vec<Row> = paths
        .iter()
        .zip(med)
        .map(|(p, m)| Row {
            path: p.key,
            label: p.label,
            vs_underlay: ratio(&m, &ul),
            vs_kernel_overlay: ratio(&m, &kov),
            m,
        })
        .collect();
    print_table(&rows, &args);
    let report = serde_json::json!({
        "benchmark": "overlay",
        "rounds": args.rounds,
        "duration_s": args.duration,
        "latency_duration_s": args.latency_duration,
        "note": "throughput ratios: higher is better; latency ratios: lower is better",
        "results": rows,
    });
    let chart = common::results_chart(
        "Overlay: Shoal's eBPF VXLAN against the underlay and a kernel overlay",
        &report,
        &[
            ("TCP, 1 stream, Gbit/s", "gbps_1"),
            ("TCP, 4 streams, Gbit/s", "gbps_4"),
            ("TCP request/response, us (lower is better)", "rr_us"),
        ],
    );
    common::emit(&report, args.json.as_deref(), &chart)
}

fn print_table(rows: &[Row], args: &Args) {
    println!(
        "\nTCP over two lab hosts, median of {} rounds ({} s throughput, {} s latency runs)\n",
        args.rounds, args.duration, args.latency_duration
    );
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>9}   {:>17}   {:>17}",
        "path",
        "1 stream",
        "4 streams",
        "RR us",
        "RR pin us",
        "1s/4s vs underlay",
        "1s/4s vs kernel ov"
    );
    for r in rows {
        println!(
            "{:<34} {:>9.2} {:>9.2} {:>9.1} {:>9.1}   {:>8.2}/{:<8.2}   {:>8.2}/{:<8.2}",
            r.label,
            r.m.gbps_1,
            r.m.gbps_4,
            r.m.rr_us,
            r.m.rr_pinned_us,
            r.vs_underlay.gbps_1,
            r.vs_underlay.gbps_4,
            r.vs_kernel_overlay.gbps_1,
            r.vs_kernel_overlay.gbps_4
        );
    }
    println!("\nlatency vs underlay (pinned): {}", {
        rows.iter()
            .map(|r| format!("{} {:.2}x", r.path, r.vs_underlay.rr_pinned_us))
            .collect::<Vec<_>>()
            .join(", ")
    });
    println!();
}

fn ratio(m: &Metrics, base: &Metrics) -> Metrics {
    let r = |a: f64, b: f64| {
        if b > 0.0 {
            (a / b * 100.0).round() / 100.0
        } else {
            0.0
        }
    };
    Metrics {
        gbps_1: r(m.gbps_1, base.gbps_1),
        gbps_4: r(m.gbps_4, base.gbps_4),
        rr_us: r(m.rr_us, base.rr_us),
        rr_pinned_us: r(m.rr_pinned_us, base.rr_pinned_us),
    }
}

fn median(s: &[Metrics]) -> Metrics {
    let med = |f: fn(&Metrics) -> f64| {
        let mut v: Vec<f64> = s.iter().map(f).collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    Metrics {
        gbps_1: med(|m| m.gbps_1),
        gbps_4: med(|m| m.gbps_4),
        rr_us: med(|m| m.rr_us),
        rr_pinned_us: med(|m| m.rr_pinned_us),
    }
}

// ---- setup ------------------------------------------------------------------

fn sh(cmd: &str) -> Result<String> {
    let out = Command::new("sh").args(["-ec", cmd]).output()?;
    if !out.status.success() {
        bail!("`{cmd}` failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

struct Cleanup {
    shoal: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        cleanup(&self.shoal);
    }
}

fn cleanup(shoal: &PathBuf) {
    for lab in [LAB_TC, LAB_XDP] {
        let _ = Command::new(shoal)
            .args(["lab", "down", "--name", lab])
            .stderr(Stdio::null())
            .status();
    }
    let _ = Command::new("pkill")
        .args(["-f", "sockperf sr --tcp -i 198.18"])
        .status();
    let _ = Command::new("pkill")
        .args(["-f", "sockperf sr --tcp -i 10."])
        .status();
}

/// Builds both Shoal labs, and on the tc lab's underlay bridge two plain
/// hosts (`bnt-d1`, `bnt-d2`) that carry the underlay and the Docker-style
/// kernel overlay references. Everything is named `bnt-`/`bnx-` so
/// `shoal lab down` removes it.
fn setup(shoal: &PathBuf) -> Result<Vec<Path>> {
    for (lab, accel) in [(LAB_TC, "tc"), (LAB_XDP, "xdp")] {
        let out = Command::new(shoal)
            .args([
                "lab",
                "up",
                "--name",
                lab,
                "--nodes",
                "2",
                "--endpoints",
                "1",
                "--accel",
                accel,
            ])
            .output()?;
        if !out.status.success() {
            bail!("lab up {lab}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let ul = format!("{LAB_TC}-ul");
    let br = format!("{LAB_TC}-br");
    for (i, host) in ["d1", "d2"].iter().enumerate() {
        let h = format!("{LAB_TC}-{host}");
        let c = format!("{LAB_TC}-{host}c");
        let ip = format!("198.18.0.{}", 101 + i);
        let cip = format!("10.9.0.{}", 2 + i);
        let mac = format!("02:42:0a:09:00:0{}", 2 + i);
        sh(&format!(
            "ip netns add {h}; ip netns add {c}
             ip -n {h} link set lo up; ip -n {c} link set lo up
             ip -n {ul} link add {LAB_TC}-{host}p type veth peer name eth0 netns {h}
             ip -n {ul} link set {LAB_TC}-{host}p master {br} up
             ip -n {h} link set eth0 up; ip -n {h} addr add {ip}/24 dev eth0
             ip -n {h} link add br0 type bridge; ip -n {h} link set br0 up
             ip -n {h} link add vxlan0 type vxlan id 5001 dstport 4789 local {ip} dev eth0 nolearning
             ip -n {h} link set vxlan0 mtu 1450 master br0 up
             ip -n {h} link add veth0 mtu 1450 type veth peer name eth0 netns {c}
             ip -n {h} link set veth0 master br0 up
             ip -n {c} link set eth0 address {mac} up; ip -n {c} addr add {cip}/24 dev eth0"
        ))?;
    }
    // Static FDB and neighbour entries, as libnetwork programs them.
    for (h, peer_host_ip, peer_mac, peer_ip) in [
        ("d1", "198.18.0.102", "02:42:0a:09:00:03", "10.9.0.3"),
        ("d2", "198.18.0.101", "02:42:0a:09:00:02", "10.9.0.2"),
    ] {
        sh(&format!(
            "bridge -n {LAB_TC}-{h} fdb append {peer_mac} dev vxlan0 dst {peer_host_ip}
             ip -n {LAB_TC}-{h}c neigh add {peer_ip} lladdr {peer_mac} dev eth0 nud permanent"
        ))?;
    }
    let p = |key, label, c: String, s: String, ip: &str| Path {
        key,
        label,
        client_ns: c,
        server_ns: s,
        server_ip: ip.to_string(),
    };
    let paths = vec![
        p(
            "underlay",
            "(a) underlay veth",
            format!("{LAB_TC}-d1"),
            format!("{LAB_TC}-d2"),
            "198.18.0.102",
        ),
        p(
            "kernel_overlay",
            "(b) Docker-style kernel overlay",
            format!("{LAB_TC}-d1c"),
            format!("{LAB_TC}-d2c"),
            "10.9.0.3",
        ),
        p(
            "shoal_tc",
            "(c) Shoal tc",
            format!("{LAB_TC}-n1-e1"),
            format!("{LAB_TC}-n2-e1"),
            "10.0.1.3",
        ),
        p(
            "shoal_xdp",
            "(d) Shoal xdp",
            format!("{LAB_XDP}-n1-e1"),
            format!("{LAB_XDP}-n2-e1"),
            "10.0.1.3",
        ),
    ];
    // Every path must work before anything is measured.
    for p in &paths {
        sh(&format!(
            "ip netns exec {} ping -c 2 -W 2 {}",
            p.client_ns, p.server_ip
        ))
        .with_context(|| format!("{} does not work", p.label))?;
    }
    Ok(paths)
}

// ---- measurements -------------------------------------------------------------

fn measure(p: &Path, a: &Args) -> Result<Metrics> {
    Ok(Metrics {
        gbps_1: iperf3(p, a.duration, 1)?,
        gbps_4: iperf3(p, a.duration, 4)?,
        rr_us: sockperf(p, a.latency_duration, false)?,
        rr_pinned_us: sockperf(p, a.latency_duration, true)?,
    })
}

fn iperf3(p: &Path, secs: u32, streams: u32) -> Result<f64> {
    sh(&format!(
        "ip netns exec {} iperf3 -s -1 -D -p 5301",
        p.server_ns
    ))?;
    std::thread::sleep(Duration::from_millis(200));
    let out = sh(&format!(
        "timeout {} ip netns exec {} iperf3 -c {} -p 5301 -t {secs} -P {streams} -J",
        secs + 20,
        p.client_ns,
        p.server_ip
    ))?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3 report")?;
    Ok((bps / 1e7).round() / 100.0)
}

/// TCP ping-pong; `pinned` runs client and server on CPU 0, where the
/// figure reflects the path rather than cross-CPU wakeups.
fn sockperf(p: &Path, secs: u32, pinned: bool) -> Result<f64> {
    let pin = if pinned { "taskset -c 0 " } else { "" };
    let mut server = Command::new("sh")
        .args([
            "-c",
            &format!(
                "exec ip netns exec {} {pin}sockperf sr --tcp -i {} -p 11111",
                p.server_ns, p.server_ip
            ),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(500));
    let out = sh(&format!(
        "timeout {} ip netns exec {} {pin}sockperf pp --tcp -i {} -p 11111 -t {secs} 2>&1",
        secs + 20,
        p.client_ns,
        p.server_ip
    ));
    let _ = server.kill();
    let _ = server.wait();
    let out = out?;
    let at = out
        .find("avg-latency=")
        .context("no avg-latency in sockperf output")?
        + "avg-latency=".len();
    let num: String = out[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    Ok(num.parse()?)
}

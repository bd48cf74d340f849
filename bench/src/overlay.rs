//! Overlay benchmark: TCP throughput (iperf3, 1 and 4 streams) and TCP
//! request/response latency (sockperf ping-pong, unpinned and pinned to one
//! CPU) between two hosts, for
//!
//!   (a) the underlay veth (two lab hosts without any eBPF),
//!   (b) a Docker-style kernel overlay built as libnetwork builds it:
//!       bridge + kernel vxlan device + static FDB and neighbour entries,
//!   (c) Shoal with tc hooks (`shoal lab up --accel tc`),
//!   (d) Shoal with XDP hooks (`shoal lab up --accel xdp`),
//!   (e) the bound: Shoal's topology carrying the least eBPF overlay there
//!       is (`bench/bpf/bound.bpf.c`, encap/decap with its addresses
//!       compiled in, no lookups; `overlay_bound.rs`),
//!
//! all in one run, rounds alternating between paths so drift on a shared
//! machine hits every path alike (each round starting one path later, so
//! no path always follows the same one). Prints a table and JSON with the ratios to
//! (a) and (b). Needs root, iperf3, sockperf, iproute2.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

#[path = "overlay_bound.rs"]
mod bound;
mod common;
#[path = "overlay_profile.rs"]
mod profile;
#[path = "overlay_report.rs"]
mod report;
use report::{median, print_rounds, print_table, ratio, round_report};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(about = "Shoal overlay vs underlay vs Docker-style kernel overlay")]
struct Args {
    /// Alternating rounds: every round is reported, with Shoal's ratio to
    /// the kernel overlay in that same round (paired), and the medians.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Set net.bridge.bridge-nf-call-iptables to this (0 or 1) in the
    /// bench's namespaces that hold a bridge (the underlay's, the kernel
    /// overlay's hosts). A new namespace gets 1 once br_netfilter is
    /// loaded (dockerd loads it), and the kernel overlay's bridge then
    /// runs iptables on every frame; default: as the kernel gives.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=1))]
    bridge_nf_call_iptables: Option<u8>,
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
    /// After the rounds, profile one 1- and one 4-stream run of the kernel
    /// overlay, Shoal tc and the bound: perf (whole machine, 999 Hz) by CPU, by
    /// context and by symbol, and the BPF programs' run time and count.
    #[arg(long)]
    profile: bool,
}

/// One path between a client and a server namespace.
#[derive(Clone, Debug)]
pub(crate) struct Path {
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
    /// 4 streams with the sender pinned to CPU 0 and the receiver to CPU 1,
    /// so every path is measured with the same placement.
    gbps_4_split: f64,
    /// 4 streams with sender and receiver both on CPU 0: no cross-CPU
    /// wakeups, so this is the path's own cost per byte.
    gbps_4_shared: f64,
    /// Function-call IPIs (almost all remote wakeups of a sleeping
    /// receiver, `ttwu_queue_wakelist`) per GB moved in the split run; in a
    /// VM each is an exit taken on the sending CPU with interrupts off.
    ipis_per_gb_split: f64,
    /// Segments the senders retransmitted per GB in the unpinned 4-stream
    /// run. On veths a flow's packets enter the backlog of whichever CPU
    /// sends them (the sending thread's, or the one that took an ACK), so
    /// the two CPUs deliver them out of order and TCP retransmits
    /// spuriously; the price of spreading the path over both CPUs, and
    /// what makes 4-stream figures spread between runs.
    retrans_per_gb_4: f64,
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
    // The kernel's BPF statistics time every program run (two clock reads
    // each): a cost on Shoal's path and the bound's, not the kernel
    // overlay's. Off for the rounds, whatever someone left on; restored.
    let bpf_stats_was = sh("sysctl -n kernel.bpf_stats_enabled")?.trim().to_string();
    sh("sysctl -qw kernel.bpf_stats_enabled=0")?;
    let _guard = Cleanup {
        shoal: shoal.clone(),
        bpf_stats: bpf_stats_was.clone(),
    };
    cleanup(&shoal);
    let (paths, bridge_nf) = setup(&shoal, args.bridge_nf_call_iptables)?;

    let mut samples: Vec<Vec<Metrics>> = vec![vec![]; paths.len()];
    let mut rounds = vec![];
    for round in 0..args.rounds {
        // Each round starts one path later: a path measured right after
        // another inherits the machine that one left (the XDP path's
        // retransmits, a warm or cold cache), and with a fixed order
        // that bias would fall on the same path every round.
        let order: Vec<usize> = (0..paths.len())
            .map(|k| (k + round as usize) % paths.len())
            .collect();
        for &i in &order {
            let p = &paths[i];
            eprintln!("round {}/{}: {}", round + 1, args.rounds, p.label);
            samples[i].push(measure(p, &args)?);
        }
        let this: Vec<&Metrics> = samples
            .iter()
            .map(|s| s.last().expect("measured"))
            .collect();
        let mut r = round_report(round + 1, &paths, &this);
        r["order"] = order.iter().map(|&i| paths[i].key).collect();
        rounds.push(r);
    }
    let profiles = if args.profile {
        let profiled: Vec<Path> = paths
            .iter()
            .filter(|p| matches!(p.key, "kernel_overlay" | "shoal_tc" | "bound"))
            .cloned()
            .collect();
        profile::run(&profiled)?
    } else {
        vec![]
    };
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
    // The kernel overlay's bridge runs iptables on bridged frames when
    // this is 1: a cost the reference pays and Shoal's path does not.
    // Recorded so runs compare.
    println!("net.bridge.bridge-nf-call-iptables in the kernel overlay's hosts: {bridge_nf}");
    let paired = print_rounds(&rounds);
    for l in &profiles {
        println!("{l}");
    }
    let report = serde_json::json!({
        "benchmark": "overlay",
        "rounds": args.rounds,
        "every_round": rounds,
        "paired": paired,
        "profile": profiles,
        "duration_s": args.duration,
        "bridge_nf_call_iptables": bridge_nf,
        "bpf_stats_enabled_before": bpf_stats_was,
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

// ---- setup ------------------------------------------------------------------

pub(crate) fn sh(cmd: &str) -> Result<String> {
    let out = Command::new("sh").args(["-ec", cmd]).output()?;
    if !out.status.success() {
        bail!("`{cmd}` failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

struct Cleanup {
    shoal: PathBuf,
    /// kernel.bpf_stats_enabled as it was before the bench.
    bpf_stats: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        cleanup(&self.shoal);
        let _ = sh(&format!(
            "sysctl -qw kernel.bpf_stats_enabled={}",
            self.bpf_stats
        ));
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
/// The labs and the reference; the paths, and the kernel overlay's
/// `bridge-nf-call-iptables` as set.
fn setup(shoal: &PathBuf, bridge_nf: Option<u8>) -> Result<(Vec<Path>, String)> {
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
    // The reference: a Docker-style kernel overlay on the tc lab's
    // underlay, its containers at MTU 1500 over a 1450-byte vxlan.
    common::kernel_overlay_reference(LAB_TC, 1450, None)?;
    bound::setup(LAB_TC)?;
    if let Some(v) = bridge_nf {
        for ns in ["ul", "d1", "d2"].map(|n| format!("{LAB_TC}-{n}")) {
            sh(&format!(
                "ip netns exec {ns} sysctl -qw net.bridge.bridge-nf-call-iptables={v}"
            ))?;
        }
    }
    // What the kernel overlay's bridge does, as measured.
    let bridge_nf_now = sh(&format!(
        "ip netns exec {LAB_TC}-d1 sysctl -n net.bridge.bridge-nf-call-iptables"
    ))
    .map(|s| s.trim().to_string())
    .unwrap_or_else(|_| "absent (no br_netfilter)".into());
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
        p(
            "bound",
            "(e) bound: bare tc encap/decap",
            format!("{LAB_TC}-{}", bound::CLIENT_NS),
            format!("{LAB_TC}-{}", bound::SERVER_NS),
            bound::SERVER_IP,
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
    Ok((paths, bridge_nf_now))
}

// ---- measurements -------------------------------------------------------------

fn measure(p: &Path, a: &Args) -> Result<Metrics> {
    let split_ipis = std::cell::Cell::new(0.0);
    let retrans_4 = std::cell::Cell::new(0.0);
    Ok(Metrics {
        gbps_1: iperf3(p, a.duration, 1)?,
        gbps_4: {
            let (gbps, retrans) = iperf3_retrans(p, a.duration, 4, None)?;
            retrans_4.set((retrans as f64 / (gbps * a.duration as f64 / 8.0).max(0.001)).round());
            gbps
        },
        rr_us: sockperf(p, a.latency_duration, false)?,
        rr_pinned_us: sockperf(p, a.latency_duration, true)?,
        gbps_4_split: {
            let before = call_ipis()?;
            let gbps = iperf3_pinned(p, a.duration, 4, Some((0, 1)))?;
            let gb = gbps * a.duration as f64 / 8.0;
            let per_gb = (call_ipis()? - before) as f64 / gb.max(0.001);
            split_ipis.set(per_gb.round());
            gbps
        },
        gbps_4_shared: iperf3_pinned(p, a.duration, 4, Some((0, 0)))?,
        ipis_per_gb_split: split_ipis.get(),
        retrans_per_gb_4: retrans_4.get(),
    })
}

/// Function-call IPIs received so far, summed over CPUs (`CAL:` in
/// /proc/interrupts).
fn call_ipis() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/interrupts")?;
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("CAL:"))
        .context("no CAL line in /proc/interrupts")?;
    Ok(line
        .split_whitespace()
        .skip(1)
        .map_while(|w| w.parse::<u64>().ok())
        .sum())
}

pub(crate) fn iperf3(p: &Path, secs: u32, streams: u32) -> Result<f64> {
    iperf3_pinned(p, secs, streams, None)
}

/// `pin`: (client CPU, server CPU).
fn iperf3_pinned(p: &Path, secs: u32, streams: u32, pin: Option<(u32, u32)>) -> Result<f64> {
    Ok(iperf3_retrans(p, secs, streams, pin)?.0)
}

/// Gbit/s received, and the segments the senders retransmitted.
fn iperf3_retrans(
    p: &Path,
    secs: u32,
    streams: u32,
    pin: Option<(u32, u32)>,
) -> Result<(f64, u64)> {
    let (cpin, spin) = match pin {
        Some((c, s)) => (format!("taskset -c {c} "), format!("taskset -c {s} ")),
        None => (String::new(), String::new()),
    };
    sh(&format!(
        "ip netns exec {} {spin}iperf3 -s -1 -D -p 5301",
        p.server_ns
    ))?;
    std::thread::sleep(Duration::from_millis(200));
    let out = sh(&format!(
        "timeout {} ip netns exec {} {cpin}iperf3 -c {} -p 5301 -t {secs} -P {streams} -J",
        secs + 20,
        p.client_ns,
        p.server_ip
    ))?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3 report")?;
    let retrans = v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
    Ok(((bps / 1e7).round() / 100.0, retrans))
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
    common::sockperf_avg_us(&out?)
}

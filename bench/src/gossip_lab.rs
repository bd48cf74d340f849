//! Endpoint propagation and gossip traffic on a 5-node lab, sealed gossip
//! (AES-256-GCM, the lab's key file) against plaintext (`--insecure-gossip`,
//! the reference), same run: the modes alternate round by round, each on a
//! fresh endpoint-only lab (so the two differ only in sealing).
//!
//! Propagation: the time from `shoal endpoint create` on n1 until the
//! endpoint is programmed in every other node's dataplane map (read
//! straight from the pinned maps, polled every 1 ms), and the same for
//! removal. Traffic: gossip bytes and datagrams each node sends per second
//! (sealed sizes, from `debug gossip`), idle and while endpoints churn.
//! Reference, same run: plaintext, the local API round trip of the create
//! itself and the lab's gossip interval.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use common::{stats, LabGuard};
use serde_json::json;
use shoal_dataplane::overlay::Maps;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Modes {
    Both,
    Sealed,
    Plaintext,
}

#[derive(Parser, Debug)]
struct Args {
    /// Propagation runs per mode and round.
    #[arg(long, default_value_t = 10)]
    runs: u32,
    /// Rounds; the modes alternate (and swap order) round by round.
    #[arg(long, default_value_t = 2)]
    rounds: u32,
    #[arg(long, default_value_t = 5)]
    nodes: u32,
    #[arg(long, value_enum, default_value_t = Modes::Both)]
    modes: Modes,
    /// Seconds of idle gossip measured per lab.
    #[arg(long, default_value_t = 5)]
    idle_secs: u64,
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long)]
    shoal: Option<PathBuf>,
}

const LAB: &str = "bng";

/// What one mode gathered over all its rounds.
#[derive(Default)]
struct Samples {
    create: Vec<f64>,
    add: Vec<f64>,
    del: Vec<f64>,
    idle_bytes: Vec<f64>,
    idle_datagrams: Vec<f64>,
    churn_bytes: Vec<f64>,
}

fn main() -> Result<()> {
    let a = Args::parse();
    let shoal = common::shoal_path(a.shoal.clone());
    let modes: Vec<&str> = match a.modes {
        Modes::Both => vec!["sealed", "plaintext"],
        Modes::Sealed => vec!["sealed"],
        Modes::Plaintext => vec!["plaintext"],
    };
    let mut samples: Vec<Samples> = modes.iter().map(|_| Samples::default()).collect();
    for round in 0..a.rounds {
        let mut order: Vec<usize> = (0..modes.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            eprintln!("round {}: {}", round + 1, modes[i]);
            measure(&a, &shoal, modes[i], &mut samples[i])?;
        }
    }
    report(&a, &modes, samples)
}

/// One lab in one mode: idle traffic, then propagation runs.
fn measure(a: &Args, shoal: &std::path::Path, mode: &str, s: &mut Samples) -> Result<()> {
    let _lab = LabGuard::fresh(shoal, LAB);
    let nodes = a.nodes.to_string();
    let mut args = vec![
        "lab",
        "up",
        "--name",
        LAB,
        "--nodes",
        &nodes,
        "--endpoints",
        "1",
        "--managers",
        "0",
    ];
    if mode == "plaintext" {
        args.push("--daemon-arg=--insecure-gossip");
    }
    let out = Command::new(shoal).args(&args).output()?;
    if !out.status.success() {
        bail!("lab up: {}", String::from_utf8_lossy(&out.stderr));
    }
    let want = if mode == "plaintext" {
        "insecure"
    } else {
        "file"
    };
    let got = gossip_json(shoal, "n1")?["keys"]["source"].clone();
    if got != want {
        bail!("{mode}: n1's gossip keys come from {got}, not {want}");
    }
    // Let the lab's own convergence traffic pass first.
    std::thread::sleep(Duration::from_secs(2));
    let (b0, d0) = (traffic(shoal, a.nodes)?, Instant::now());
    std::thread::sleep(Duration::from_secs(a.idle_secs));
    let (b1, secs) = (traffic(shoal, a.nodes)?, d0.elapsed().as_secs_f64());
    let per_node = |x: u64| x as f64 / a.nodes as f64 / secs;
    s.idle_bytes.push(per_node(b1.0 - b0.0));
    s.idle_datagrams.push(per_node(b1.1 - b0.1));

    let pins = |n: u32| PathBuf::from(format!("/sys/fs/bpf/shoal-lab/{LAB}/n{n}"));
    let others: Vec<Maps> = (2..=a.nodes)
        .map(|n| Maps::open(&pins(n)))
        .collect::<Result<_, _>>()?;
    let socket = format!("/run/shoal/lab/{LAB}/nodes/n1/shoal.sock");
    let (c0, w0) = (traffic(shoal, a.nodes)?, Instant::now());
    for i in 0..a.runs {
        let ip = Ipv4Addr::new(10, 0, 1, 100 + i as u8);
        let name = format!("{LAB}-p{i}");
        let t0 = Instant::now();
        let out = Command::new(shoal)
            .args([
                "endpoint",
                "--socket",
                &socket,
                "create",
                "--network",
                "labnet",
            ])
            .args(["--ip", &format!("{ip}/24"), "--name", &name])
            .output()?;
        let api = t0.elapsed();
        if !out.status.success() {
            bail!("create: {}", String::from_utf8_lossy(&out.stderr));
        }
        wait(&others, |m| m.endpoint(4000, ip).is_some()).context("endpoint never propagated")?;
        let add = t0.elapsed();
        let t0 = Instant::now();
        let out = Command::new(shoal)
            .args(["endpoint", "--socket", &socket, "rm", &name])
            .output()?;
        if !out.status.success() {
            bail!("rm: {}", String::from_utf8_lossy(&out.stderr));
        }
        wait(&others, |m| m.endpoint(4000, ip).is_none()).context("removal never propagated")?;
        let del = t0.elapsed();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        eprintln!(
            "  {mode} run {}: create {:.1} ms, on all nodes after {:.1} ms, removed after {:.1} ms",
            i + 1,
            ms(api),
            ms(add),
            ms(del)
        );
        s.create.push(ms(api));
        s.add.push(ms(add));
        s.del.push(ms(del));
    }
    let c1 = traffic(shoal, a.nodes)?;
    let secs = w0.elapsed().as_secs_f64();
    s.churn_bytes
        .push((c1.0 - c0.0) as f64 / a.nodes as f64 / secs);
    Ok(())
}

fn gossip_json(shoal: &std::path::Path, node: &str) -> Result<serde_json::Value> {
    let out = Command::new(shoal)
        .args([
            "debug", "--lab", LAB, "--node", node, "--format", "json", "gossip",
        ])
        .output()?;
    if !out.status.success() {
        bail!("debug gossip: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Gossip bytes and datagrams all nodes have sent so far.
fn traffic(shoal: &std::path::Path, nodes: u32) -> Result<(u64, u64)> {
    let mut t = (0, 0);
    for n in 1..=nodes {
        let v = gossip_json(shoal, &format!("n{n}"))?;
        t.0 += v["traffic"]["sent_bytes"].as_u64().unwrap_or(0);
        t.1 += v["traffic"]["sent_datagrams"].as_u64().unwrap_or(0);
    }
    Ok(t)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    (v[v.len() / 2] * 10.0).round() / 10.0
}

fn report(a: &Args, modes: &[&str], samples: Vec<Samples>) -> Result<()> {
    let mut report = json!({
        "benchmark": "gossip_lab",
        "nodes": a.nodes,
        "rounds": a.rounds,
        "runs_per_round": a.runs,
        "gossip_interval_ms": 200,
    });
    for (m, s) in modes.iter().zip(samples) {
        report[*m] = json!({
            "reference_local_create_ms": stats(s.create),
            "create_to_programmed_on_all_ms": stats(s.add),
            "remove_to_unprogrammed_on_all_ms": stats(s.del),
            "idle_sent_bytes_per_node_s": median(s.idle_bytes),
            "idle_sent_datagrams_per_node_s": median(s.idle_datagrams),
            "churn_sent_bytes_per_node_s": median(s.churn_bytes),
        });
    }
    let ratio_rows = [
        (
            "create -> programmed on all, median ms",
            "create_to_programmed_on_all_ms",
        ),
        (
            "remove -> gone from all, median ms",
            "remove_to_unprogrammed_on_all_ms",
        ),
        (
            "reference: local create (API), median ms",
            "reference_local_create_ms",
        ),
        (
            "gossip sent idle, bytes/node/s",
            "idle_sent_bytes_per_node_s",
        ),
        (
            "gossip sent idle, datagrams/node/s",
            "idle_sent_datagrams_per_node_s",
        ),
        (
            "gossip sent with churn, bytes/node/s",
            "churn_sent_bytes_per_node_s",
        ),
    ];
    let val = |report: &serde_json::Value, m: &str, k: &str| {
        let v = &report[m][k];
        v["median_ms"].as_f64().or(v.as_f64()).unwrap_or(0.0)
    };
    println!(
        "\nGossip on a {}-node lab: sealed (AES-256-GCM) vs plaintext (--insecure-gossip), {} rounds x {} runs, same run\n",
        a.nodes, a.rounds, a.runs
    );
    print!("{:<44}", "");
    for m in modes {
        print!(" {m:>10}");
    }
    println!("{}", if modes.len() == 2 { "      ratio" } else { "" });
    for (label, key) in ratio_rows {
        print!("{label:<44}");
        for m in modes {
            print!(" {:>10.1}", val(&report, m, key));
        }
        if modes.len() == 2 {
            let r = val(&report, modes[0], key) / val(&report, modes[1], key);
            report["ratio_sealed_to_plaintext"][key] = json!((r * 1000.0).round() / 1000.0);
            print!(" {r:>10.3}");
        }
        println!();
    }
    let mut chart = common::chart::Chart::new("Gossip: sealed vs plaintext (5-node lab)");
    for (title, key) in [
        (
            "create -> programmed on all, median ms",
            "create_to_programmed_on_all_ms",
        ),
        (
            "remove -> gone from all, median ms",
            "remove_to_unprogrammed_on_all_ms",
        ),
        (
            "gossip sent idle, bytes/node/s",
            "idle_sent_bytes_per_node_s",
        ),
        (
            "gossip sent with churn, bytes/node/s",
            "churn_sent_bytes_per_node_s",
        ),
    ] {
        // The reference (plaintext) first, as the other charts do.
        let bars = modes
            .iter()
            .rev()
            .map(|m| (m.to_string(), val(&report, m, key)))
            .collect();
        chart = chart.panel(title, bars);
    }
    common::emit(&report, a.json.as_deref(), &chart)
}

fn wait(maps: &[Maps], cond: impl Fn(&Maps) -> bool) -> Result<()> {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        if maps.iter().all(&cond) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    bail!("timeout")
}

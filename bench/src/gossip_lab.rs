//! Endpoint propagation on a 5-node lab: the time from `shoal endpoint
//! create` on n1 until the endpoint is programmed in every other node's
//! dataplane map (read straight from the pinned maps, polled every 1 ms),
//! and the same for removal; 20 runs each. Reference, same run: the local
//! API round trip of the create itself and the lab's gossip interval.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use anyhow::{bail, Context, Result};
use clap::Parser;
use common::{stats, LabGuard};
use shoal_dataplane::overlay::Maps;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value_t = 20)]
    runs: u32,
    #[arg(long, default_value_t = 5)]
    nodes: u32,
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long)]
    shoal: Option<PathBuf>,
}

const LAB: &str = "bng";

fn main() -> Result<()> {
    let a = Args::parse();
    let shoal = common::shoal_path(a.shoal.clone());
    let _lab = LabGuard::fresh(&shoal, LAB);
    let out = Command::new(&shoal)
        .args([
            "lab",
            "up",
            "--name",
            LAB,
            "--nodes",
            &a.nodes.to_string(),
            "--endpoints",
            "1",
        ])
        .output()?;
    if !out.status.success() {
        bail!("lab up: {}", String::from_utf8_lossy(&out.stderr));
    }
    let pins = |n: u32| PathBuf::from(format!("/sys/fs/bpf/shoal-lab/{LAB}/n{n}"));
    let others: Vec<Maps> = (2..=a.nodes)
        .map(|n| Maps::open(&pins(n)))
        .collect::<Result<_, _>>()?;
    let socket = format!("/run/shoal/lab/{LAB}/nodes/n1/shoal.sock");
    let (mut create, mut add, mut del) = (vec![], vec![], vec![]);
    for i in 0..a.runs {
        let ip = Ipv4Addr::new(10, 0, 1, 100 + i as u8);
        let name = format!("{LAB}-p{i}");
        let t0 = Instant::now();
        let out = Command::new(&shoal)
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
        let t = t0.elapsed();
        create.push(api.as_secs_f64() * 1e3);
        add.push(t.as_secs_f64() * 1e3);
        let t0 = Instant::now();
        let out = Command::new(&shoal)
            .args(["endpoint", "--socket", &socket, "rm", &name])
            .output()?;
        if !out.status.success() {
            bail!("rm: {}", String::from_utf8_lossy(&out.stderr));
        }
        wait(&others, |m| m.endpoint(4000, ip).is_none()).context("removal never propagated")?;
        del.push(t0.elapsed().as_secs_f64() * 1e3);
        eprintln!(
            "run {}: create {:.1} ms, on all nodes after {:.1} ms, removed after {:.1} ms",
            i + 1,
            create[i as usize],
            add[i as usize],
            del[i as usize]
        );
    }
    let report = serde_json::json!({
        "benchmark": "gossip_lab",
        "nodes": a.nodes,
        "runs": a.runs,
        "gossip_interval_ms": 200,
        "reference_local_create_ms": stats(create),
        "create_to_programmed_on_all_ms": stats(add),
        "remove_to_unprogrammed_on_all_ms": stats(del),
    });
    println!(
        "\nEndpoint propagation, {}-node lab, {} runs (gossip interval 200 ms)\n",
        a.nodes, a.runs
    );
    println!(
        "{:<44} {:>9} {:>9} {:>9}",
        "", "median ms", "max ms", "min ms"
    );
    let rows = [
        (
            "reference: local create (API round trip)",
            "reference_local_create_ms",
        ),
        (
            "create -> programmed on all other nodes",
            "create_to_programmed_on_all_ms",
        ),
        (
            "remove -> gone from all other nodes",
            "remove_to_unprogrammed_on_all_ms",
        ),
    ];
    common::print_stats(&report, &rows, 44, 1);
    let chart = common::medians_chart("Endpoint propagation (gossip)", &report, &rows);
    common::emit(&report, a.json.as_deref(), &chart)?;
    Ok(())
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

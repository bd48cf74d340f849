//! The Swarm2000 comparison (issue 24): `shoal lab sim` (SWIM membership
//! and per-network table gossip, the daemon's own code on simulated time)
//! at each size and shape, beside chitchat's whole-cluster replication at
//! the sizes where one process can hold it, in the same run; then issue
//! 24's targets checked at the largest size.

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::{chitchat_ref, Args};

const FULL_SIZE: usize = 2384;

fn shoal(a: &Args) -> std::path::PathBuf {
    a.shoal.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .expect("current_exe")
            .with_file_name("shoal")
    })
}

fn sim(a: &Args, nodes: usize, total: usize, shape: &str) -> Result<Value> {
    eprintln!("shoal lab sim: {nodes} nodes, {total} endpoints, {shape} ...");
    let out = Command::new(shoal(a))
        .args(["lab", "sim", "--json", "--shape", shape])
        .args(["--nodes", &nodes.to_string()])
        .args(["--total-endpoints", &total.to_string()])
        .args(["--interval-ms", &a.interval_ms.to_string()])
        .output()
        .context("running shoal lab sim")?;
    if !out.status.success() {
        bail!(
            "shoal lab sim failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut v: Value = serde_json::from_slice(&out.stdout)?;
    v["design"] = json!("scoped (SWIM + per-network tables)");
    Ok(v)
}

fn reference(a: &Args, nodes: usize, per_node: usize) -> Result<Value> {
    eprintln!("chitchat whole-cluster replication: {nodes} nodes x {per_node} endpoints ...");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?;
    let mut v = rt.block_on(chitchat_ref::run(
        nodes,
        per_node,
        Duration::from_millis(a.interval_ms),
        Duration::from_secs(a.timeout_s),
        Duration::from_secs(a.steady_s),
    ))?;
    v["design"] = json!("chitchat, whole cluster");
    Ok(v)
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(f64::NAN)
}

fn kb(x: f64) -> String {
    format!("{:.1}", x / 1000.0)
}

pub fn run(a: &Args) -> Result<()> {
    let total = a.total_endpoints.expect("compare mode");
    let largest = a.nodes.iter().copied().max().unwrap_or(FULL_SIZE);
    let density = total as f64 / largest as f64;
    let mut sizes: Vec<usize> = a.reference_nodes.clone();
    sizes.extend(&a.nodes);
    sizes.sort_unstable();
    sizes.dedup();

    let mut refs = Vec::new();
    for &n in &a.reference_nodes {
        match reference(a, n, density.round() as usize) {
            Ok(v) => refs.push(v),
            Err(e) => eprintln!("reference at {n} nodes: {e:#}"),
        }
    }
    let mut rows = Vec::new();
    for shape in &a.shape {
        for &n in &sizes {
            rows.push(sim(a, n, (density * n as f64).round() as usize, shape)?);
        }
    }

    println!(
        "\nGossip at Swarm2000's size, simulated ({} ms rounds; bytes per node include the 55-byte seal)\n",
        a.interval_ms
    );
    println!(
        "{:<12} {:>6} {:>7} {:>9} {:>9} {:>16} {:>11} {:>11} {:>10} {:>9} {:>7} {:>14} {:>8}",
        "shape",
        "nodes",
        "records",
        "cold rnds",
        "cold KB/s",
        "change p50/p99/max",
        "steady KB/s",
        "(tables)",
        "table MB",
        "down s",
        "bye s",
        "restart s/pull",
        "wall s"
    );
    for r in &rows {
        println!(
            "{:<12} {:>6} {:>7} {:>9.0} {:>9} {:>16} {:>11} {:>11} {:>10.1} {:>9.2} {:>7.2} {:>14} {:>8.0}",
            r["shape"].as_str().unwrap_or("?"),
            r["nodes"].as_u64().unwrap_or(0),
            r["records"].as_u64().unwrap_or(0),
            f(r, "cold_rounds"),
            kb(f(&r["cold_table_bytes_per_node_s"], "mean")
                + f(&r["cold_membership_bytes_per_node_s"], "mean")),
            format!(
                "{}/{}/{}",
                f(r, "change_rounds_p50"),
                f(r, "change_rounds_p99"),
                f(r, "change_rounds_max")
            ),
            kb(f(&r["steady_table_bytes_per_node_s"], "mean")
                + f(&r["steady_membership_bytes_per_node_s"], "mean")),
            kb(f(&r["steady_table_bytes_per_node_s"], "mean")),
            f(&r["table_bytes_per_node"], "max") / 1e6,
            f(r, "killed_detected_everywhere_s"),
            f(r, "goodbye_gone_everywhere_s"),
            format!(
                "{:.2}/{:.2}",
                f(r, "restart_known_everywhere_s"),
                f(r, "restart_tables_pulled_s")
            ),
            f(r, "wall_s"),
        );
    }
    println!("\nReference, same run: chitchat replicating every node's table to every node\n");
    println!(
        "{:>6} {:>7} {:>9} {:>9} {:>13} {:>11}",
        "nodes", "records", "cold rnds", "cold KB/s", "change rounds", "steady KB/s"
    );
    for r in &refs {
        println!(
            "{:>6} {:>7} {:>9.1} {:>9} {:>13.1} {:>11}",
            r["nodes"].as_u64().unwrap_or(0),
            r["endpoints_total"].as_u64().unwrap_or(0),
            f(r, "converge_rounds"),
            kb(f(r, "converge_bytes_per_node_per_s")),
            f(r, "change_rounds"),
            kb(f(r, "steady_bytes_per_node_per_s")),
        );
    }

    // Issue 24's targets, at the largest size.
    let mut checks = Vec::new();
    for r in rows
        .iter()
        .filter(|r| r["nodes"].as_u64() == Some(largest as u64))
    {
        let shape = r["shape"].as_str().unwrap_or("?").to_string();
        let steady = f(&r["steady_table_bytes_per_node_s"], "max")
            + f(&r["steady_membership_bytes_per_node_s"], "max");
        let mut c = vec![
            (
                "one change everywhere on its network, p99 rounds <= 12",
                f(r, "change_rounds_p99"),
                12.0,
            ),
            (
                "converge from cold, simulated s < 10",
                f(r, "cold_seconds"),
                10.0,
            ),
            (
                "steady gossip per node (busiest node), KB/s < 50",
                steady / 1000.0,
                50.0,
            ),
            (
                "killed node down everywhere, s < 3",
                f(r, "killed_detected_everywhere_s"),
                3.0,
            ),
        ];
        if shape == "one-network" {
            c.push((
                "tables + membership per node, MiB < 64",
                (f(&r["table_bytes_per_node"], "max") + f(r, "membership_bytes_per_node"))
                    / 1048576.0,
                64.0,
            ));
        }
        for (what, got, bound) in c {
            checks.push(json!({"shape": shape, "target": what, "value": got, "bound": bound, "met": got <= bound}));
        }
    }
    if !checks.is_empty() {
        println!("\nIssue 24's targets at {largest} nodes\n");
        for c in &checks {
            println!(
                "{:<12} {:<58} {:>10.2} {}",
                c["shape"].as_str().unwrap_or(""),
                c["target"].as_str().unwrap_or(""),
                c["value"].as_f64().unwrap_or(f64::NAN),
                if c["met"] == json!(true) {
                    "met"
                } else {
                    "NOT MET"
                }
            );
        }
    }
    let report = json!({
        "benchmark": "gossip_sim_swarm2000",
        "interval_ms": a.interval_ms,
        "total_endpoints_at_largest": total,
        "scoped": rows,
        "reference_chitchat": refs,
        "targets": checks,
    });
    println!("\n{}", serde_json::to_string(&report)?);
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

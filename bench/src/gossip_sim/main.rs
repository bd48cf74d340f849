//! gossip-sim-bench: Shoal's gossip simulated in one process.
//!
//! Without `--total-endpoints`: chitchat's whole-cluster replication alone
//! (`chitchat_ref.rs`), as the earlier rounds ran it.
//!
//! With `--total-endpoints` (issue 24): the design built for Swarm2000's
//! size, run by `shoal lab sim` (the daemon's own membership and table
//! code on simulated time), beside the whole-cluster replication at the
//! sizes where it fits, same run (`compare.rs`).

mod chitchat_ref;
mod compare;

use std::time::Duration;

use anyhow::Result;
use clap::Parser;

use chitchat_ref::run;

#[derive(Parser, Debug)]
pub struct Args {
    /// Cluster sizes to simulate.
    #[arg(long, value_delimiter = ',', default_value = "100,500")]
    pub nodes: Vec<usize>,
    /// Endpoints published by each node.
    #[arg(long, default_value_t = 40)]
    pub endpoints: usize,
    #[arg(long, default_value_t = 500)]
    pub interval_ms: u64,
    /// Give up on a size after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_s: u64,
    /// Run on tokio's paused clock, on one thread: time stands still while
    /// the nodes compute and jumps to the next timer when all are idle, so
    /// rounds last exactly `--interval-ms` however many nodes share this
    /// machine (chitchat's timers and failure detector use tokio's clock).
    #[arg(long)]
    pub simulated_time: bool,
    /// Seconds of steady gossip (converged, nothing changing) measured.
    #[arg(long, default_value_t = 10)]
    pub steady_s: u64,
    /// Compare the design built for Swarm2000 (`shoal lab sim`: SWIM
    /// membership, per-network table gossip) with this whole-cluster
    /// replication, at --nodes (default 2384) and at --reference-nodes;
    /// the endpoints over the cluster at the largest size, the same
    /// density at the others.
    #[arg(long)]
    pub total_endpoints: Option<usize>,
    /// Shapes of the comparison (one-network: one network on every node;
    /// mix: hundreds of networks of different sizes).
    #[arg(long, value_delimiter = ',', default_value = "one-network,mix")]
    pub shape: Vec<String>,
    /// Sizes at which both designs run, the reference's whole-cluster
    /// replication only fitting there.
    #[arg(long, value_delimiter = ',', default_value = "100,500")]
    pub reference_nodes: Vec<usize>,
    /// `shoal` binary (default: the one built beside this benchmark).
    #[arg(long)]
    pub shoal: Option<std::path::PathBuf>,
    /// Write the comparison's JSON here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

fn main() -> Result<()> {
    let a = Args::parse();
    if a.total_endpoints.is_some() {
        return compare::run(&a);
    }
    let rt = if a.simulated_time {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
    };
    rt.block_on(simulate(a))
}

async fn simulate(a: Args) -> Result<()> {
    let mut rows = vec![];
    for &n in &a.nodes {
        eprintln!("simulating {n} nodes x {} endpoints ...", a.endpoints);
        match run(
            n,
            a.endpoints,
            Duration::from_millis(a.interval_ms),
            Duration::from_secs(a.timeout_s),
            Duration::from_secs(a.steady_s),
        )
        .await
        {
            Ok(r) => {
                eprintln!("{r}");
                rows.push(r)
            }
            Err(e) => eprintln!("{n} nodes: {e:#}"),
        }
    }
    println!(
        "\nGossip simulation (chitchat, channel transport, {} ms rounds)\n",
        a.interval_ms
    );
    println!(
        "{:>6} {:>9} {:>10} {:>8} {:>14} {:>9} {:>8} {:>14} {:>14} {:>16}",
        "nodes",
        "endpoints",
        "converge s",
        "rounds",
        "B/node/s conv",
        "change s",
        "rounds",
        "B/node change",
        "ref full push",
        "B/node/s steady"
    );
    for r in &rows {
        let c = |k: &str| r[k].to_string();
        println!(
            "{:>6} {:>9} {:>10} {:>8} {:>14} {:>9} {:>8} {:>14} {:>14} {:>16}",
            c("nodes"),
            c("endpoints_total"),
            c("converge_s"),
            c("converge_rounds"),
            c("converge_bytes_per_node_per_s"),
            c("change_s"),
            c("change_rounds"),
            c("change_bytes_per_node"),
            c("reference_full_push_bytes_per_node"),
            c("steady_bytes_per_node_per_s")
        );
    }
    println!(
        "\n{}",
        serde_json::json!({"benchmark": "gossip_sim", "results": rows})
    );
    Ok(())
}

//! In-process simulation of Shoal's gossip: N chitchat instances on
//! chitchat's channel transport (every message really serialised and
//! deserialised, bytes counted), each publishing a VTEP key and E endpoint
//! keys shaped like Shoal's (`ep:VNI:IP` -> {"mac","net","since"}).
//!
//! Measures (1) convergence from cold start: time and gossip rounds until
//! every node holds every node's endpoints, and bytes sent per node per
//! second meanwhile; (2) one change: a node adds one endpoint, rounds until
//! every node has it and the bytes it cost per node. Reference, same run:
//! the bytes of a full-table push of one node's table to every other node
//! (what a naive design would send for one change).
//!
//! Every simulated node holds the whole cluster's table, so memory grows
//! with N x N x E: at Swarm2000's size (2384 nodes, 96287 endpoints, about
//! 40 per node) one process would need ~50 GB; that size runs with fewer
//! endpoints per node (`--endpoints`), and the per-node state size for the
//! full table is extrapolated from the measured bytes per key.

use std::net::SocketAddr;
use std::time::Duration;

// tokio's clock: simulated under `--simulated-time`, the real one otherwise.
use tokio::time::Instant;

use anyhow::{bail, Result};
use chitchat::transport::ChannelTransport;
use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};

fn ep(node: usize, k: usize) -> (String, String) {
    let ip = std::net::Ipv4Addr::from(0x0a00_0000u32 + (node as u32) * 64 + k as u32 + 2);
    let o = ip.octets();
    let v = format!(
        "{{\"mac\":\"02:42:{:02x}:{:02x}:{:02x}:{:02x}\",\"net\":\"labnet\",\"since\":1795661512572}}",
        o[0], o[1], o[2], o[3]
    );
    (format!("ep:4097:{ip}"), v)
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, (i / 250) as u8, (i % 250) as u8 + 1], 7946))
}

async fn converged(nodes: &[ChitchatHandle], want_keys: usize, n: usize, sample: usize) -> bool {
    // Checking every node is O(N^2 E); a fixed sample spread over the
    // cluster (first, last, evenly spaced) tells the same story.
    let step = (nodes.len() / sample).max(1);
    for h in nodes.iter().step_by(step).chain(nodes.last()) {
        let ok = h
            .with_chitchat(|c| {
                // Replication of every node's table (liveness of 2384 nodes
                // flaps under this one-process load and is not the question).
                c.node_states().len() >= n
                    && c.node_states()
                        .values()
                        .map(|s| s.key_values().filter(|(k, _)| k.starts_with("ep:")).count())
                        .sum::<usize>()
                        == want_keys
            })
            .await;
        if !ok {
            return false;
        }
    }
    true
}

pub async fn run(
    n: usize,
    e: usize,
    interval: Duration,
    timeout: Duration,
    steady: Duration,
) -> Result<serde_json::Value> {
    let transport = ChannelTransport::with_mtu(65_507);
    let mut nodes = Vec::with_capacity(n);
    let seeds: Vec<String> = (0..3.min(n)).map(|i| addr(i).to_string()).collect();
    for i in 0..n {
        let config = ChitchatConfig {
            chitchat_id: ChitchatId::new(format!("n{i}"), 1, addr(i)),
            cluster_id: "sim".into(),
            gossip_interval: interval,
            listen_addr: addr(i),
            seed_nodes: seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                initial_interval: interval,
                phi_threshold: 12.0,
                // Default 1000 samples per peer: N x N x 1000 f64s in one
                // process (the 2384-node run was OOM-killed at 24 GB).
                sampling_window_size: 16,
                ..Default::default()
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: chitchat::ProtocolVersion::V1,
        };
        let mut kv = vec![("vtep".to_string(), addr(i).ip().to_string())];
        kv.extend((0..e).map(|k| ep(i, k)));
        nodes.push(spawn_chitchat(config, kv, &transport).await?);
    }
    let t0 = Instant::now();
    let b0 = transport.statistics().num_bytes_total;
    while !converged(&nodes, n * e, n, 20).await {
        if t0.elapsed() > timeout {
            bail!("{n} nodes did not converge within {timeout:?}");
        }
        tokio::time::sleep(interval / 2).await;
    }
    let conv = t0.elapsed();
    let bytes = transport.statistics().num_bytes_total - b0;

    // One change on the last node.
    let (k, v) = ep(n - 1, e);
    let b1 = transport.statistics().num_bytes_total;
    let t1 = Instant::now();
    nodes[n - 1]
        .with_chitchat(|c| c.self_node_state().set(k.clone(), v.clone()))
        .await;
    while !converged(&nodes, n * e + 1, n, 20).await {
        if t1.elapsed() > timeout {
            bail!("change did not propagate within {timeout:?}");
        }
        tokio::time::sleep(interval / 4).await;
    }
    let change = t1.elapsed();
    let change_bytes = transport.statistics().num_bytes_total - b1;
    // Steady-state cost of the same window with no change (heartbeats and
    // digests), to isolate what the change itself cost.
    let b2 = transport.statistics().num_bytes_total;
    tokio::time::sleep(change).await;
    let idle_bytes = transport.statistics().num_bytes_total - b2;
    // Steady state: converged, nothing changing (heartbeats and digests:
    // what every node pays every round, whatever its table).
    let (b3, t3) = (transport.statistics().num_bytes_total, Instant::now());
    tokio::time::sleep(steady).await;
    let steady_bytes = transport.statistics().num_bytes_total - b3;
    let steady_secs = t3.elapsed().as_secs_f64();
    let key_bytes = k.len() + v.len();
    // A naive design pushes the changed node's whole table to every node.
    let full_push = (e + 1) * (key_bytes + 8);
    for h in nodes {
        h.abort();
    }
    let secs = |d: Duration| (d.as_secs_f64() * 100.0).round() / 100.0;
    Ok(serde_json::json!({
        "nodes": n,
        "endpoints_per_node": e,
        "endpoints_total": n * e,
        "interval_ms": interval.as_millis() as u64,
        "converge_s": secs(conv),
        "converge_rounds": (conv.as_secs_f64() / interval.as_secs_f64() * 10.0).round() / 10.0,
        "converge_bytes_per_node_per_s": (bytes as f64 / n as f64 / conv.as_secs_f64()).round(),
        "change_s": secs(change),
        "change_rounds": (change.as_secs_f64() / interval.as_secs_f64() * 10.0).round() / 10.0,
        "change_bytes_per_node": ((change_bytes as f64 - idle_bytes as f64).max(0.0) / n as f64).round(),
        "idle_bytes_per_node_per_s": (idle_bytes as f64 / n as f64 / change.as_secs_f64()).round(),
        "steady_bytes_per_node_per_s": (steady_bytes as f64 / n as f64 / steady_secs).round(),
        "reference_full_push_bytes_per_node": full_push,
        "state_per_node_bytes_at_96287_endpoints": 96287 * (key_bytes + 8),
    }))
}

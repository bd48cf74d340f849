//! Prometheus metrics: `shoal daemon --metrics-addr ADDR[:PORT]` serves
//! `/metrics` (port 9323 when none is given, Docker's metrics port). Every
//! scrape reads the node fresh: the dataplane's counters and tables from
//! the pinned BPF maps, gossip, Raft (on managers), the embedded DNS
//! server and the local tasks. Names follow Prometheus's conventions
//! (`shoal_` prefix, `_total` counters, base units); every series carries
//! the node's name. `docs/metrics.md` lists them; `grafana/shoal.json` is a
//! dashboard built on them.

mod encode;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::routing::get;
use tracing::{info, warn};

pub use encode::render;

use crate::agent::Agent;

/// Docker's metrics port.
pub const DEFAULT_PORT: u16 = 9323;

/// `ADDR` or `ADDR:PORT` (`--metrics-addr`).
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, DEFAULT_PORT))
        .map_err(|_| format!("invalid metrics address {s:?}: want ADDR or ADDR:PORT"))
}

/// What a balancer sent one backend of one service.
#[derive(Debug, Default)]
pub struct BackendCount {
    pub service: String,
    pub vip: String,
    pub backend: String,
    pub packets: u64,
    pub bytes: u64,
}

/// One local endpoint's traffic.
#[derive(Debug, Default)]
pub struct EndpointCount {
    pub name: String,
    pub network: String,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
}

#[derive(Debug, Default)]
pub struct RaftSnap {
    pub term: u64,
    pub is_leader: bool,
    pub commit_lag: u64,
    pub leader_changes: u64,
}

/// One scrape's values.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub node: String,
    pub forwarded: Vec<(String, u64)>,
    pub drops: Vec<(String, u64)>,
    pub endpoints: Vec<EndpointCount>,
    pub backends: Vec<BackendCount>,
    /// (table, entries, capacity)
    pub conntrack: Vec<(String, u64, u64)>,
    /// (VIP, Maglev slots, backends)
    pub maglev: Vec<(String, u64, u64)>,
    /// (alive | dead, nodes)
    pub gossip_members: Vec<(String, u64)>,
    pub gossip_max_age_s: f64,
    /// Other nodes' new endpoints: creation there -> in this node's table.
    pub gossip_propagation: shoal_dns::LatencyStats,
    pub raft: Option<RaftSnap>,
    pub dns: shoal_dns::Stats,
    /// (local | forwarded, latency histogram)
    pub dns_latency: Vec<(String, shoal_dns::LatencyStats)>,
    /// (state, tasks)
    pub tasks: Vec<(String, u64)>,
}

/// Serves `/metrics` on `addr` until the process ends.
pub async fn serve(agent: Arc<Agent>, addr: SocketAddr) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("metrics address {addr}"))?;
    info!(%addr, "serving Prometheus metrics at /metrics");
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(
                |axum::extract::State(a): axum::extract::State<Arc<Agent>>| async move {
                    let body = render(a.metrics_snapshot().await);
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    )
                },
            ),
        )
        .with_state(agent);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!("metrics server: {e}");
        }
    });
    Ok(())
}

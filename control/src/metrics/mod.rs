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

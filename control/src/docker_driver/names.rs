//! Docker containers' names, for Shoal's DNS: libnetwork's driver protocol
//! never tells a driver which container an endpoint is for, so after a
//! Join the driver asks dockerd's own API (`GET /networks/ID` lists each
//! container on the network with its endpoint id and name) until the
//! endpoint shows up there, which is once Docker finished the join.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::UnixStream;
use tracing::{info, warn};

use crate::agent::Agent;

/// How long a container may take from Join to being listed by dockerd.
const WAIT: Duration = Duration::from_secs(30);

#[derive(Deserialize)]
struct NetworkView {
    #[serde(rename = "Containers", default)]
    containers: std::collections::HashMap<String, ContainerOnNet>,
}

#[derive(Deserialize)]
struct ContainerOnNet {
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "EndpointID", default)]
    endpoint_id: String,
}

/// The name of the container holding `endpoint_id` on Docker network
/// `network_id`, if dockerd lists it yet.
async fn lookup(api: &Path, network_id: &str, endpoint_id: &str) -> Result<Option<String>> {
    let stream = UnixStream::connect(api)
        .await
        .with_context(|| format!("dockerd's API at {}", api.display()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = Request::get(format!("/networks/{network_id}"))
        .header("host", "docker")
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        anyhow::bail!(
            "dockerd answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let view: NetworkView = serde_json::from_slice(&body).context("dockerd's network view")?;
    Ok(view
        .containers
        .into_values()
        .find(|c| c.endpoint_id == endpoint_id && !c.name.is_empty())
        .map(|c| c.name))
}

/// Learns the container's name from dockerd and gives it to the local
/// endpoint `local_ep` (gossiped with it, so every node's DNS answers it).
/// Gives up quietly after `WAIT`: the container is still reachable by
/// address.
pub async fn name_when_known(
    agent: Arc<Agent>,
    api: PathBuf,
    network_id: String,
    endpoint_id: String,
    local_ep: String,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last_err = None;
    while tokio::time::Instant::now() < deadline {
        match lookup(&api, &network_id, &endpoint_id).await {
            Ok(Some(name)) => {
                match agent.name_container(&local_ep, &name).await {
                    Ok(()) => info!(endpoint = %endpoint_id, %name, "Docker container named"),
                    Err(e) => warn!(endpoint = %endpoint_id, "naming the container: {e:#}"),
                }
                return;
            }
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    match last_err {
        Some(e) => warn!(endpoint = %endpoint_id, "no name for the Docker container: {e:#}"),
        None => {
            warn!(endpoint = %endpoint_id, "dockerd never listed the endpoint: the container has no name in Shoal's DNS")
        }
    }
}

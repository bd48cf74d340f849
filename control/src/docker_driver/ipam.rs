//! Docker's IPAM driver side: pools are Shoal networks (named with
//! `--ipam-opt network=NAME`), the gateway is the network's, and every
//! other address is leased from the managers as an attachment of this node
//! until Docker releases it.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::info;

use super::state::{DockerNet, Lease};
use super::{answer, request, Driver, Shared};
use crate::wire::{AttachRequest, DetachRequest};

/// Docker's request type for a network's gateway address.
const GATEWAY_REQUEST: &str = "com.docker.network.gateway";

pub fn routes() -> Router<Arc<Driver>> {
    Router::new()
        .route("/IpamDriver.GetCapabilities", post(capabilities))
        .route("/IpamDriver.GetDefaultAddressSpaces", post(spaces))
        .route("/IpamDriver.RequestPool", post(request_pool))
        .route("/IpamDriver.ReleasePool", post(release_pool))
        .route("/IpamDriver.RequestAddress", post(request_address))
        .route("/IpamDriver.ReleaseAddress", post(release_address))
}

async fn capabilities() -> Response {
    answer(Ok(
        json!({"RequiresMACAddress": false, "RequiresRequestReplay": false}),
    ))
}

async fn spaces() -> Response {
    answer(Ok(
        json!({"LocalDefaultAddressSpace": "shoal", "GlobalDefaultAddressSpace": "shoal"}),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PoolReq {
    #[serde(default)]
    pool: String,
    #[serde(default)]
    options: Option<HashMap<String, String>>,
    #[serde(rename = "V6", default)]
    v6: bool,
}

async fn request_pool(State(d): Shared, body: Bytes) -> Response {
    answer(
        async {
            let req: PoolReq = request(&body)?;
            if req.v6 {
                anyhow::bail!("Shoal networks are IPv4 only: leave out --ipv6");
            }
            let name = req
                .options
                .as_ref()
                .and_then(|o| o.get("network"))
                .filter(|n| !n.is_empty())
                .context("say which Shoal network: --ipam-opt network=NAME")?;
            let rec = d.agent.ask_attachable(name).await?;
            if !req.pool.is_empty() && req.pool != rec.subnet.to_string() {
                anyhow::bail!(
                    "Shoal network {} is {}, not {}",
                    rec.spec.name,
                    rec.subnet,
                    req.pool
                );
            }
            let net = DockerNet {
                shoal: rec.spec.name.clone(),
                subnet: rec.subnet,
                gateway: rec.gateway,
            };
            let mut st = d.state.lock().await;
            st.pools.insert(net.shoal.clone(), net);
            d.store.save(&st)?;
            Ok(json!({"PoolID": rec.spec.name, "Pool": rec.subnet.to_string(), "Data": {}}))
        }
        .await,
    )
}

async fn release_pool() -> Response {
    answer(Ok(json!({})))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AddressReq {
    #[serde(rename = "PoolID")]
    pool_id: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    options: Option<HashMap<String, String>>,
}

async fn request_address(State(d): Shared, body: Bytes) -> Response {
    answer(
        async {
            let req: AddressReq = request(&body)?;
            let net = d
                .state
                .lock()
                .await
                .pools
                .get(&req.pool_id)
                .cloned()
                .with_context(|| format!("no pool {}", req.pool_id))?;
            let prefix = net.subnet.prefix_len();
            let wanted: Option<Ipv4Addr> = match req.address.as_str() {
                "" => None,
                a => Some(a.parse().with_context(|| format!("bad address {a:?}"))?),
            };
            let kind = req
                .options
                .as_ref()
                .and_then(|o| o.get("RequestAddressType"));
            if kind.map(String::as_str) == Some(GATEWAY_REQUEST) {
                if wanted.is_some_and(|w| w != net.gateway) {
                    anyhow::bail!("the gateway of {} is {}", net.shoal, net.gateway);
                }
                return Ok(json!({"Address": format!("{}/{prefix}", net.gateway), "Data": {}}));
            }
            let id = format!("d{:016x}", rand::rng().random::<u64>());
            let reply = d
                .agent
                .ask_attach(&AttachRequest {
                    network: net.shoal.clone(),
                    container_id: id.clone(),
                    ifname: "eth0".into(),
                    name: String::new(),
                    ip: wanted,
                })
                .await?;
            let addr = reply.attachment.addr;
            let mut st = d.state.lock().await;
            st.leases.insert(
                addr,
                Lease {
                    id,
                    pool: net.shoal.clone(),
                    lb_addr: reply.lb_addr,
                },
            );
            d.store.save(&st)?;
            d.agent
                .set_docker_leases(st.leases.values().map(|l| l.id.clone()).collect());
            info!(%addr, network = %net.shoal, "address leased to Docker");
            Ok(json!({"Address": format!("{addr}/{prefix}"), "Data": {}}))
        }
        .await,
    )
}

async fn release_address(State(d): Shared, body: Bytes) -> Response {
    answer(
        async {
            let req: AddressReq = request(&body)?;
            let Ok(addr) = req
                .address
                .split('/')
                .next()
                .unwrap_or("")
                .parse::<Ipv4Addr>()
            else {
                return Ok(json!({}));
            };
            let lease = d.state.lock().await.leases.get(&addr).cloned();
            if let Some(l) = lease {
                d.agent
                    .ask_detach(&DetachRequest {
                        container_id: l.id.clone(),
                        ifname: None,
                    })
                    .await?;
                let mut st = d.state.lock().await;
                st.leases.remove(&addr);
                d.store.save(&st)?;
                d.agent
                    .set_docker_leases(st.leases.values().map(|l| l.id.clone()).collect());
                info!(%addr, "address released by Docker");
            }
            Ok(json!({}) as Value)
        }
        .await,
    )
}

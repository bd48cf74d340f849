//! Docker's remote network driver and IPAM driver (libnetwork's plugin
//! protocol: JSON over HTTP on a Unix socket), served by the daemon with
//! `--docker-plugin PATH` (/run/docker/plugins/shoal.sock, where dockerd
//! finds plugins). `docker network create -d shoal --ipam-driver shoal
//! --ipam-opt network=NAME NET` maps a Docker network onto the attachable
//! Shoal network NAME; its containers get their addresses from the
//! managers' allocator (the IPAM side leases each as an attachment of this
//! node) and their interface from Join: a veth made on the host that
//! Docker moves into its sandbox (it may not exist yet), with the network's
//! gateway and no docker_gwbridge. The embedded DNS serves each sandbox
//! once Docker made it. Docker does not replay CreateNetwork or
//! CreateEndpoint to a restarted plugin, so the driver keeps its state on
//! disk (`state.rs`).

mod ipam;
mod names;
mod state;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::agent::Agent;
use crate::wire::{ContainerRef, EndpointCreate, NetworkCreate};
use state::{DockerEp, DriverState, Store};

/// The content type of every plugin answer.
const PLUGIN_JSON: &str = "application/vnd.docker.plugins.v1+json";

pub struct Driver {
    agent: Arc<Agent>,
    /// dockerd's own API, where containers' names are (`names.rs`).
    docker_api: PathBuf,
    store: Store,
    state: Mutex<DriverState>,
}

/// Serves the plugin socket until the daemon stops.
pub async fn serve(path: &Path, docker_api: PathBuf, agent: Arc<Agent>) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("Docker plugin socket {}", path.display()))?;
    // Root's only, like the local API: whoever may call the driver may
    // take addresses and make interfaces.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let store = Store::new(&agent.data_dir);
    let st = store.load().context("the Docker driver's state")?;
    agent.set_docker_leases(st.leases.values().map(|l| l.id.clone()).collect());
    let driver = Arc::new(Driver {
        agent,
        docker_api,
        store,
        state: Mutex::new(st),
    });
    let app = Router::new()
        .route("/Plugin.Activate", post(activate))
        .route("/NetworkDriver.GetCapabilities", post(capabilities))
        .route("/NetworkDriver.CreateNetwork", post(create_network))
        .route("/NetworkDriver.DeleteNetwork", post(delete_network))
        .route("/NetworkDriver.CreateEndpoint", post(create_endpoint))
        .route("/NetworkDriver.DeleteEndpoint", post(delete_endpoint))
        .route("/NetworkDriver.EndpointOperInfo", post(oper_info))
        .route("/NetworkDriver.Join", post(join))
        .route("/NetworkDriver.Leave", post(leave))
        .route("/NetworkDriver.DiscoverNew", post(nothing))
        .route("/NetworkDriver.DiscoverDelete", post(nothing))
        .route("/NetworkDriver.ProgramExternalConnectivity", post(nothing))
        .route("/NetworkDriver.RevokeExternalConnectivity", post(nothing))
        .route("/NetworkDriver.AllocateNetwork", post(nothing))
        .route("/NetworkDriver.FreeNetwork", post(nothing))
        .merge(ipam::routes())
        .fallback(|| async { answer(Err(anyhow::anyhow!("no such plugin call"))) })
        .with_state(driver);
    info!(socket = %path.display(), "serving Docker's network and IPAM driver API");
    axum::serve(listener, app).await?;
    Ok(())
}

type Shared = State<Arc<Driver>>;

/// A plugin answer: the value, or `{"Err": ...}` (what libnetwork reads).
fn answer(r: Result<Value>) -> Response {
    let v = match r {
        Ok(v) => v,
        Err(e) => {
            warn!("Docker driver: {e:#}");
            json!({"Err": format!("{e:#}")})
        }
    };
    ([(header::CONTENT_TYPE, PLUGIN_JSON)], v.to_string()).into_response()
}

/// Docker's request body (its content type is not application/json).
fn request<T: DeserializeOwned>(body: &Bytes) -> Result<T> {
    serde_json::from_slice(body).context("bad request")
}

async fn activate() -> Response {
    answer(Ok(json!({"Implements": ["NetworkDriver", "IpamDriver"]})))
}

/// Local scope: each dockerd defines the network; the Shoal network
/// behind it spans the swarm.
async fn capabilities() -> Response {
    answer(Ok(json!({"Scope": "local", "ConnectivityScope": "global"})))
}

async fn nothing() -> Response {
    answer(Ok(json!({})))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IpamData {
    #[serde(default)]
    pool: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateNetworkReq {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "IPv4Data", default)]
    ipv4_data: Vec<IpamData>,
}

async fn create_network(State(d): Shared, body: Bytes) -> Response {
    answer(
        async {
            let req: CreateNetworkReq = request(&body)?;
            let pool = req.ipv4_data.first().map(|p| p.pool.as_str()).unwrap_or("");
            let mut st = d.state.lock().await;
            let net = st
                .pools
                .values()
                .find(|n| n.subnet.to_string() == pool)
                .cloned()
                .with_context(|| {
                    format!("pool {pool:?} is not Shoal's: create the network with `--ipam-driver shoal --ipam-opt network=NAME`")
                })?;
            info!(docker = %req.network_id, shoal = %net.shoal, "Docker network created");
            st.networks.insert(req.network_id, net);
            d.store.save(&st)?;
            Ok(json!({}))
        }
        .await,
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NetworkReq {
    #[serde(rename = "NetworkID")]
    network_id: String,
}

async fn delete_network(State(d): Shared, body: Bytes) -> Response {
    answer(
        async {
            let req: NetworkReq = request(&body)?;
            let mut st = d.state.lock().await;
            st.networks.remove(&req.network_id);
            d.store.save(&st)?;
            Ok(json!({}))
        }
        .await,
    )
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Interface {
    #[serde(default)]
    address: String,
    #[serde(default)]
    mac_address: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EndpointReq {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
    #[serde(default)]
    interface: Option<Interface>,
    #[serde(default)]
    sandbox_key: String,
}

async fn create_endpoint(State(d): Shared, body: Bytes) -> Response {
    answer(
        async {
            let req: EndpointReq = request(&body)?;
            let mut st = d.state.lock().await;
            if !st.networks.contains_key(&req.network_id) {
                anyhow::bail!("no Shoal network behind Docker network {}", req.network_id);
            }
            let i = req.interface.unwrap_or_default();
            let addr: Ipv4Addr = i
                .address
                .split('/')
                .next()
                .unwrap_or("")
                .parse()
                .context("the endpoint has no IPv4 address from Shoal's IPAM")?;
            if !st.leases.contains_key(&addr) {
                anyhow::bail!("{addr} was not leased by Shoal's IPAM (use --ipam-driver shoal)");
            }
            let given = !i.mac_address.is_empty();
            let mac = if given {
                i.mac_address.to_ascii_lowercase()
            } else {
                shoal_dataplane::netlink::format_mac(&shoal_dataplane::netlink::mac_from_ip(addr))
            };
            shoal_dataplane::netlink::parse_mac(&mac)?;
            st.endpoints.insert(
                req.endpoint_id,
                DockerEp {
                    network: req.network_id,
                    addr,
                    mac: mac.clone(),
                    joined: None,
                },
            );
            d.store.save(&st)?;
            // Docker was given an address: answer only what it lacks.
            Ok(if given {
                json!({})
            } else {
                json!({"Interface": {"MacAddress": mac}})
            })
        }
        .await,
    )
}

async fn delete_endpoint(State(d): Shared, body: Bytes) -> Response {
    answer(
        async {
            let req: EndpointReq = request(&body)?;
            d.leave(&req.endpoint_id).await?;
            let mut st = d.state.lock().await;
            st.endpoints.remove(&req.endpoint_id);
            d.store.save(&st)?;
            Ok(json!({}))
        }
        .await,
    )
}

async fn oper_info() -> Response {
    answer(Ok(json!({"Value": {}})))
}

/// The host side of a Docker endpoint's veth and the peer Docker moves
/// (both at most 15 characters, unique per endpoint).
fn link_names(endpoint_id: &str) -> (String, String) {
    let short: String = endpoint_id.chars().take(12).collect();
    (
        format!("dk{short}"),
        format!("shd{}", &short[..short.len().min(8)]),
    )
}

async fn join(State(d): Shared, body: Bytes) -> Response {
    answer(
        async {
            let req: EndpointReq = request(&body)?;
            d.join(&req.endpoint_id, &req.sandbox_key).await
        }
        .await,
    )
}

async fn leave(State(d): Shared, body: Bytes) -> Response {
    answer(
        async {
            let req: EndpointReq = request(&body)?;
            d.leave(&req.endpoint_id).await?;
            Ok(json!({}))
        }
        .await,
    )
}

impl Driver {
    /// Makes the endpoint's interface on the host for Docker to move, and
    /// programs it like any other endpoint (it is in the dataplane and
    /// gossiped before Docker moves it).
    async fn join(&self, endpoint_id: &str, sandbox_key: &str) -> Result<Value> {
        let (ep, net, lease) = {
            let st = self.state.lock().await;
            let ep = st
                .endpoints
                .get(endpoint_id)
                .cloned()
                .with_context(|| format!("no endpoint {endpoint_id}"))?;
            let net = st
                .networks
                .get(&ep.network)
                .cloned()
                .context("the endpoint's network is gone")?;
            let lease = st.leases.get(&ep.addr).cloned().context("no lease")?;
            (ep, net, lease)
        };
        let rec = self.agent.ask_attachable(&net.shoal).await?;
        self.agent
            .join_network(NetworkCreate {
                name: rec.spec.name.clone(),
                vni: rec.vni,
                subnet: rec.subnet.to_string(),
                gateway: Some(rec.gateway),
                encrypted: rec.spec.encrypted,
            })
            .await?;
        let (name, peer) = link_names(endpoint_id);
        let made = self
            .agent
            .create_endpoint(EndpointCreate {
                network: net.shoal.clone(),
                ip: format!("{}/{}", ep.addr, net.subnet.prefix_len()),
                mac: Some(ep.mac.clone()),
                netns: Some(sandbox_key.to_string()),
                name: Some(name.clone()),
                ifname: Some(peer.clone()),
                default_route: Some(true),
                container: Some(ContainerRef {
                    id: lease.id.clone(),
                    name: String::new(),
                    lb_addr: lease.lb_addr,
                    netns_ino: None,
                }),
                external: true,
                ..Default::default()
            })
            .await;
        if let Err(e) = made {
            self.agent
                .leave_unused_networks(std::slice::from_ref(&net.shoal))
                .await;
            return Err(e);
        }
        {
            let mut st = self.state.lock().await;
            if let Some(e) = st.endpoints.get_mut(endpoint_id) {
                e.joined = Some(name.clone());
            }
            self.store.save(&st)?;
        }
        // The resolver once Docker has made the sandbox and moved the
        // interface in.
        let (agent, key, id) = (self.agent.clone(), sandbox_key.to_string(), lease.id);
        tokio::spawn(async move { agent.serve_dns_when_ready(&id, &key).await });
        tokio::spawn(names::name_when_known(
            self.agent.clone(),
            self.docker_api.clone(),
            ep.network.clone(),
            endpoint_id.to_string(),
            name.clone(),
        ));
        info!(endpoint = %endpoint_id, ip = %ep.addr, network = %net.shoal, "Docker endpoint joined");
        Ok(json!({
            "InterfaceName": {"SrcName": peer, "DstPrefix": "eth"},
            "Gateway": net.gateway.to_string(),
            "DisableGatewayService": true,
        }))
    }

    /// Removes the local endpoint (the address stays leased until Docker
    /// releases it). Idempotent.
    async fn leave(&self, endpoint_id: &str) -> Result<()> {
        let (joined, net, lease) = {
            let st = self.state.lock().await;
            let Some(ep) = st.endpoints.get(endpoint_id) else {
                return Ok(());
            };
            let net = st.networks.get(&ep.network).map(|n| n.shoal.clone());
            (
                ep.joined.clone(),
                net,
                st.leases.get(&ep.addr).map(|l| l.id.clone()),
            )
        };
        let Some(name) = joined else { return Ok(()) };
        let _ = self.agent.remove_endpoint(&name).await;
        if let Some(id) = lease {
            self.agent
                .dns
                .detach(&crate::agent::attachments::dns_client(&id));
        }
        if let Some(n) = net {
            self.agent.leave_unused_networks(&[n]).await;
        }
        let mut st = self.state.lock().await;
        if let Some(e) = st.endpoints.get_mut(endpoint_id) {
            e.joined = None;
        }
        self.store.save(&st)?;
        info!(endpoint = %endpoint_id, "Docker endpoint left");
        Ok(())
    }
}

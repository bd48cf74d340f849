//! The daemon's swarm role (issue 4, in progress): `swarm init` makes this
//! node the first manager (a Raft group of one, the cluster CA and join
//! tokens in the Raft state), `join-token` shows or rotates tokens, `node ls`
//! reads the nodes from the applied state. A manager restarted from disk
//! resumes its Raft group. Joining other nodes is not there yet.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper::Method;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tracing::info;

use super::Agent;
use crate::api::{ApiError, JoinTokenReply, NodeView, SwarmInitReply};
use crate::pki::{digest_of_pem, ClusterCa, JoinToken};
use crate::raft::manager::Manager;
use crate::raft::network::request;
use crate::raft::state::{
    Availability, ClusterInfo, Command, CommandResult, NodeRecord, NodeState, RaftId, Role,
};

/// What a node remembers of its swarm membership (DATA_DIR/swarm.json).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Membership {
    pub node_id: String,
    pub raft_id: RaftId,
    pub control_addr: SocketAddr,
    pub role: Role,
}

pub struct Swarm {
    pub membership: Membership,
    /// Managers run a Raft member; workers do not.
    pub manager: Option<Manager>,
}

impl Swarm {
    fn manager(&self) -> Result<&Manager> {
        self.manager
            .as_ref()
            .context("this node is not a swarm manager")
    }
}

/// `POST /swarm/join` on a manager's control port.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    pub token: String,
    pub hostname: String,
    pub addr: Ipv4Addr,
    pub raft_id: RaftId,
    pub control_addr: SocketAddr,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinReply {
    pub node_id: String,
    pub role: Role,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A Docker-style id: 25 base-36 characters.
fn new_id() -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut r = rand::rng();
    (0..25)
        .map(|_| DIGITS[r.random_range(0..36)] as char)
        .collect()
}

fn membership_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("swarm.json")
}

async fn wait_leader(m: &Manager, id: RaftId) -> Result<()> {
    let t0 = Instant::now();
    while m.leader() != Some(id) {
        if t0.elapsed() > Duration::from_secs(10) {
            bail!("this manager did not become leader within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The control-port routes a manager serves besides Raft's.
fn control_router(agent: &Arc<Agent>) -> Router {
    Router::new()
        .route("/swarm/ca", get(ca_pem))
        .route("/swarm/join", post(join_handler))
        .with_state(agent.clone())
}

async fn ca_pem(State(a): State<Arc<Agent>>) -> Response {
    let swarm = a.swarm.lock().await;
    match swarm
        .as_ref()
        .and_then(|s| s.manager.as_ref())
        .and_then(|m| m.state().cluster)
    {
        Some(c) => c.ca_cert_pem.into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no swarm here").into_response(),
    }
}

async fn join_handler(State(a): State<Arc<Agent>>, Json(req): Json<JoinRequest>) -> Response {
    match a.admit(req).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(ApiError {
                error: format!("{e:#}"),
            }),
        )
            .into_response(),
    }
}

impl Agent {
    /// A manager admitting a node: the token's secret decides the role, the
    /// leader adds managers to Raft as voters, every node gets a record and
    /// a certificate signed by the cluster CA.
    async fn admit(&self, req: JoinRequest) -> Result<JoinReply> {
        let swarm = self.swarm.lock().await;
        let s = swarm.as_ref().context("this node is not in a swarm")?;
        let m = s.manager()?;
        let cluster = m.state().cluster.context("the swarm is not initialised")?;
        let ca = ClusterCa::from_pem(
            &cluster.cluster_id,
            &cluster.ca_cert_pem,
            &cluster.ca_key_pem,
        )?;
        let presented = JoinToken::parse(&req.token)?;
        if presented.ca_digest != ca.digest() {
            bail!("the join token is for another swarm");
        }
        let role = if presented.secret_matches(&JoinToken::parse(&cluster.worker_token)?) {
            Role::Worker
        } else if presented.secret_matches(&JoinToken::parse(&cluster.manager_token)?) {
            Role::Manager
        } else {
            bail!("invalid join token");
        };
        if m.leader() != Some(s.membership.raft_id) {
            bail!("this manager is not the leader; join through the leader");
        }
        if let Some(n) = m.state().nodes.values().find(|n| n.addr == req.addr) {
            bail!(
                "a node with address {} is already in the swarm ({})",
                req.addr,
                n.hostname
            );
        }
        if role == Role::Manager {
            m.add_voter(req.raft_id, &req.control_addr.to_string())
                .await?;
        }
        let node_id = new_id();
        let node = NodeRecord {
            id: node_id.clone(),
            raft_id: (role == Role::Manager).then_some(req.raft_id),
            hostname: req.hostname.clone(),
            addr: req.addr,
            role,
            availability: Availability::Active,
            labels: Default::default(),
            state: NodeState::Ready,
            version: 0,
        };
        expect_ok(m.write(Command::NodeAdd { node }).await?)?;
        let (cert_pem, key_pem) = ca.issue(&node_id, role, req.addr)?;
        info!(%node_id, hostname = %req.hostname, ?role, "node joined");
        Ok(JoinReply {
            node_id,
            role,
            cert_pem,
            key_pem,
        })
    }

    /// Joins the swarm a manager at `remote` belongs to, pinning its CA by
    /// the token's digest before trusting it.
    pub async fn swarm_join(self: &Arc<Self>, token: &str, remote: &str) -> Result<JoinReply> {
        let mut swarm = self.swarm.lock().await;
        if swarm.is_some() {
            bail!("this node is already part of a swarm");
        }
        let t = JoinToken::parse(token)?;
        let ttl = Duration::from_secs(20);
        let (status, ca) = request(remote, Method::GET, "/swarm/ca", vec![], ttl)
            .await
            .map_err(|f| anyhow!(f.msg))?;
        if !status.is_success() {
            bail!("{remote} is not a swarm manager");
        }
        let ca = String::from_utf8_lossy(&ca).into_owned();
        if digest_of_pem(&ca)? != t.ca_digest {
            bail!("the manager at {remote} does not hold the CA this token pins; refusing to join");
        }
        // Start a Raft member first: a manager token makes the leader
        // replicate to it as soon as it is added.
        let control_addr = SocketAddr::new(self.info.vtep.into(), self.control_port);
        let raft_id: RaftId = rand::rng().random_range(1..u64::MAX);
        let manager = self.start_manager(raft_id, control_addr).await?;
        let req = JoinRequest {
            token: token.to_string(),
            hostname: self.info.node.clone(),
            addr: self.info.vtep,
            raft_id,
            control_addr,
        };
        let (status, body) = request(
            remote,
            Method::POST,
            "/swarm/join",
            serde_json::to_vec(&req)?,
            ttl,
        )
        .await
        .map_err(|f| anyhow!(f.msg))?;
        if !status.is_success() {
            let _ = manager.shutdown().await;
            let _ = std::fs::remove_dir_all(self.data_dir.join("raft"));
            let msg = serde_json::from_slice::<ApiError>(&body)
                .map(|e| e.error)
                .unwrap_or_else(|_| status.to_string());
            bail!("{remote} refused the join: {msg}");
        }
        let reply: JoinReply = serde_json::from_slice(&body)?;
        std::fs::write(self.data_dir.join("node.crt"), &reply.cert_pem)?;
        std::fs::write(self.data_dir.join("node.key"), &reply.key_pem)?;
        std::fs::write(self.data_dir.join("ca.crt"), &ca)?;
        let manager = if reply.role == Role::Manager {
            Some(manager)
        } else {
            let _ = manager.shutdown().await;
            let _ = std::fs::remove_dir_all(self.data_dir.join("raft"));
            None
        };
        let membership = Membership {
            node_id: reply.node_id.clone(),
            raft_id,
            control_addr,
            role: reply.role,
        };
        std::fs::write(
            membership_path(&self.data_dir),
            serde_json::to_vec_pretty(&membership)?,
        )?;
        *swarm = Some(Swarm {
            membership,
            manager,
        });
        info!(node_id = %reply.node_id, role = ?reply.role, "joined the swarm");
        Ok(reply)
    }

    /// A Raft member serving the control port (Raft RPCs, CA, join).
    async fn start_manager(
        self: &Arc<Self>,
        raft_id: RaftId,
        control_addr: SocketAddr,
    ) -> Result<Manager> {
        let listener = TcpListener::bind(control_addr)
            .await
            .with_context(|| format!("cannot listen on {control_addr} for the control plane"))?;
        Manager::start(
            raft_id,
            listener,
            &self.data_dir.join("raft"),
            control_router(self),
        )
        .await
    }

    /// Resumes the swarm role a previous run had (if any).
    pub async fn restore_swarm(self: &Arc<Self>) -> Result<()> {
        let path = membership_path(&self.data_dir);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(());
        };
        let m: Membership =
            serde_json::from_str(&text).with_context(|| format!("corrupt {}", path.display()))?;
        let manager = if m.role == Role::Manager {
            Some(self.start_manager(m.raft_id, m.control_addr).await?)
        } else {
            None
        };
        info!(node_id = %m.node_id, role = ?m.role, "swarm role resumed");
        *self.swarm.lock().await = Some(Swarm {
            membership: m,
            manager,
        });
        Ok(())
    }

    pub async fn swarm_init(
        self: &Arc<Self>,
        advertise: Option<Ipv4Addr>,
    ) -> Result<SwarmInitReply> {
        let mut swarm = self.swarm.lock().await;
        if swarm.is_some() {
            bail!("this node is already part of a swarm");
        }
        let addr = advertise.unwrap_or(self.info.vtep);
        let control_addr = SocketAddr::new(addr.into(), self.control_port);
        let raft_id: RaftId = rand::rng().random_range(1..u64::MAX);
        let node_id = new_id();
        let manager = self.start_manager(raft_id, control_addr).await?;
        manager.initialize().await?;
        wait_leader(&manager, raft_id).await?;

        let ca = ClusterCa::generate(&new_id())?;
        let info = ClusterInfo {
            cluster_id: new_id(),
            worker_token: JoinToken::generate(&ca.digest()).to_string(),
            manager_token: JoinToken::generate(&ca.digest()).to_string(),
            ca_cert_pem: ca.cert_pem.clone(),
            ca_key_pem: ca.key_pem.clone(),
        };
        expect_ok(
            manager
                .write(Command::ClusterInit { info: info.clone() })
                .await?,
        )?;
        let me = NodeRecord {
            id: node_id.clone(),
            raft_id: Some(raft_id),
            hostname: self.info.node.clone(),
            addr,
            role: Role::Manager,
            availability: Availability::Active,
            labels: Default::default(),
            state: NodeState::Ready,
            version: 0,
        };
        expect_ok(manager.write(Command::NodeAdd { node: me }).await?)?;
        let membership = Membership {
            node_id: node_id.clone(),
            raft_id,
            control_addr,
            role: Role::Manager,
        };
        let path = membership_path(&self.data_dir);
        std::fs::write(&path, serde_json::to_vec_pretty(&membership)?)?;
        *swarm = Some(Swarm {
            membership,
            manager: Some(manager),
        });
        info!(%node_id, %control_addr, "swarm initialised");
        Ok(SwarmInitReply {
            node_id,
            control_addr: control_addr.to_string(),
            worker_token: info.worker_token,
            manager_token: info.manager_token,
        })
    }

    pub async fn join_token(&self, role: Role, rotate: bool) -> Result<JoinTokenReply> {
        let swarm = self.swarm.lock().await;
        let s = swarm.as_ref().context("this node is not a swarm manager")?;
        let m = s.manager()?;
        let cluster = m
            .state()
            .cluster
            .context("the swarm is not initialised yet")?;
        let mut token = match role {
            Role::Worker => cluster.worker_token,
            Role::Manager => cluster.manager_token,
        };
        if rotate {
            let ca = ClusterCa::from_pem(
                &cluster.cluster_id,
                &cluster.ca_cert_pem,
                &cluster.ca_key_pem,
            )?;
            token = JoinToken::generate(&ca.digest()).to_string();
            expect_ok(
                m.write(Command::TokenRotate {
                    role,
                    token: token.clone(),
                })
                .await?,
            )?;
        }
        Ok(JoinTokenReply {
            role,
            token,
            control_addr: s.membership.control_addr.to_string(),
        })
    }

    pub async fn nodes(&self) -> Result<Vec<NodeView>> {
        let swarm = self.swarm.lock().await;
        let s = swarm.as_ref().context("this node is not a swarm manager")?;
        let m = s.manager()?;
        let leader = m.leader();
        let mut out: Vec<NodeView> = m
            .state()
            .nodes
            .values()
            .map(|n| NodeView {
                id: n.id.clone(),
                hostname: n.hostname.clone(),
                status: match n.state {
                    NodeState::Ready => "Ready",
                    NodeState::Down => "Down",
                    NodeState::Unknown => "Unknown",
                }
                .into(),
                availability: match n.availability {
                    Availability::Active => "Active",
                    Availability::Pause => "Pause",
                    Availability::Drain => "Drain",
                }
                .into(),
                manager_status: match (n.role, n.raft_id) {
                    (Role::Manager, Some(r)) if Some(r) == leader => "Leader".into(),
                    (Role::Manager, _) => "Reachable".into(),
                    (Role::Worker, _) => String::new(),
                },
                is_self: n.id == s.membership.node_id,
                addr: n.addr,
            })
            .collect();
        out.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        Ok(out)
    }
}

fn expect_ok(r: CommandResult) -> Result<()> {
    match r {
        CommandResult::Error(e) => bail!("{e}"),
        _ => Ok(()),
    }
}

impl Agent {
    /// Finds a node by id, id prefix or hostname.
    fn find_node(m: &Manager, key: &str) -> Result<NodeRecord> {
        let st = m.state();
        // Exact id or hostname first, then a unique id prefix (as Docker).
        if let Some(n) = st.nodes.values().find(|n| n.id == key || n.hostname == key) {
            return Ok(n.clone());
        }
        let hits: Vec<&NodeRecord> = st
            .nodes
            .values()
            .filter(|n| n.id.starts_with(key))
            .collect();
        match hits.as_slice() {
            [n] => Ok((*n).clone()),
            [] => bail!("no such node: {key}"),
            _ => bail!("node {key} is ambiguous (matches {} nodes)", hits.len()),
        }
    }

    pub async fn node_inspect(&self, key: &str) -> Result<serde_json::Value> {
        let swarm = self.swarm.lock().await;
        let s = swarm.as_ref().context("this node is not a swarm manager")?;
        let m = s.manager()?;
        let n = Self::find_node(m, key)?;
        let leader = m.leader();
        let ms = n.raft_id.map(|r| {
            serde_json::json!({"Leader": Some(r) == leader, "Reachability": "reachable", "Addr": format!("{}:{}", n.addr, self.control_port)})
        });
        Ok(serde_json::json!({
            "ID": n.id,
            "Version": {"Index": n.version},
            "Spec": {
                "Labels": n.labels,
                "Role": match n.role { Role::Manager => "manager", Role::Worker => "worker" },
                "Availability": match n.availability { Availability::Active => "active", Availability::Pause => "pause", Availability::Drain => "drain" },
            },
            "Description": {"Hostname": n.hostname},
            "Status": {"State": match n.state { NodeState::Ready => "ready", NodeState::Down => "down", NodeState::Unknown => "unknown" }, "Addr": n.addr},
            "ManagerStatus": ms,
        }))
    }

    /// Availability and labels, through the Raft log (on the leader).
    pub async fn node_update(
        &self,
        key: &str,
        availability: Option<Availability>,
        labels_add: std::collections::BTreeMap<String, String>,
        labels_rm: Vec<String>,
    ) -> Result<String> {
        let swarm = self.swarm.lock().await;
        let s = swarm.as_ref().context("this node is not a swarm manager")?;
        let m = s.manager()?;
        let n = Self::find_node(m, key)?;
        let cmd = Command::NodeUpdate {
            id: n.id.clone(),
            role: None,
            availability,
            labels_add,
            labels_rm,
        };
        expect_ok(m.write(cmd).await?)?;
        Ok(n.id)
    }

    /// Removes a worker from the swarm (managers must be demoted first).
    pub async fn node_rm(&self, key: &str) -> Result<String> {
        let swarm = self.swarm.lock().await;
        let s = swarm.as_ref().context("this node is not a swarm manager")?;
        let m = s.manager()?;
        let n = Self::find_node(m, key)?;
        if n.role == Role::Manager {
            bail!(
                "node {} is a manager; demote it before removing it",
                n.hostname
            );
        }
        expect_ok(m.write(Command::NodeRemove { id: n.id.clone() }).await?)?;
        Ok(n.id)
    }
}

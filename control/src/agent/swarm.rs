//! The daemon's swarm role (issue 4, in progress): `swarm init` makes this
//! node the first manager (a Raft group of one, the cluster CA and join
//! tokens in the Raft state), `join-token` shows or rotates tokens, `node ls`
//! reads the nodes from the applied state. A manager restarted from disk
//! resumes its Raft group. Joining other nodes is not there yet.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tracing::info;

use super::Agent;
use crate::api::{JoinTokenReply, NodeView, SwarmInitReply};
use crate::pki::{ClusterCa, JoinToken};
use crate::raft::manager::Manager;
use crate::raft::state::{
    Availability, ClusterInfo, Command, CommandResult, NodeRecord, NodeState, RaftId, Role,
};

/// What a node remembers of its swarm membership (DATA_DIR/swarm.json).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Membership {
    pub node_id: String,
    pub raft_id: RaftId,
    pub control_addr: SocketAddr,
}

pub struct Swarm {
    pub membership: Membership,
    pub manager: Manager,
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

impl Agent {
    /// Resumes the swarm role a previous run had (if any).
    pub async fn restore_swarm(&self) -> Result<()> {
        let path = membership_path(&self.data_dir);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(());
        };
        let m: Membership =
            serde_json::from_str(&text).with_context(|| format!("corrupt {}", path.display()))?;
        let listener = TcpListener::bind(m.control_addr)
            .await
            .with_context(|| format!("bind {}", m.control_addr))?;
        let manager = Manager::start(m.raft_id, listener, &self.data_dir.join("raft")).await?;
        info!(node_id = %m.node_id, "swarm role resumed (manager)");
        *self.swarm.lock().await = Some(Swarm {
            membership: m,
            manager,
        });
        Ok(())
    }

    pub async fn swarm_init(&self, advertise: Option<Ipv4Addr>) -> Result<SwarmInitReply> {
        let mut swarm = self.swarm.lock().await;
        if swarm.is_some() {
            bail!("this node is already part of a swarm");
        }
        let addr = advertise.unwrap_or(self.info.vtep);
        let control_addr = SocketAddr::new(addr.into(), self.control_port);
        let listener = TcpListener::bind(control_addr)
            .await
            .with_context(|| format!("cannot listen on {control_addr} for the control plane"))?;
        let raft_id: RaftId = rand::rng().random_range(1..u64::MAX);
        let node_id = new_id();
        let manager = Manager::start(raft_id, listener, &self.data_dir.join("raft")).await?;
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
        };
        let path = membership_path(&self.data_dir);
        std::fs::write(&path, serde_json::to_vec_pretty(&membership)?)?;
        *swarm = Some(Swarm {
            membership,
            manager,
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
        let cluster = s
            .manager
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
                s.manager
                    .write(Command::TokenRotate {
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
        let leader = s.manager.leader();
        let mut out: Vec<NodeView> = s
            .manager
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

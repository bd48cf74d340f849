//! The daemon's swarm role: `swarm init` (first manager, cluster CA, join
//! tokens), `swarm join` (`join.rs`), the node commands (`nodes.rs`), and
//! the node's session with the managers (`session.rs`: heartbeats for
//! liveness, promotion, demotion, removal, `swarm leave`).
//!
//! Managers serve the control port (`crate::control_port`, mutual TLS on
//! 2377); workers only call it. Every change goes through
//! `Manager::leader_op`, which forwards to the leader when needed.

mod attach;
mod certs;
mod docker_views;
mod flows;
mod join;
mod logs;
mod nodes;
mod services;
mod session;
mod settings;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tracing::info;

use super::Agent;
use crate::control_port::live::LiveTls;
use crate::control_port::tls::{Identity, PeerId};
use crate::gossip::keys::SwarmKeys;
use crate::raft::manager::Manager;
use crate::wire::LeaderOp;
use crate::wire::{ErrorKind, WireError, REMOVED};
use crate::wire::{RaftId, Role};

/// What a node remembers of its swarm membership (DATA_DIR/swarm.json).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Membership {
    pub node_id: String,
    pub raft_id: RaftId,
    pub control_addr: SocketAddr,
    pub role: Role,
    /// Control addresses of the managers, the last known leader first.
    #[serde(default)]
    pub managers: Vec<String>,
}

impl Membership {
    fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("swarm.json")
    }

    fn save(&self, data_dir: &Path) -> Result<()> {
        crate::files::write_atomic(&Self::path(data_dir), &serde_json::to_vec_pretty(self)?)
    }
}

pub struct Swarm {
    pub membership: Membership,
    /// Managers run a Raft member; workers do not.
    pub manager: Option<Arc<Manager>>,
    /// This node's certificate as it renews, as a control-port client
    /// (and server, on a manager).
    pub tls: Arc<LiveTls>,
    /// Bumped on every (re)install, so an old session loop knows to stop.
    generation: u64,
    /// When the certificate expires and renews.
    cert: certs::CertClock,
    /// Why the managers last refused the certificate (said once).
    cert_refused: Option<String>,
    /// A promotion the leader has not confirmed yet: its Raft member
    /// runs (the leader may have made it a voter already) and is kept
    /// across retries, never wiped, so it cannot forget a term or a vote.
    promoting: Option<Promoting>,
}

/// A Raft member started for a promotion, waiting for the leader's AddVoter.
pub(crate) struct Promoting {
    raft_id: RaftId,
    manager: Arc<Manager>,
    identity: crate::control_port::tls::Identity,
}

pub use crate::raft::state::new_id;
use crate::wire::SessionRequest;

fn new_raft_id() -> RaftId {
    rand::rng().random_range(1..u64::MAX)
}

impl Agent {
    /// This node's manager (cloned out, so no lock is held across network
    /// calls) and membership.
    async fn manager(&self) -> Result<(Arc<Manager>, Membership)> {
        let swarm = self.swarm.lock().await;
        // Docker's wording, which operators grep for.
        let s = swarm.as_ref().ok_or_else(|| crate::wire_err!(Unavailable, "this node is not a swarm manager: use `shoal swarm init` or `shoal swarm join` to connect it to a swarm"))?;
        let m = s.manager.clone().ok_or_else(|| crate::wire_err!(Unavailable, "this node is not a swarm manager: worker nodes can't be used to view or modify cluster state; run this on a manager node or promote this node"))?;
        Ok((m, s.membership.clone()))
    }

    /// A Raft member serving the control port with `tls`.
    async fn start_manager(
        self: &Arc<Self>,
        raft_id: RaftId,
        node_id: &str,
        control_addr: SocketAddr,
        tls: &Arc<LiveTls>,
    ) -> Result<Arc<Manager>> {
        let listener = TcpListener::bind(control_addr)
            .await
            .with_context(|| format!("cannot listen on {control_addr} for the control plane"))?;
        let m = Arc::new(
            Manager::start(
                raft_id,
                node_id,
                listener,
                &self.data_dir.join("raft"),
                tls.clone(),
                control_router(self),
                self.raft_opts.clone(),
            )
            .await?,
        );
        tokio::spawn(crate::orchestrator::run(Arc::downgrade(&m)));
        Ok(m)
    }

    /// Makes `membership` this node's swarm role and starts its session.
    fn install(
        self: &Arc<Self>,
        slot: &mut Option<Swarm>,
        membership: Membership,
        manager: Option<Arc<Manager>>,
        identity: &Identity,
        tls: Arc<LiveTls>,
    ) -> Result<()> {
        membership.save(&self.data_dir)?;
        let generation = slot.as_ref().map_or(0, |s| s.generation) + 1;
        *slot = Some(Swarm {
            membership,
            manager,
            cert: certs::clock_or_now(identity),
            tls,
            generation,
            cert_refused: None,
            promoting: None,
        });
        self.spawn_session(generation);
        Ok(())
    }

    /// Forgets the swarm on this node's disk (membership, certificates,
    /// Raft store, gossip keys: gossip falls back to the key file, or to
    /// plaintext if allowed, or stops; the members it remembered).
    fn forget_swarm(&self) {
        self.gossip.keys.clear_swarm();
        let _ = std::fs::remove_file(self.data_dir.join(crate::wire::GOSSIP_PEERS_FILE));
        SwarmKeys::remove(&self.data_dir);
        let _ = std::fs::remove_file(Membership::path(&self.data_dir));
        Identity::remove(&self.data_dir);
        let _ = std::fs::remove_dir_all(self.data_dir.join("raft"));
    }

    /// Resumes the swarm role a previous run had (if any).
    pub async fn restore_swarm(self: &Arc<Self>) -> Result<()> {
        let path = Membership::path(&self.data_dir);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(());
        };
        let m: Membership =
            serde_json::from_str(&text).with_context(|| format!("corrupt {}", path.display()))?;
        let identity = Identity::load(&self.data_dir)?;
        let tls = LiveTls::new(&identity)?;
        let manager = if m.role == Role::Manager {
            Some(
                self.start_manager(m.raft_id, &m.node_id, m.control_addr, &tls)
                    .await?,
            )
        } else {
            None
        };
        info!(node_id = %m.node_id, role = ?m.role, "swarm role resumed");
        let mut slot = self.swarm.lock().await;
        self.install(&mut slot, m, manager, &identity, tls)
    }
}

impl Agent {
    /// Seals gossip with the swarm's keys from now on (kept on disk, so a
    /// restart gossips at once, before its first session).
    /// Whether the keys changed.
    pub(super) fn adopt_gossip_keys(
        &self,
        keys: Vec<crate::wire::GossipKey>,
        send: Option<u32>,
    ) -> bool {
        let saved = self.gossip.keys.set_swarm(keys, send);
        let changed = saved.is_some();
        if let Some(saved) = saved {
            let ids: Vec<u32> = saved.keys.iter().map(|k| k.id).collect();
            info!(ring = ?ids, sealing = ?saved.send, "gossip keys from the managers");
            if let Err(e) = saved.save(&self.data_dir) {
                tracing::warn!("cannot keep the gossip keys on disk: {e}");
            }
        }
        changed
    }
}

/// The control-port routes of this daemon's manager, besides Raft's.
fn control_router(agent: &Arc<Agent>) -> Router {
    Router::new()
        .route("/swarm/ca", get(ca_pem))
        .route("/swarm/join", post(join_handler))
        .route("/swarm/session", post(session_handler))
        .route("/swarm/cert", post(cert_handler))
        .route("/swarm/attach", post(attach::attach_handler))
        .route("/swarm/detach", post(attach::detach_handler))
        .route("/swarm/attachable", post(attach::attachable_handler))
        .with_state(agent.clone())
}

/// An error answer on the control port. `status` is for an untyped
/// failure; a typed one keeps its kind (a node no longer in the swarm gets
/// 410 Gone, and its session leaves on it).
fn refusal(status: StatusCode, e: anyhow::Error) -> Response {
    let kind = WireError::kind_of(e.as_ref());
    let status = match kind {
        ErrorKind::Internal => status,
        k => StatusCode::from_u16(k.http_status()).unwrap_or(status),
    };
    (status, Json(WireError::new(kind, format!("{e:#}")))).into_response()
}

async fn ca_pem(State(a): State<Arc<Agent>>) -> Response {
    match a.manager().await.ok().and_then(|(m, _)| m.state().cluster) {
        Some(c) => c.trust_bundle().into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no swarm here").into_response(),
    }
}

async fn join_handler(
    State(a): State<Arc<Agent>>,
    Json(req): Json<crate::wire::JoinRequest>,
) -> Response {
    match a.admit(req).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => refusal(StatusCode::BAD_REQUEST, e),
    }
}

/// A node's heartbeat, relayed to the leader; the identity is the
/// certificate's, never the body's.
async fn session_handler(
    State(a): State<Arc<Agent>>,
    Extension(peer): Extension<PeerId>,
    req: Option<Json<SessionRequest>>,
) -> Response {
    let r = req.map(|Json(r)| r).unwrap_or_default();
    let res = async {
        let (m, _) = a.manager().await?;
        let r = m
            .leader_op(LeaderOp::Heartbeat {
                node_id: peer.node_id,
                reports: r.reports,
                logs: r.logs,
                flows: r.flows,
                gossip_keys: r.gossip_keys,
                leaving: r.leaving,
                restarting: r.restarting,
                ipsec: r.ipsec,
                cert_not_after_ms: r.cert_not_after_ms,
                cert_issuer: Some(peer.issuer),
            })
            .await?;
        r.session.context("the leader sent no session")
    }
    .await;
    match res {
        Ok(s) => Json(s).into_response(),
        Err(e) => refusal(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// A fresh certificate for the calling node, with the role the replicated
/// state gives it now (after promotion or demotion).
async fn cert_handler(
    State(a): State<Arc<Agent>>,
    Extension(peer): Extension<PeerId>,
    req: Option<Json<crate::wire::CertRequest>>,
) -> Response {
    let res = async {
        let Some(Json(req)) = req else {
            crate::fail!(Invalid, "a certificate request (CSR) is required");
        };
        let (m, _) = a.manager().await?;
        let st = m.state();
        let node = st
            .nodes
            .get(&peer.node_id)
            .ok_or_else(|| WireError::gone(format!("node {} {REMOVED}", peer.node_id)))?;
        let cert_pem = join::sign_for(&st, node, &req.csr_pem)?;
        let ca_pem = st.cluster.as_ref().map(|c| c.trust_bundle());
        anyhow::Ok((cert_pem, ca_pem))
    }
    .await;
    match res {
        Ok((cert_pem, ca_pem)) => Json(crate::wire::CertReply { cert_pem, ca_pem }).into_response(),
        Err(e) => refusal(StatusCode::BAD_REQUEST, e),
    }
}

//! One manager: a Raft instance over the redb store, serving the Raft RPCs
//! of its peers on the control port, and the single door for changes:
//! `leader_op` runs an operation on the leader, forwarding it there when
//! this manager is a follower.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::leader::execute;
use anyhow::{anyhow, Context, Result};
use axum::Router;
use openraft::{BasicNode, Config, Raft, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::rustls::ClientConfig;

use super::leader::LeaderMemory;
use super::liveness;
use super::rpc_client::Network;
use super::rpc_server;
use super::state::ClusterState;
use super::store::{self, LogStore, StateMachine};
use super::TypeConfig;
use crate::control_port::client::call;
use crate::control_port::live::LiveTls;
use crate::control_port::server;
use crate::wire::{Command, CommandResult, RaftDebug, RaftId};
use crate::wire::{LeaderOp, LeaderReply, OpError, WireError};

/// How long a change may wait for a leader and a quorum before it is
/// refused (an election takes 1-2 s; a minority never gets one).
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);

/// Tunables (the defaults suit managers on one LAN).
#[derive(Clone, Debug)]
pub struct Options {
    /// Build a snapshot (and compact the log) every this many entries.
    pub snapshot_every: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            snapshot_every: 1000,
        }
    }
}

pub struct Manager {
    pub id: RaftId,
    pub node_id: String,
    pub addr: String,
    pub raft: Raft<TypeConfig>,
    state: Arc<RwLock<ClusterState>>,
    tls: Arc<LiveTls>,
    mem: Arc<LeaderMemory>,
    /// Leader changes seen since start (metrics).
    leader_changes: Arc<std::sync::atomic::AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
}

/// What the metrics endpoint reports of a manager's Raft.
#[derive(Clone, Debug, Default)]
pub struct RaftMetricsView {
    pub term: u64,
    pub is_leader: bool,
    /// Log entries held but not applied yet.
    pub commit_lag: u64,
    pub leader_changes: u64,
}

/// Raft timing for managers on one LAN. openraft's followers refuse votes
/// while their leader lease (= the maximum election timeout) runs, so the
/// first candidate after a leader dies is usually refused and the second
/// round wins: failover takes about lease + one timeout. A narrow window
/// (750-1000 ms) keeps that near 2 s; heartbeats every 150 ms leave five
/// missed beats before anyone stands.
pub const HEARTBEAT_MS: u64 = 150;
pub const ELECTION_TIMEOUT_MS: (u64, u64) = (750, 1000);

/// Entries per AppendEntries: with the orchestrator's bounded batches
/// (under 1 MiB each) a catching-up follower gets at most this many
/// megabytes per request, within `rpc_server::RAFT_BODY_LIMIT`.
pub const MAX_PAYLOAD_ENTRIES: u64 = 32;

fn config(opts: &Options) -> Result<Config> {
    Ok(Config {
        cluster_name: "shoal".into(),
        heartbeat_interval: HEARTBEAT_MS,
        election_timeout_min: ELECTION_TIMEOUT_MS.0,
        election_timeout_max: ELECTION_TIMEOUT_MS.1,
        install_snapshot_timeout: 10_000,
        snapshot_max_chunk_size: 512 * 1024,
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(opts.snapshot_every),
        max_in_snapshot_log_to_keep: opts.snapshot_every / 10,
        purge_batch_size: 1,
        ..Default::default()
    }
    .validate()?)
}

impl Manager {
    /// Opens (or creates) the store under `data_dir` and serves the control
    /// port on `listener` with the node's certificate as it renews (`tls`):
    /// Raft RPCs plus the `extra` routes of the caller.
    pub async fn start(
        id: RaftId,
        node_id: &str,
        listener: TcpListener,
        data_dir: &Path,
        tls: Arc<LiveTls>,
        extra: Router,
        opts: Options,
    ) -> Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        let db =
            store::open(&data_dir.join("raft.redb")).map_err(|e| anyhow!("raft store: {e}"))?;
        let sm = StateMachine::open(db.clone()).map_err(|e| anyhow!("raft state: {e}"))?;
        let state = sm.state();
        let network = Network { tls: tls.clone() };
        let raft = Raft::new(id, Arc::new(config(&opts)?), network, LogStore::new(db), sm)
            .await
            .map_err(|e| anyhow!("raft: {e}"))?;
        let addr = listener.local_addr()?.to_string();
        let mem = Arc::new(LeaderMemory::default());
        let app = rpc_server::router(raft.clone(), state.clone(), mem.clone()).merge(extra);
        let policy_state = state.clone();
        let policy_raft = raft.clone();
        let authorize: server::Authorize = Arc::new(move |peer, path| {
            let st = policy_state.read().expect("state lock");
            super::policy::authorize_with_membership(&st, peer, path, |ip| {
                raft_member(&policy_raft, ip)
            })
        });
        // Removed nodes' certificates fail the handshake here.
        let revoked_state = state.clone();
        tls.set_revoked(Arc::new(move |node_id: &str| {
            let st = revoked_state.read().expect("state lock");
            st.cluster
                .as_ref()
                .is_some_and(|c| c.revoked.contains_key(node_id))
        }));
        let server = tokio::spawn(server::serve(listener, tls.clone(), app, authorize));
        let watch = tokio::spawn(liveness::watch(
            raft.clone(),
            state.clone(),
            mem.clone(),
            node_id.to_string(),
        ));
        let rotations = tokio::spawn(super::gossip_keys::watch(
            raft.clone(),
            state.clone(),
            mem.clone(),
        ));
        let ca_rotations = tokio::spawn(super::ca_rotation::watch(raft.clone(), state.clone()));
        let leader_changes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = leader_changes.clone();
        let mut rx = raft.metrics();
        let leaders = tokio::spawn(async move {
            let mut last = rx.borrow().current_leader;
            while rx.changed().await.is_ok() {
                let now = rx.borrow().current_leader;
                if now.is_some() && now != last {
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                if now.is_some() {
                    last = now;
                }
            }
        });
        Ok(Self {
            id,
            node_id: node_id.to_string(),
            addr,
            raft,
            state,
            tls,
            mem,
            leader_changes,
            tasks: vec![server, watch, rotations, ca_rotations, leaders],
        })
    }

    /// Makes this manager the first member of a new cluster.
    pub async fn initialize(&self) -> Result<()> {
        let members: BTreeMap<RaftId, BasicNode> = [(self.id, BasicNode::new(&self.addr))].into();
        self.raft
            .initialize(members)
            .await
            .map_err(|e| anyhow!("initialise raft: {e}"))
    }

    /// Applies a command through the log, on the leader wherever it is.
    pub async fn write(&self, cmd: Command) -> Result<CommandResult> {
        Ok(self.leader_op(LeaderOp::Write { cmd }).await?.result)
    }

    /// Runs `op` on the leader: here if this manager leads, else forwarded
    /// over the control port. Waits (up to `OP_TIMEOUT`) through elections;
    /// a manager cut off from the majority gets a clear refusal.
    pub async fn leader_op(&self, op: LeaderOp) -> Result<LeaderReply> {
        let deadline = Instant::now() + OP_TIMEOUT;
        let mut last = String::from("no leader elected");
        loop {
            let (leader, addr) = {
                let m = self.raft.metrics().borrow().clone();
                // A leader that removed itself from the membership (openraft
                // 0.9 lets it linger) leads nobody: refuse at once.
                if m.current_leader == Some(self.id)
                    && !m
                        .membership_config
                        .membership()
                        .voter_ids()
                        .any(|v| v == self.id)
                {
                    return Err(WireError::unavailable(
                        "this manager was removed from Raft's membership",
                    )
                    .into());
                }
                let addr = m.current_leader.and_then(|l| {
                    m.membership_config
                        .membership()
                        .get_node(&l)
                        .map(|n| n.addr.clone())
                });
                (m.current_leader, addr)
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let outcome = match (leader, addr) {
                (Some(l), _) if l == self.id => {
                    execute(&self.raft, &self.state, &self.mem, op.clone(), left).await
                }
                (Some(_), Some(addr)) => {
                    match call::<_, Result<LeaderReply, OpError>>(
                        &self.tls.client(),
                        &addr,
                        "/raft/leader",
                        &op,
                        left,
                    )
                    .await
                    {
                        Ok(r) => {
                            if let Ok(reply) = &r {
                                self.wait_applied(reply.index).await;
                            }
                            r
                        }
                        // Unreachable: the leader may have just died; wait
                        // for the next one.
                        Err(f) if f.connect => Err(OpError::NotLeader),
                        Err(f) => Err(OpError::Failed({
                            let mut e = f.into_wire();
                            e.message = format!("leader {addr}: {}", e.message);
                            e
                        })),
                    }
                }
                _ => Err(OpError::NotLeader),
            };
            match outcome {
                Ok(r) => return Ok(r),
                Err(OpError::Failed(e)) => return Err(e.into()),
                Err(OpError::NotLeader) => {
                    if let Some(l) = leader {
                        last = format!("leader {l} unreachable");
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(WireError::unavailable(format!(
                    "no reachable leader within {} s ({last}): is a majority of managers up and connected?",
                    OP_TIMEOUT.as_secs()
                ))
                .into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (briefly) until this manager has applied log `index`.
    async fn wait_applied(&self, index: u64) {
        let t0 = Instant::now();
        let mut rx = self.raft.metrics();
        while rx
            .borrow()
            .last_applied
            .map(|l| l.index)
            .unwrap_or_default()
            < index
            && t0.elapsed() < Duration::from_secs(2)
        {
            let _ = tokio::time::timeout(Duration::from_millis(100), rx.changed()).await;
        }
    }

    /// The applied state (may lag the leader by what is not yet applied).
    /// Notified when liveness changes a node's state.
    pub fn nodes_changed(&self) -> Arc<tokio::sync::Notify> {
        self.mem.nodes_changed.clone()
    }

    pub fn state(&self) -> ClusterState {
        self.state.read().expect("state lock").clone()
    }

    /// The index of the last log entry applied to the state (0: none).
    pub fn applied(&self) -> u64 {
        self.raft
            .metrics()
            .borrow()
            .last_applied
            .map_or(0, |l| l.index)
    }

    /// Leading, and a voter of its own membership.
    pub fn is_leading(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        m.current_leader == Some(self.id)
            && m.membership_config
                .membership()
                .voter_ids()
                .any(|v| v == self.id)
    }

    pub fn leader(&self) -> Option<RaftId> {
        self.raft.metrics().borrow().current_leader
    }

    /// Raft ids of the voters in the current membership.
    pub fn voters(&self) -> BTreeSet<RaftId> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    pub fn raft_metrics(&self) -> RaftMetricsView {
        let m = self.raft.metrics().borrow().clone();
        let last = m.last_log_index.unwrap_or_default();
        let applied = m.last_applied.map(|l| l.index).unwrap_or_default();
        RaftMetricsView {
            term: m.current_term,
            is_leader: m.current_leader == Some(self.id),
            commit_lag: last.saturating_sub(applied),
            leader_changes: self
                .leader_changes
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// What `shoal debug raft` shows.
    /// `debug raft`'s JSON. Kept while the local API's handler
    /// (`agent/swarm/nodes.rs`) still answers a `Value`; it should answer
    /// `debug_report()` itself.
    /// What `shoal debug raft` shows.
    pub fn debug_report(&self) -> RaftDebug {
        let m = self.raft.metrics().borrow().clone();
        let mem = m.membership_config.membership();
        let nodes: BTreeMap<String, String> = mem
            .nodes()
            .map(|(id, n)| (id.to_string(), n.addr.clone()))
            .collect();
        let voters: Vec<RaftId> = mem.voter_ids().collect();
        let learners: Vec<RaftId> = mem.learner_ids().collect();
        // The committed index, from the leader's view of its followers:
        // the highest index a majority of voters holds.
        let committed = m.replication.as_ref().map(|rep| {
            let mut matched: Vec<u64> = voters
                .iter()
                .map(|v| {
                    if *v == self.id {
                        m.last_log_index.unwrap_or_default()
                    } else {
                        rep.get(v)
                            .and_then(|l| l.as_ref().map(|l| l.index))
                            .unwrap_or_default()
                    }
                })
                .collect();
            matched.sort_unstable();
            matched[(matched.len() - 1) / 2]
        });
        let st = self.state.read().expect("state lock");
        RaftDebug {
            id: self.id,
            node_id: self.node_id.clone(),
            state: format!("{:?}", m.state),
            term: m.current_term,
            leader: m.current_leader,
            voters,
            learners,
            nodes,
            last_log_index: m.last_log_index,
            committed,
            applied: m.last_applied.map(|l| l.index),
            snapshot: m.snapshot.map(|l| l.index),
            purged: m.purged.map(|l| l.index),
            log_entries: m
                .last_log_index
                .map(|l| l - m.purged.map(|p| p.index).unwrap_or(0)),
            millis_since_quorum_ack: m.millis_since_quorum_ack,
            records: st.nodes.len(),
        }
    }

    pub async fn shutdown(&self) -> Result<()> {
        for t in &self.tasks {
            t.abort();
        }
        self.raft.shutdown().await.context("raft shutdown")?;
        Ok(())
    }
}

/// Whether a node at `ip` is a voter or learner in `raft`'s membership
/// (the latest in its log, committed or not).
fn raft_member(raft: &Raft<TypeConfig>, ip: std::net::Ipv4Addr) -> bool {
    let m = raft.metrics().borrow().membership_config.clone();
    // Bound to a name so the iterator's borrow of `m` ends before `m`.
    let member = m.membership().nodes().any(|(_, n)| {
        n.addr
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.ip() == std::net::IpAddr::V4(ip))
    });
    member
}

/// Runs `op` on the leader from a node without a Raft member of its own
/// (a joining or promoted manager): asks each address until the leader
/// answers.
pub async fn to_leader(
    tls: &Arc<ClientConfig>,
    addrs: &[String],
    op: &LeaderOp,
) -> Result<LeaderReply> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::from("no managers known");
    loop {
        for a in addrs {
            match call::<_, Result<LeaderReply, OpError>>(
                tls,
                a,
                "/raft/leader",
                op,
                Duration::from_secs(25),
            )
            .await
            {
                Ok(Ok(r)) => return Ok(r),
                Ok(Err(OpError::NotLeader)) => last = format!("{a} is not the leader"),
                Ok(Err(OpError::Failed(e))) => return Err(e.into()),
                Err(f) => last = f.msg,
            }
        }
        if Instant::now() >= deadline {
            return Err(
                WireError::unavailable(format!("no leader among {addrs:?}: {last}")).into(),
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests;

//! One manager: a Raft instance over the redb store, serving the Raft RPCs
//! of its peers, and applying cluster commands through the log.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use anyhow::{anyhow, Context, Result};
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{BasicNode, Config, Raft, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::network::Network;
use super::state::{ClusterState, Command, CommandResult, RaftId};
use super::store::{self, LogStore, StateMachine};
use super::TypeConfig;

pub struct Manager {
    pub id: RaftId,
    pub addr: String,
    pub raft: Raft<TypeConfig>,
    state: Arc<RwLock<ClusterState>>,
    server: JoinHandle<()>,
}

/// Raft timing for managers on one LAN: heartbeats are also the deadline
/// of every append RPC, so they leave room for a fsync on the follower.
fn config() -> Result<Config> {
    Ok(Config {
        cluster_name: "shoal".into(),
        heartbeat_interval: 250,
        election_timeout_min: 1000,
        election_timeout_max: 2000,
        install_snapshot_timeout: 10_000,
        snapshot_max_chunk_size: 512 * 1024,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(1000),
        max_in_snapshot_log_to_keep: 100,
        ..Default::default()
    }
    .validate()?)
}

impl Manager {
    /// Opens (or creates) the store under `data_dir` and serves Raft RPCs on
    /// `listener`.
    pub async fn start(
        id: RaftId,
        listener: TcpListener,
        data_dir: &Path,
        extra: Router,
    ) -> Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        let db =
            store::open(&data_dir.join("raft.redb")).map_err(|e| anyhow!("raft store: {e}"))?;
        let sm = StateMachine::open(db.clone()).map_err(|e| anyhow!("raft state: {e}"))?;
        let state = sm.state();
        let raft = Raft::new(id, Arc::new(config()?), Network, LogStore::new(db), sm)
            .await
            .map_err(|e| anyhow!("raft: {e}"))?;
        let addr = listener.local_addr()?.to_string();
        let app = Router::new()
            .route("/raft/append", post(append))
            .route("/raft/vote", post(vote))
            .route("/raft/snapshot", post(snapshot))
            .with_state(raft.clone())
            .merge(extra);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            id,
            addr,
            raft,
            state,
            server,
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

    /// Adds a manager as a voter (learner first, then membership change).
    pub async fn add_voter(&self, id: RaftId, addr: &str) -> Result<()> {
        self.raft
            .add_learner(id, BasicNode::new(addr), true)
            .await
            .map_err(|e| anyhow!("add learner {id}: {e}"))?;
        let mut voters: std::collections::BTreeSet<RaftId> = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        voters.insert(id);
        self.raft
            .change_membership(voters, false)
            .await
            .map_err(|e| anyhow!("add voter {id}: {e}"))?;
        Ok(())
    }

    /// Applies a command through the log. On a follower the error names
    /// the leader, which the API layer forwards to.
    pub async fn write(&self, cmd: Command) -> Result<CommandResult> {
        match self.raft.client_write(cmd).await {
            Ok(r) => Ok(r.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(anyhow!(
                "not the leader; the leader is {}",
                f.leader_node
                    .map(|n| n.addr)
                    .unwrap_or_else(|| "unknown (election in progress)".into())
            )),
            Err(e) => Err(anyhow!("raft write: {e}")),
        }
    }

    /// The applied state (may lag the leader by what is not yet applied).
    pub fn state(&self) -> ClusterState {
        self.state.read().expect("state lock").clone()
    }

    pub fn leader(&self) -> Option<RaftId> {
        self.raft.metrics().borrow().current_leader
    }

    pub async fn shutdown(self) -> Result<()> {
        self.raft.shutdown().await.context("raft shutdown")?;
        self.server.abort();
        Ok(())
    }
}

type R = Raft<TypeConfig>;

async fn append(
    State(raft): State<R>,
    Json(req): Json<AppendEntriesRequest<TypeConfig>>,
) -> Json<serde_json::Value> {
    Json(serde_json::to_value(raft.append_entries(req).await).unwrap_or_default())
}

async fn vote(
    State(raft): State<R>,
    Json(req): Json<VoteRequest<RaftId>>,
) -> Json<serde_json::Value> {
    Json(serde_json::to_value(raft.vote(req).await).unwrap_or_default())
}

async fn snapshot(
    State(raft): State<R>,
    Json(req): Json<InstallSnapshotRequest<TypeConfig>>,
) -> Json<serde_json::Value> {
    Json(serde_json::to_value(raft.install_snapshot(req).await).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::state::{Availability, NodeRecord, NodeState, Role};
    use super::*;

    fn node(id: &str, last: u8) -> Command {
        Command::NodeAdd {
            node: NodeRecord {
                id: id.into(),
                raft_id: None,
                hostname: id.into(),
                addr: std::net::Ipv4Addr::new(198, 18, 0, last),
                role: Role::Worker,
                availability: Availability::Active,
                labels: Default::default(),
                state: NodeState::Ready,
                version: 0,
            },
        }
    }

    async fn until(what: &str, mut f: impl FnMut() -> bool) {
        let t0 = Instant::now();
        while !f() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Three managers on loopback: replication, leader failover, refused
    /// writes on followers, and state recovered from disk after a restart.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_managers_replicate_fail_over_and_recover() {
        let base = std::env::temp_dir().join(format!("shoal-mgr-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let mut ms = vec![];
        for id in 1..=3u64 {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            ms.push(
                Manager::start(id, l, &base.join(id.to_string()), Router::new())
                    .await
                    .unwrap(),
            );
        }
        ms[0].initialize().await.unwrap();
        until("n1 leads", || ms[0].leader() == Some(1)).await;
        let (a2, a3) = (ms[1].addr.clone(), ms[2].addr.clone());
        ms[0].add_voter(2, &a2).await.unwrap();
        ms[0].add_voter(3, &a3).await.unwrap();
        assert!(matches!(
            ms[0].write(node("a", 1)).await.unwrap(),
            CommandResult::Node(_)
        ));
        until("replicated", || {
            ms.iter().all(|m| m.state().nodes.contains_key("a"))
        })
        .await;
        // A refused command is a result, not a failure of Raft.
        assert!(matches!(
            ms[0].write(node("a", 9)).await.unwrap(),
            CommandResult::Error(_)
        ));
        // Followers refuse writes and name the leader.
        let e = ms[1].write(node("b", 2)).await.unwrap_err().to_string();
        assert!(
            e.contains("not the leader") && e.contains(&ms[0].addr),
            "{e}"
        );

        // The leader goes away: the others elect a new one and keep working.
        let old = ms.remove(0);
        let old_dir = base.join("1");
        old.shutdown().await.unwrap();
        until("new leader", || {
            ms[0].leader().is_some_and(|l| l != 1) && ms[0].leader() == ms[1].leader()
        })
        .await;
        let leader = ms.iter().find(|m| Some(m.id) == m.leader()).unwrap();
        assert!(matches!(
            leader.write(node("b", 2)).await.unwrap(),
            CommandResult::Node(_)
        ));
        until("b everywhere", || {
            ms.iter().all(|m| m.state().nodes.contains_key("b"))
        })
        .await;

        // The old leader's state survives on its disk.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let back = Manager::start(1, l, &old_dir, Router::new()).await.unwrap();
        assert!(
            back.state().nodes.contains_key("a"),
            "state recovered from disk"
        );
        for m in ms {
            m.shutdown().await.unwrap();
        }
        back.shutdown().await.unwrap();
        let _ = std::fs::remove_dir_all(&base);
    }
}

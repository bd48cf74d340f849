//! What the leader does with a `LeaderOp` (run locally, or received from a
//! follower on `/raft/leader`): commit a command, change the voters, or
//! answer a node's heartbeat (liveness, task reports, assignments).

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Raft};

use super::gossip_keys::KeyMemory;
use super::liveness::Liveness;
use super::manager::OP_TIMEOUT;
use super::state::ClusterState;
use super::TypeConfig;
use crate::asks::{FlowDesk, LogDesk};
use crate::wire::TaskReport;
use crate::wire::{Command, RaftId};
use crate::wire::{LeaderOp, LeaderReply, OpError, SessionReply, WireError};

/// What the leader keeps in memory, not in the log: last heartbeats, log
/// and flow asks in flight.
#[derive(Default)]
pub struct LeaderMemory {
    pub live: Liveness,
    /// Nodes' gossip keys (`gossip_keys.rs`).
    pub keys: KeyMemory,
    pub logs: LogDesk,
    pub flows: FlowDesk,
    /// Liveness changed a node's state: the orchestrator plans at once
    /// rather than at its next pass (a down node's tasks move sooner).
    pub nodes_changed: Arc<tokio::sync::Notify>,
}

/// Runs `op` on this manager, which believes it leads.
pub async fn execute(
    raft: &Raft<TypeConfig>,
    state: &Arc<RwLock<ClusterState>>,
    mem: &LeaderMemory,
    op: LeaderOp,
    left: Duration,
) -> Result<LeaderReply, OpError> {
    let failed =
        |what: &str, e: String| OpError::Failed(WireError::internal(format!("{what}: {e}")));
    let no_quorum = || {
        OpError::Failed(WireError::unavailable(format!(
            "not committed within {} s: this manager cannot reach a majority of managers",
            OP_TIMEOUT.as_secs()
        )))
    };
    match op {
        LeaderOp::Write { cmd } => match tokio::time::timeout(left, raft.client_write(cmd)).await {
            Ok(Ok(r)) => Ok(LeaderReply {
                result: r.data,
                index: r.log_id.index,
                ..Default::default()
            }),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                Err(OpError::NotLeader)
            }
            Ok(Err(e)) => Err(failed("raft write", e.to_string())),
            Err(_) => Err(no_quorum()),
        },
        LeaderOp::AddVoter { raft_id, addr } => {
            let add = async {
                raft.add_learner(raft_id, BasicNode::new(&addr), true)
                    .await
                    .map_err(|e| failed("add learner", e.to_string()))?;
                let mut voters: BTreeSet<RaftId> = raft
                    .metrics()
                    .borrow()
                    .membership_config
                    .membership()
                    .voter_ids()
                    .collect();
                voters.insert(raft_id);
                raft.change_membership(voters, false)
                    .await
                    .map_err(|e| failed("add voter", e.to_string()))
            };
            match tokio::time::timeout(left.max(Duration::from_secs(20)), add).await {
                Ok(Ok(r)) => Ok(LeaderReply {
                    index: r.log_id.index,
                    ..Default::default()
                }),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(no_quorum()),
            }
        }
        LeaderOp::RemoveVoter { raft_id } => {
            let mem = raft.metrics().borrow().membership_config.clone();
            let mut voters: BTreeSet<RaftId> = mem.membership().voter_ids().collect();
            if !voters.remove(&raft_id) && mem.membership().get_node(&raft_id).is_none() {
                return Ok(LeaderReply::default());
            }
            if voters.is_empty() {
                return Err(OpError::Failed(WireError::conflict(
                    "cannot remove the last manager of the swarm",
                )));
            }
            match tokio::time::timeout(left, raft.change_membership(voters, false)).await {
                Ok(Ok(r)) => Ok(LeaderReply {
                    index: r.log_id.index,
                    ..Default::default()
                }),
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                    Err(OpError::NotLeader)
                }
                Ok(Err(e)) => Err(failed("remove voter", e.to_string())),
                Err(_) => Err(no_quorum()),
            }
        }
        LeaderOp::Heartbeat {
            node_id,
            reports,
            logs,
            flows,
            gossip_keys,
            leaving,
            restarting,
            ipsec,
            cert_not_after_ms,
            cert_issuer,
        } => {
            let m = raft.metrics().borrow().clone();
            if m.current_leader != Some(m.id) {
                return Err(OpError::NotLeader);
            }
            let node = state
                .read()
                .expect("state lock")
                .nodes
                .get(&node_id)
                .cloned();
            let Some(node) = node else {
                return Err(OpError::Failed(WireError::gone(format!(
                    "node {node_id} {}",
                    crate::wire::REMOVED
                ))));
            };
            mem.keys.report(&node_id, gossip_keys);
            if let Some(ipsec) = ipsec.filter(|i| *i != node.ipsec) {
                let cmd = Command::NodeSetIpsec {
                    id: node_id.clone(),
                    ipsec,
                };
                note(raft, cmd, left).await?;
            }
            let issuer_changed = cert_issuer.is_some() && cert_issuer != node.cert_issuer;
            if let Some(not_after_ms) =
                cert_not_after_ms.filter(|t| Some(*t) != node.cert_not_after_ms || issuer_changed)
            {
                let cmd = Command::NodeSetCertExpiry {
                    id: node_id.clone(),
                    not_after_ms,
                    issuer: cert_issuer,
                };
                note(raft, cmd, left).await?;
            }
            if leaving {
                // Down at once (no grace), and its key replaced.
                mem.live.forget(&node_id);
                mem.keys.rotate_now();
                let cmd = Command::NodeSetState {
                    id: node_id.clone(),
                    state: crate::wire::NodeState::Down,
                };
                note(raft, cmd, left).await?;
            } else if restarting {
                tracing::info!(node = %node.hostname, "node restarting: its tasks stay for the restart grace");
                mem.live.restarting(&node_id);
            } else {
                mem.live.seen(&node_id);
            }
            mem.logs.answer(logs);
            let log_asks = mem.logs.take_for(&node_id);
            mem.flows.answer(flows);
            let flow_asks = mem.flows.take_for(&node_id);
            // Only reports that move a task of this node forward are written.
            let changed: Vec<TaskReport> = {
                let st = state.read().expect("state lock");
                reports
                    .into_iter()
                    .filter(|r| {
                        st.tasks.get(&r.id).is_some_and(|t| {
                            t.node_id.as_deref() == Some(node_id.as_str()) && r.state > t.state
                        })
                    })
                    .collect()
            };
            if !changed.is_empty() {
                let cmd = Command::TaskReports {
                    reports: changed,
                    now: crate::clock::now_ms(),
                };
                match tokio::time::timeout(left, raft.client_write(cmd)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                        return Err(OpError::NotLeader)
                    }
                    Ok(Err(e)) => return Err(failed("task reports", e.to_string())),
                    Err(_) => return Err(no_quorum()),
                }
            }
            let (assignments, data_path_port, mesh, (gossip_keys, gossip_send), cluster, hint) = {
                let st = state.read().expect("state lock");
                let port = st.cluster.as_ref().map_or(4789, |c| c.data_path_port);
                (
                    st.assignments(&node_id),
                    port,
                    st.mesh_config(&node_id),
                    mem.keys.for_session(&st),
                    st.cluster.clone(),
                    st.gossip_hint(&node_id),
                )
            };
            let attachments = state
                .read()
                .expect("state lock")
                .attachments_of(&node_id)
                .into_iter()
                .cloned()
                .collect();
            let cert_expiry_ms = cluster.as_ref().map(|c| c.cert_expiry_ms);
            let ca_pem = cluster.as_ref().map(|c| c.trust_bundle());
            let signing_ca = cluster
                .as_ref()
                .and_then(|c| crate::pki::subject_of_pem(c.signing_ca().0).ok());
            let mem = m.membership_config.membership();
            let managers = mem
                .voter_ids()
                .filter_map(|v| mem.get_node(&v).map(|n| n.addr.clone()))
                .collect();
            let leader = mem
                .get_node(&m.id)
                .map(|n| n.addr.clone())
                .unwrap_or_default();
            Ok(LeaderReply {
                session: Some(SessionReply {
                    node,
                    managers,
                    leader,
                    gossip_hint: hint,
                    assignments,
                    log_asks,
                    flow_asks,
                    data_path_port,
                    mesh,
                    gossip_keys,
                    gossip_send,
                    cert_expiry_ms,
                    ca_pem,
                    signing_ca,
                    attachments,
                }),
                ..Default::default()
            })
        }
        LeaderOp::LogAsk { asks } => Ok(LeaderReply {
            log_id: mem.logs.ask(asks),
            ..Default::default()
        }),
        LeaderOp::LogCollect { id } => Ok(LeaderReply {
            logs: mem.logs.collect(id),
            ..Default::default()
        }),
        LeaderOp::FlowAsk { asks } => Ok(LeaderReply {
            log_id: mem.flows.ask(asks),
            ..Default::default()
        }),
        LeaderOp::FlowCollect { id } => Ok(LeaderReply {
            flows: mem.flows.collect(id),
            ..Default::default()
        }),
    }
}

/// Writes a heartbeat's side note (a node's IPsec support, its certificate
/// expiry, its goodbye): only losing the leadership matters to the caller
/// (the node asks again); any other failure is retried at the next beat.
async fn note(raft: &Raft<TypeConfig>, cmd: Command, left: Duration) -> Result<(), OpError> {
    match tokio::time::timeout(left, raft.client_write(cmd)).await {
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
            Err(OpError::NotLeader)
        }
        _ => Ok(()),
    }
}

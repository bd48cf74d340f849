//! The node commands on a manager: `node ls|inspect|update|rm|promote|
//! demote`, `swarm join-token`, `debug raft`. Reads come from this
//! manager's applied state; changes go through the leader.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;

use super::join::expect_ok;
use super::new_raft_id;
use crate::agent::Agent;
use crate::pki::{ClusterCa, JoinToken};
use crate::raft::manager::Manager;
use crate::wire::LeaderOp;
use crate::wire::{Availability, Command, NodeRecord, NodeState, RaftId, Role};
use crate::wire::{JoinTokenReply, NodeView};
use crate::wire::{
    ManagerStatusView, NodeDescription, NodeInspect, NodeSpecView, NodeStatusView, RaftDebug,
    Version,
};

fn state_word(s: NodeState) -> &'static str {
    match s {
        NodeState::Ready => "Ready",
        NodeState::Down => "Down",
        NodeState::Unknown => "Unknown",
    }
}

fn availability_word(a: Availability) -> &'static str {
    match a {
        Availability::Active => "Active",
        Availability::Pause => "Pause",
        Availability::Drain => "Drain",
    }
}

/// Docker's MANAGER STATUS: Leader, Reachable (a live voter), Unreachable
/// (a manager that is down or not, or no longer, in Raft's membership).
fn manager_status(n: &NodeRecord, leader: Option<RaftId>, voters: &BTreeSet<RaftId>) -> String {
    match (n.role, n.raft_id) {
        (Role::Worker, _) => String::new(),
        (Role::Manager, Some(r)) if Some(r) == leader => "Leader".into(),
        (Role::Manager, Some(r)) if voters.contains(&r) && n.state == NodeState::Ready => {
            "Reachable".into()
        }
        (Role::Manager, _) => "Unreachable".into(),
    }
}

impl Agent {
    pub async fn join_token(&self, role: Role, rotate: bool) -> Result<JoinTokenReply> {
        let (m, ms) = self.manager().await?;
        let Some(cluster) = m.state().cluster else {
            crate::fail!(Unavailable, "the swarm is not initialised yet");
        };
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
            control_addr: ms.control_addr.to_string(),
        })
    }

    pub async fn nodes(&self) -> Result<Vec<NodeView>> {
        let (m, ms) = self.manager().await?;
        let (leader, voters) = (m.leader(), m.voters());
        let mut out: Vec<NodeView> = m
            .state()
            .nodes
            .values()
            .map(|n| NodeView {
                id: n.id.clone(),
                hostname: n.hostname.clone(),
                status: state_word(n.state).into(),
                availability: availability_word(n.availability).into(),
                manager_status: manager_status(n, leader, &voters),
                is_self: n.id == ms.node_id,
                addr: n.addr,
            })
            .collect();
        out.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        Ok(out)
    }

    /// Finds a node by exact id or hostname, then by unique id prefix (as
    /// Docker does).
    fn find_node(m: &Manager, key: &str) -> Result<NodeRecord> {
        let st = m.state();
        if let Some(n) = st.nodes.values().find(|n| n.id == key || n.hostname == key) {
            return Ok(n.clone());
        }
        let hits: Vec<&NodeRecord> = st
            .nodes
            .values()
            .filter(|n| !key.is_empty() && n.id.starts_with(key))
            .collect();
        match hits.as_slice() {
            [n] => Ok((*n).clone()),
            [] => crate::fail!(NotFound, "no such node: {key}"),
            _ => crate::fail!(
                Invalid,
                "node {key} is ambiguous (matches {} nodes)",
                hits.len()
            ),
        }
    }

    pub async fn node_inspect(&self, key: &str) -> Result<NodeInspect> {
        let (m, _) = self.manager().await?;
        let n = Self::find_node(&m, key)?;
        let (leader, voters) = (m.leader(), m.voters());
        let manager_status = (n.role == Role::Manager).then(|| ManagerStatusView {
            leader: n.raft_id.is_some() && n.raft_id == leader,
            reachability: manager_status(&n, leader, &voters)
                .to_lowercase()
                .replace("leader", "reachable"),
            addr: format!("{}:{}", n.addr, self.control_port),
        });
        Ok(NodeInspect {
            id: n.id.clone(),
            version: Version { index: n.version },
            spec: NodeSpecView {
                labels: n.labels.clone(),
                role: n.role,
                availability: n.availability,
            },
            description: NodeDescription {
                hostname: n.hostname.clone(),
                tls_info: crate::wire::TlsInfoView {
                    cert_not_after: n.cert_not_after_ms.map(crate::clock::rfc3339),
                },
            },
            status: NodeStatusView {
                state: n.state,
                addr: n.addr,
            },
            manager_status,
        })
    }

    /// Availability and labels, through the Raft log (on the leader).
    pub async fn node_update(
        &self,
        key: &str,
        availability: Option<Availability>,
        labels_add: BTreeMap<String, String>,
        labels_rm: Vec<String>,
    ) -> Result<String> {
        let (m, _) = self.manager().await?;
        let n = Self::find_node(&m, key)?;
        for k in labels_add.keys().chain(labels_rm.iter()) {
            if k.is_empty() || k.chars().any(|c| c.is_whitespace() || c.is_control()) {
                crate::fail!(Invalid, "bad label key {k:?}");
            }
        }
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

    /// Removes a node: managers must be demoted first, and a node that is
    /// still up only with `force` (as Docker). A removed node that is still
    /// running learns it at its next heartbeat and leaves.
    pub async fn node_rm(&self, key: &str, force: bool) -> Result<String> {
        let (m, _) = self.manager().await?;
        let n = Self::find_node(&m, key)?;
        if n.role == Role::Manager {
            crate::fail!(
                Conflict,
                "node {} is a manager; demote it before removing it",
                n.hostname
            );
        }
        if n.state == NodeState::Ready && !force {
            crate::fail!(
                Conflict,
                "node {} is not down and can't be removed (use --force)",
                n.hostname
            );
        }
        let rm = Command::NodeRemove {
            id: n.id.clone(),
            now: crate::clock::now_ms(),
        };
        expect_ok(m.write(rm).await?)?;
        Ok(n.id)
    }

    /// Makes a worker a manager: the record gets a Raft id; the node sees
    /// it at its next heartbeat and joins Raft as a voter.
    pub async fn node_promote(&self, key: &str) -> Result<String> {
        let (m, _) = self.manager().await?;
        let n = Self::find_node(&m, key)?;
        if n.role == Role::Manager {
            crate::fail!(Conflict, "node {} is already a manager", n.hostname);
        }
        let cmd = Command::NodeSetRole {
            id: n.id.clone(),
            role: Role::Manager,
            raft_id: Some(new_raft_id()),
        };
        expect_ok(m.write(cmd).await?)?;
        Ok(n.hostname)
    }

    /// Makes a manager a worker: out of Raft's membership first (so the
    /// quorum shrinks before its rights go), then the record.
    pub async fn node_demote(&self, key: &str) -> Result<String> {
        let (m, _) = self.manager().await?;
        let n = Self::find_node(&m, key)?;
        if n.role == Role::Worker {
            crate::fail!(Conflict, "node {} is already a worker", n.hostname);
        }
        let managers = m
            .state()
            .nodes
            .values()
            .filter(|n| n.role == Role::Manager)
            .count();
        if managers <= 1 {
            crate::fail!(Conflict, "cannot demote the last manager of the swarm");
        }
        if let Some(raft_id) = n.raft_id {
            m.leader_op(LeaderOp::RemoveVoter { raft_id }).await?;
        }
        let cmd = Command::NodeSetRole {
            id: n.id.clone(),
            role: Role::Worker,
            raft_id: None,
        };
        expect_ok(m.write(cmd).await?)?;
        Ok(n.hostname)
    }

    /// `shoal debug raft`.
    pub async fn raft_debug(&self) -> Result<RaftDebug> {
        let (m, _) = self.manager().await?;
        Ok(m.debug_report())
    }
}

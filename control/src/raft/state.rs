//! The cluster's desired state, as the Raft log builds it: typed records,
//! each stored under its own key (`node/ID`, later `network/ID`,
//! `service/ID`, `task/ID`), so applying a command writes only what changed.
//!
//! `ClusterState::apply` is pure (no IO): the state machine persists the
//! changes it returns. Application errors (unknown node, ...) are results,
//! not storage errors: a refused command must not stop Raft.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// Raft's own id for a manager.
pub type RaftId = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Manager,
    Worker,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    Active,
    Pause,
    Drain,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Unknown,
    Ready,
    Down,
}

/// A node of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Swarm node id (25 lowercase alphanumerics, like Docker's).
    pub id: String,
    /// Raft id, for managers.
    pub raft_id: Option<RaftId>,
    pub hostname: String,
    pub addr: Ipv4Addr,
    pub role: Role,
    pub availability: Availability,
    pub labels: BTreeMap<String, String>,
    pub state: NodeState,
    /// Raft log index that last changed this record.
    pub version: u64,
}

/// Cluster-wide settings and secrets, created by `swarm init`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub cluster_id: String,
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub worker_token: String,
    pub manager_token: String,
}

/// A change to the desired state. Tagged, so new commands can be added
/// without breaking old log entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    ClusterInit {
        info: ClusterInfo,
    },
    TokenRotate {
        role: Role,
        token: String,
    },
    NodeAdd {
        node: NodeRecord,
    },
    NodeUpdate {
        id: String,
        role: Option<Role>,
        availability: Option<Availability>,
        #[serde(default)]
        labels_add: BTreeMap<String, String>,
        #[serde(default)]
        labels_rm: Vec<String>,
    },
    NodeSetState {
        id: String,
        state: NodeState,
    },
    /// Promotion (with the Raft id the node will run) or demotion.
    NodeSetRole {
        id: String,
        role: Role,
        raft_id: Option<RaftId>,
    },
    NodeRemove {
        id: String,
    },
}

/// What applying a command gave.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandResult {
    #[default]
    Ok,
    Node(NodeRecord),
    Error(String),
}

/// A persisted change: put a record's JSON under a key, or delete the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Put(String, Vec<u8>),
    Delete(String),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    pub cluster: Option<ClusterInfo>,
    pub nodes: BTreeMap<String, NodeRecord>,
}

fn node_key(id: &str) -> String {
    format!("node/{id}")
}

impl ClusterState {
    /// Rebuilds the state from its stored rows (key -> JSON).
    pub fn from_rows<'a>(
        rows: impl Iterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Self, serde_json::Error> {
        let mut st = ClusterState::default();
        for (k, v) in rows {
            if k == "cluster" {
                st.cluster = Some(serde_json::from_slice(v)?);
            } else if let Some(id) = k.strip_prefix("node/") {
                st.nodes.insert(id.to_string(), serde_json::from_slice(v)?);
            }
        }
        Ok(st)
    }

    /// Every row of the state (the store keeps them in redb; this is the
    /// same set, for tests).
    #[cfg(test)]
    pub fn rows(&self) -> Vec<(String, Vec<u8>)> {
        let cluster = self.cluster.iter().map(|c| {
            (
                "cluster".to_string(),
                serde_json::to_vec(c).expect("records serialise"),
            )
        });
        let nodes = self.nodes.values().map(|n| {
            (
                node_key(&n.id),
                serde_json::to_vec(n).expect("records serialise"),
            )
        });
        cluster.chain(nodes).collect()
    }

    /// Applies a command committed at log `index`.
    pub fn apply(&mut self, index: u64, cmd: Command) -> (CommandResult, Vec<Change>) {
        match cmd {
            Command::ClusterInit { info } => {
                if self.cluster.is_some() {
                    return err("the cluster is already initialised".into());
                }
                self.cluster = Some(info.clone());
                (
                    CommandResult::Ok,
                    vec![Change::Put(
                        "cluster".into(),
                        serde_json::to_vec(&info).expect("serialise"),
                    )],
                )
            }
            Command::TokenRotate { role, token } => {
                let Some(mut c) = self.cluster.clone() else {
                    return err("the cluster is not initialised".into());
                };
                match role {
                    Role::Worker => c.worker_token = token,
                    Role::Manager => c.manager_token = token,
                }
                self.cluster = Some(c.clone());
                (
                    CommandResult::Ok,
                    vec![Change::Put(
                        "cluster".into(),
                        serde_json::to_vec(&c).expect("serialise"),
                    )],
                )
            }
            Command::NodeAdd { mut node } => {
                if self.nodes.contains_key(&node.id) {
                    return err(format!("node {} already exists", node.id));
                }
                if let Some(other) = self.nodes.values().find(|n| n.addr == node.addr) {
                    return err(format!(
                        "address {} is already used by node {} ({})",
                        node.addr, other.hostname, other.id
                    ));
                }
                node.version = index;
                self.put(node)
            }
            Command::NodeUpdate {
                id,
                role,
                availability,
                labels_add,
                labels_rm,
            } => {
                let Some(mut node) = self.nodes.get(&id).cloned() else {
                    return err(format!("no such node: {id}"));
                };
                if let Some(r) = role {
                    node.role = r;
                }
                if let Some(a) = availability {
                    node.availability = a;
                }
                for k in labels_rm {
                    node.labels.remove(&k);
                }
                node.labels.extend(labels_add);
                node.version = index;
                self.put(node)
            }
            Command::NodeSetState { id, state } => {
                let Some(mut node) = self.nodes.get(&id).cloned() else {
                    return err(format!("no such node: {id}"));
                };
                node.state = state;
                node.version = index;
                self.put(node)
            }
            Command::NodeSetRole { id, role, raft_id } => {
                let Some(mut node) = self.nodes.get(&id).cloned() else {
                    return err(format!("no such node: {id}"));
                };
                if role == Role::Worker
                    && node.role == Role::Manager
                    && self
                        .nodes
                        .values()
                        .filter(|n| n.role == Role::Manager)
                        .count()
                        == 1
                {
                    return err("cannot demote the last manager of the swarm".into());
                }
                node.role = role;
                node.raft_id = raft_id;
                node.version = index;
                self.put(node)
            }
            Command::NodeRemove { id } => match self.nodes.remove(&id) {
                Some(n) => (CommandResult::Node(n), vec![Change::Delete(node_key(&id))]),
                None => err(format!("no such node: {id}")),
            },
        }
    }

    fn put(&mut self, node: NodeRecord) -> (CommandResult, Vec<Change>) {
        let change = Change::Put(
            node_key(&node.id),
            serde_json::to_vec(&node).expect("records serialise"),
        );
        self.nodes.insert(node.id.clone(), node.clone());
        (CommandResult::Node(node), vec![change])
    }
}

fn err(msg: String) -> (CommandResult, Vec<Change>) {
    (CommandResult::Error(msg), vec![])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, addr: [u8; 4]) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            raft_id: None,
            hostname: format!("h-{id}"),
            addr: Ipv4Addr::from(addr),
            role: Role::Worker,
            availability: Availability::Active,
            labels: BTreeMap::new(),
            state: NodeState::Ready,
            version: 0,
        }
    }

    #[test]
    fn add_update_remove_round_trip_through_rows() {
        let mut st = ClusterState::default();
        let (r, ch) = st.apply(
            3,
            Command::NodeAdd {
                node: node("a", [198, 18, 0, 1]),
            },
        );
        assert!(matches!(r, CommandResult::Node(ref n) if n.version == 3));
        assert_eq!(ch.len(), 1);
        let (r, _) = st.apply(
            4,
            Command::NodeUpdate {
                id: "a".into(),
                role: Some(Role::Manager),
                availability: Some(Availability::Drain),
                labels_add: [("zone".to_string(), "b".to_string())].into(),
                labels_rm: vec![],
            },
        );
        let CommandResult::Node(n) = r else {
            panic!("{r:?}")
        };
        assert_eq!(
            (n.role, n.availability, n.version),
            (Role::Manager, Availability::Drain, 4)
        );
        let rows = st.rows();
        let back =
            ClusterState::from_rows(rows.iter().map(|(k, v)| (k.as_str(), v.as_slice()))).unwrap();
        assert_eq!(back, st);
        let (_, ch) = st.apply(5, Command::NodeRemove { id: "a".into() });
        assert_eq!(ch, vec![Change::Delete("node/a".into())]);
        assert!(st.nodes.is_empty());
    }

    #[test]
    fn refused_commands_change_nothing() {
        let mut st = ClusterState::default();
        st.apply(
            1,
            Command::NodeAdd {
                node: node("a", [198, 18, 0, 1]),
            },
        );
        let before = st.clone();
        for cmd in [
            Command::NodeAdd {
                node: node("a", [198, 18, 0, 2]),
            },
            Command::NodeAdd {
                node: node("b", [198, 18, 0, 1]),
            },
            Command::NodeRemove { id: "zz".into() },
            Command::NodeSetState {
                id: "zz".into(),
                state: NodeState::Down,
            },
        ] {
            let (r, ch) = st.apply(2, cmd);
            assert!(matches!(r, CommandResult::Error(_)), "{r:?}");
            assert!(ch.is_empty());
        }
        assert_eq!(st, before);
    }

    #[test]
    fn commands_are_tagged_on_the_wire() {
        let j = serde_json::to_value(Command::NodeRemove { id: "x".into() }).unwrap();
        assert_eq!(j["op"], "node_remove");
        let back: Command = serde_json::from_value(j).unwrap();
        assert_eq!(back, Command::NodeRemove { id: "x".into() });
    }
}

//! The cluster's desired state, as the Raft log builds it: typed records,
//! each stored under its own key (`cluster`, `node/ID`, `network/ID`,
//! `service/ID`, `task/ID`, `lbaddr/NET/NODE`), so applying a command writes only what changed.
//! Networks, services and tasks have their types (and allocation) in
//! `networks.rs`, `services.rs`, `tasks.rs`.
//!
//! `ClusterState::apply` is pure (no IO): the state machine persists the
//! changes it returns. Application errors (unknown node, ...) are results,
//! not storage errors: a refused command must not stop Raft.

use serde::{Deserialize, Serialize};

use crate::wire::NetworkRecord;
use crate::wire::ServiceRecord;
use crate::wire::TaskRecord;
use crate::wire::WireError;
use crate::wire::{ClusterInfo, Command, CommandResult, NodeRecord, Role};

/// A Docker-style id: 25 base-36 characters.
pub fn new_id() -> String {
    use rand::Rng;
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut r = rand::rng();
    (0..25)
        .map(|_| DIGITS[r.random_range(0..36)] as char)
        .collect()
}

/// The state's tables: persistent (structurally shared) ordered maps, so a
/// clone of the whole state is O(1) and an update O(log n). The state
/// machine applies each batch to a copy, and the orchestrator plans on
/// snapshots of it every pass.
pub type Table<V> = imbl::OrdMap<String, V>;

/// A record by exact id or name, else by unique id prefix (as Docker
/// resolves names).
pub fn find_by_key<'a, T: Clone>(
    map: &'a Table<T>,
    key: &str,
    id_name: impl Fn(&T) -> (&String, &String),
) -> Option<&'a T> {
    map.values()
        .find(|r| {
            let (id, name) = id_name(r);
            id == key || name == key
        })
        .or_else(|| {
            let hits: Vec<&T> = map
                .values()
                .filter(|r| !key.is_empty() && id_name(r).0.starts_with(key))
                .collect();
            (hits.len() == 1).then(|| hits[0])
        })
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
    pub nodes: Table<NodeRecord>,
    #[serde(default)]
    pub networks: Table<NetworkRecord>,
    #[serde(default)]
    pub services: Table<ServiceRecord>,
    #[serde(default)]
    pub tasks: Table<TaskRecord>,
    /// Balancer addresses by `network_id/node_id` (`lb_addrs.rs`).
    #[serde(default)]
    pub lb_addrs: Table<crate::wire::LbAddr>,
    /// Containers on attachable networks by `Attachment::key`
    /// (`attachments.rs`).
    #[serde(default)]
    pub attachments: Table<crate::wire::Attachment>,
}

fn node_key(id: &str) -> String {
    format!("node/{id}")
}

pub(super) fn put<T: Serialize>(key: String, v: &T) -> Change {
    Change::Put(key, serde_json::to_vec(v).expect("records serialise"))
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
            } else if let Some(id) = k.strip_prefix("network/") {
                st.networks
                    .insert(id.to_string(), serde_json::from_slice(v)?);
            } else if let Some(id) = k.strip_prefix("service/") {
                st.services
                    .insert(id.to_string(), serde_json::from_slice(v)?);
            } else if let Some(id) = k.strip_prefix("task/") {
                st.tasks.insert(id.to_string(), serde_json::from_slice(v)?);
            } else if let Some(id) = k.strip_prefix("lbaddr/") {
                st.lb_addrs
                    .insert(id.to_string(), serde_json::from_slice(v)?);
            } else if let Some(id) = k.strip_prefix("attachment/") {
                st.attachments
                    .insert(id.to_string(), serde_json::from_slice(v)?);
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
        let networks = self.networks.values().map(|n| {
            (
                format!("network/{}", n.id),
                serde_json::to_vec(n).expect("records serialise"),
            )
        });
        let services = self.services.values().map(|s| {
            (
                format!("service/{}", s.id),
                serde_json::to_vec(s).expect("records serialise"),
            )
        });
        let tasks = self.tasks.values().map(|t| {
            (
                format!("task/{}", t.id),
                serde_json::to_vec(t).expect("records serialise"),
            )
        });
        let lb_addrs = self.lb_addrs.iter().map(|(k, a)| {
            (
                format!("lbaddr/{k}"),
                serde_json::to_vec(a).expect("records serialise"),
            )
        });
        let attachments = self.attachments.iter().map(|(k, a)| {
            (
                format!("attachment/{k}"),
                serde_json::to_vec(a).expect("records serialise"),
            )
        });
        cluster
            .chain(nodes)
            .chain(networks)
            .chain(services)
            .chain(tasks)
            .chain(lb_addrs)
            .chain(attachments)
            .collect()
    }

    /// Applies a command committed at log `index`.
    pub fn apply(&mut self, index: u64, cmd: Command) -> (CommandResult, Vec<Change>) {
        match cmd {
            Command::ClusterInit { info } => {
                if self.cluster.is_some() {
                    return err(WireError::conflict("the cluster is already initialised"));
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
                    return err(WireError::unavailable("the cluster is not initialised"));
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
                    return err(WireError::conflict(format!(
                        "node {} already exists",
                        node.id
                    )));
                }
                if let Some(other) = self.nodes.values().find(|n| n.addr == node.addr) {
                    return err(WireError::conflict(format!(
                        "address {} is already used by node {} ({})",
                        node.addr, other.hostname, other.id
                    )));
                }
                node.version = index;
                let id = node.id.clone();
                let (r, mut changes) = self.put(node);
                changes.extend(self.ensure_ingress_addrs(&[id]));
                (r, changes)
            }
            Command::NodeUpdate {
                id,
                role,
                availability,
                labels_add,
                labels_rm,
            } => {
                let Some(mut node) = self.nodes.get(&id).cloned() else {
                    return err(WireError::not_found(format!("no such node: {id}")));
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
                    return err(WireError::not_found(format!("no such node: {id}")));
                };
                node.state = state;
                node.version = index;
                self.put(node)
            }
            Command::NodeSetIpsec { id, ipsec } => {
                let Some(mut node) = self.nodes.get(&id).cloned() else {
                    return err(WireError::not_found(format!("no such node: {id}")));
                };
                node.ipsec = ipsec;
                node.version = index;
                self.put(node)
            }
            Command::NodeSetRole { id, role, raft_id } => {
                let Some(mut node) = self.nodes.get(&id).cloned() else {
                    return err(WireError::not_found(format!("no such node: {id}")));
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
                    return err(WireError::conflict(
                        "cannot demote the last manager of the swarm",
                    ));
                }
                node.role = role;
                node.raft_id = raft_id;
                node.version = index;
                self.put(node)
            }
            Command::NodeSetCertExpiry {
                id,
                not_after_ms,
                issuer,
            } => {
                let Some(mut node) = self.nodes.get(&id).cloned() else {
                    return err(WireError::not_found(format!("no such node: {id}")));
                };
                node.cert_not_after_ms = Some(not_after_ms);
                if issuer.is_some() {
                    node.cert_issuer = issuer;
                }
                node.version = index;
                self.put(node)
            }
            Command::CaRotate { rotation } => self.ca_rotate(rotation),
            Command::CaRotateFinish {
                worker_token,
                manager_token,
            } => self.ca_rotate_finish(worker_token, manager_token),
            Command::ClusterSetCertExpiry { ms } => {
                let Some(mut c) = self.cluster.clone() else {
                    return err(WireError::unavailable("the cluster is not initialised"));
                };
                c.cert_expiry_ms = ms;
                self.cluster = Some(c.clone());
                (CommandResult::Ok, vec![put("cluster".into(), &c)])
            }
            Command::NodeRemove { id, now } => {
                let Some(n) = self.nodes.remove(&id) else {
                    return err(WireError::not_found(format!("no such node: {id}")));
                };
                let mut changes = vec![Change::Delete(node_key(&id))];
                // Its certificates are refused from now on, expired or not.
                if let Some(mut c) = self.cluster.clone() {
                    let revoked = crate::wire::RevokedNode {
                        hostname: n.hostname.clone(),
                        at_ms: now,
                    };
                    c.revoked.insert(id.clone(), revoked);
                    self.cluster = Some(c.clone());
                    changes.push(put("cluster".into(), &c));
                }
                // Its tasks go with it (their addresses are freed).
                let gone: Vec<String> = self
                    .tasks
                    .values()
                    .filter(|t| t.node_id.as_deref() == Some(id.as_str()))
                    .map(|t| t.id.clone())
                    .collect();
                changes.extend(self.remove_tasks(&gone));
                changes.extend(self.drop_lb_addrs(|a| a.node_id == id));
                changes.extend(self.drop_attachments(|a| a.node_id == id).1);
                (CommandResult::Node(n), changes)
            }
            Command::GossipKeyRotate { key } => {
                let Some(mut c) = self.cluster.clone() else {
                    return err(WireError::unavailable("the cluster is not initialised"));
                };
                // Two leaders in a row may both try: ids only grow.
                if c.gossip_keys.first().is_some_and(|k| k.id >= key.id) {
                    return err(WireError::conflict(format!(
                        "gossip key {} is not newer than the ring's",
                        key.id
                    )));
                }
                c.gossip_keys.insert(0, key);
                c.gossip_keys.truncate(crate::wire::GOSSIP_RING);
                self.cluster = Some(c.clone());
                (CommandResult::Ok, vec![put("cluster".into(), &c)])
            }
            c @ (Command::AttachmentCreate { .. } | Command::AttachmentRemove { .. }) => {
                self.apply_attachment(index, c)
            }
            c @ (Command::NetworkCreate { .. } | Command::NetworkRemove { .. }) => {
                self.apply_network(index, c)
            }
            c @ (Command::ServiceCreate { .. }
            | Command::ServiceScale { .. }
            | Command::ServiceRemove { .. }) => self.apply_service(index, c),
            c @ (Command::ServiceUpdate { .. } | Command::ServiceUpdateStatus { .. }) => {
                self.apply_update(index, c)
            }
            c => self.apply_task(index, c),
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

/// A refused command: its error (with the kind the caller decides on) and
/// no change.
pub(super) fn err(e: WireError) -> (CommandResult, Vec<Change>) {
    (CommandResult::Error(e), vec![])
}

/// A cluster's settings with nothing secret in them, for unit tests.
#[cfg(test)]
impl ClusterInfo {
    pub fn for_tests(gossip_keys: Vec<crate::wire::GossipKey>) -> Self {
        Self {
            cluster_id: "c".into(),
            ca_cert_pem: String::new(),
            ca_key_pem: String::new(),
            worker_token: String::new(),
            manager_token: String::new(),
            pool: Default::default(),
            data_path_port: 4789,
            gossip_keys,
            gossip_key_rotation_ms: crate::wire::DEFAULT_GOSSIP_KEY_ROTATION_MS,
            cert_expiry_ms: crate::wire::DEFAULT_CERT_EXPIRY_MS,
            revoked: Default::default(),
            ca_rotation: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Availability, NodeState};
    use std::net::Ipv4Addr;

    fn node(id: &str, addr: [u8; 4]) -> NodeRecord {
        NodeRecord {
            ipsec: Default::default(),
            cert_not_after_ms: None,
            cert_issuer: None,
            id: id.into(),
            raft_id: None,
            hostname: format!("h-{id}"),
            addr: Ipv4Addr::from(addr),
            role: Role::Worker,
            availability: Availability::Active,
            labels: std::collections::BTreeMap::new(),
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
        let (_, ch) = st.apply(
            5,
            Command::NodeRemove {
                id: "a".into(),
                now: 0,
            },
        );
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
            Command::NodeRemove {
                id: "zz".into(),
                now: 0,
            },
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
        let rm = Command::NodeRemove {
            id: "x".into(),
            now: 7,
        };
        let j = serde_json::to_value(&rm).unwrap();
        assert_eq!(j["op"], "node_remove");
        let back: Command = serde_json::from_value(j).unwrap();
        assert_eq!(back, rm);
        // A log entry written before removals had a time still reads.
        let old: Command = serde_json::from_str(r#"{"op":"node_remove","id":"x"}"#).unwrap();
        assert_eq!(
            old,
            Command::NodeRemove {
                id: "x".into(),
                now: 0
            }
        );
    }

    #[test]
    fn a_removed_node_is_revoked_and_certificate_settings_apply() {
        let mut st = ClusterState::default();
        st.apply(
            1,
            Command::ClusterInit {
                info: ClusterInfo::for_tests(vec![]),
            },
        );
        st.apply(
            2,
            Command::NodeAdd {
                node: node("a", [198, 18, 0, 2]),
            },
        );
        let (r, _) = st.apply(
            3,
            Command::NodeSetCertExpiry {
                id: "a".into(),
                not_after_ms: 99,
                issuer: None,
            },
        );
        assert!(matches!(r, CommandResult::Node(n) if n.cert_not_after_ms == Some(99)));
        st.apply(4, Command::ClusterSetCertExpiry { ms: 3_600_000 });
        let (_, ch) = st.apply(
            5,
            Command::NodeRemove {
                id: "a".into(),
                now: 1234,
            },
        );
        let c = st.cluster.as_ref().unwrap();
        assert_eq!(c.cert_expiry_ms, 3_600_000);
        assert_eq!(
            c.revoked.get("a"),
            Some(&crate::wire::RevokedNode {
                hostname: "h-a".into(),
                at_ms: 1234
            })
        );
        // Persisted with the removal itself.
        assert!(ch
            .iter()
            .any(|c| matches!(c, Change::Put(k, _) if k == "cluster")));
    }
}

//! Gossip on the wire (each endpoint's record and the task's service record in it) and `shoal debug gossip`'s view.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

/// `shoal debug gossip`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GossipView {
    pub members: Vec<Member>,
    pub table: Vec<TableEntry>,
    /// Refused gossip by reason, since the daemon started.
    pub refused: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Member {
    pub node: String,
    pub generation: u64,
    pub gossip_addr: SocketAddr,
    pub vtep: Option<Ipv4Addr>,
    pub heartbeat: u64,
    /// Milliseconds since this node last heard a newer heartbeat.
    pub heartbeat_age_ms: Option<u64>,
    pub live: bool,
    pub is_self: bool,
    pub endpoints: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TableEntry {
    pub node: String,
    pub vni: u32,
    pub ip: Ipv4Addr,
    pub mac: String,
    pub vtep: Ipv4Addr,
    /// In this node's dataplane (remote entries of joined networks).
    pub programmed: bool,
    /// Why it was refused, if it was.
    pub refused: Option<String>,
    /// The task's service record, for a task endpoint.
    #[serde(default)]
    pub svc: Option<SvcRecord>,
    /// When its node created the endpoint (ms since the epoch; 0 for a
    /// refused entry).
    #[serde(default)]
    pub since: u64,
}
/// The value of an `ep:` key. Small on purpose: one key per endpoint, so a
/// change costs one key on the wire.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct EpRecord {
    pub mac: String,
    pub net: String,
    /// When the endpoint was created (ms since the epoch): of two nodes
    /// claiming one address, the older claim keeps it.
    #[serde(default)]
    pub since: u64,
    /// For a task's endpoint: the service record DNS and load balancing
    /// build from (raft holds what should be, gossip spreads what is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub svc: Option<SvcRecord>,
}

/// A running task's service record, on one of its networks.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SvcRecord {
    pub service_id: String,
    pub service: String,
    pub task_id: String,
    pub task: String,
    pub slot: u64,
    pub network: String,
    /// The service's VIP on this network (none in dnsrr mode).
    pub vip: Option<Ipv4Addr>,
    #[serde(default)]
    pub aliases: Vec<String>,
    pub health: TaskHealth,
}

/// A task's health as gossiped. DNS and the balancers answer only tasks
/// that `serve`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskHealth {
    /// No health check: it serves as soon as it runs.
    #[default]
    None,
    /// Its health check has not passed yet.
    Starting,
    Healthy,
    Unhealthy,
    /// Draining before its SIGTERM (`agent::tasks::drain`).
    Stopping,
}

impl TaskHealth {
    /// Whether DNS and the balancers may send it traffic.
    pub fn serves(self) -> bool {
        matches!(self, TaskHealth::None | TaskHealth::Healthy)
    }
}

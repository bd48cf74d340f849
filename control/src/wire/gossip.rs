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
    #[serde(default)]
    pub keys: GossipKeysView,
    #[serde(default)]
    pub traffic: GossipTraffic,
    /// The networks whose endpoint gossip this node takes part in.
    #[serde(default)]
    pub networks: Vec<NetworkGossip>,
}

/// One network's endpoint gossip as this node holds it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NetworkGossip {
    pub vni: u32,
    /// This node's instance for it (new on every join).
    pub generation: u64,
    /// The nodes on it whose entries this node holds, itself included.
    pub members: Vec<String>,
    /// Their endpoints on it.
    pub endpoints: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Member {
    pub node: String,
    pub generation: u64,
    pub gossip_addr: SocketAddr,
    pub vtep: Option<Ipv4Addr>,
    /// Milliseconds since this node last heard from it (any authentic
    /// gossip datagram).
    pub heard_ms_ago: Option<u64>,
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
    /// For an attached container's endpoint: the container's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
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
    /// For an attached container's endpoint (CNI, the Docker driver): its
    /// name, which the embedded DNS answers on the network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
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

/// A cluster gossip key (32 bytes for AES-256-GCM). Ids grow by one per
/// rotation; id 0 is a key given by `--gossip-key-file` outside a swarm.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipKey {
    pub id: u32,
    pub key: KeyBytes,
    /// When the leader made it (ms since the epoch).
    pub created_ms: u64,
}

impl std::fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GossipKey {{ id: {}, created_ms: {} }}",
            self.id, self.created_ms
        )
    }
}

/// Key material: base64 in JSON, never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyBytes(pub [u8; 32]);

impl std::fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyBytes(..)")
    }
}

impl Serialize for KeyBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(self.0))
    }
}

impl<'de> Deserialize<'de> for KeyBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use base64::Engine;
        let s = String::deserialize(d)?;
        let v = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(serde::de::Error::custom)?;
        let a: [u8; 32] = v
            .try_into()
            .map_err(|_| serde::de::Error::custom("a gossip key has 32 bytes"))?;
        Ok(KeyBytes(a))
    }
}

/// What a node tells the leader of its swarm gossip keys in each
/// heartbeat: the newest key id it holds and the one it seals with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyReport {
    pub newest: u32,
    pub sealing: u32,
}

/// `shoal debug gossip`: which keys this node holds and uses.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GossipKeysView {
    /// `swarm` (from the managers), `file` (`--gossip-key-file`),
    /// `insecure` (plaintext, `--insecure-gossip`) or `none` (sends
    /// nothing, refuses everything).
    pub source: String,
    /// Key ids held, newest first (any of them opens a datagram).
    pub ring: Vec<u32>,
    /// The key id this node seals with.
    pub sealing: Option<u32>,
}

/// Gossip datagrams and bytes on the wire (sealed sizes) since start.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct GossipTraffic {
    pub sent_datagrams: u64,
    pub sent_bytes: u64,
    pub received_datagrams: u64,
    pub received_bytes: u64,
    /// Authentic datagrams for a network this node is not on (dropped).
    #[serde(default)]
    pub not_joined: u64,
}

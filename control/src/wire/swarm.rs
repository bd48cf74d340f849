//! Joining and leaving the swarm, node rows, and a node's session with the managers (control port).

use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::*;

/// How a manager words a node that is no longer in the swarm (its error
/// is `forbidden`; the node's session leaves on that kind).
pub const REMOVED: &str = "was removed from the swarm";

/// `shoal swarm init`'s answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SwarmInitReply {
    pub node_id: String,
    pub control_addr: String,
    pub worker_token: String,
    pub manager_token: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SwarmInit {
    pub advertise_addr: Option<Ipv4Addr>,
    #[serde(default)]
    pub default_addr_pool: Option<ipnet::Ipv4Net>,
    #[serde(default)]
    pub default_addr_pool_mask_length: Option<u8>,
    #[serde(default)]
    pub data_path_port: Option<u16>,
    /// How often the leader makes a new gossip key, in ms (None: the
    /// daemon's `--gossip-key-rotation`).
    #[serde(default)]
    pub gossip_key_rotation_ms: Option<u64>,
    /// Node certificate lifetime, in ms (None: 90 days).
    #[serde(default)]
    pub cert_expiry_ms: Option<u64>,
}

/// `shoal swarm update`: what changes (None: unchanged).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SwarmUpdate {
    #[serde(default)]
    pub cert_expiry_ms: Option<u64>,
}

/// `shoal swarm inspect`: the swarm's settings, Docker's names where it has
/// them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SwarmView {
    #[serde(rename = "ID")]
    pub id: String,
    /// Node certificate lifetime, e.g. "2160h0m0s" in Docker; here ms.
    #[serde(rename = "NodeCertExpiryMs")]
    pub cert_expiry_ms: u64,
    #[serde(rename = "DataPathPort")]
    pub data_path_port: u16,
    #[serde(rename = "GossipKeyRotationMs")]
    pub gossip_key_rotation_ms: u64,
    /// Removed nodes whose certificates are refused.
    #[serde(rename = "RevokedNodes")]
    pub revoked: Vec<String>,
}

/// `shoal swarm ca`: the swarm's root, and a rotation's progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaView {
    /// The root join tokens pin (mid-rotation still the old one).
    pub root_pem: String,
    #[serde(default)]
    pub rotation: Option<CaProgress>,
}

/// How far a CA rotation is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaProgress {
    pub new_root_pem: String,
    /// Nodes whose certificate the new root signed, of all nodes.
    pub rotated: usize,
    pub total: usize,
    /// The hostnames of the nodes still on the old root.
    pub waiting: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinTokenReply {
    pub role: Role,
    pub token: String,
    pub control_addr: String,
}

/// A row of `shoal node ls`, with Docker's JSON field names.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeView {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Hostname")]
    pub hostname: String,
    #[serde(rename = "Status")]
    pub status: String,
    #[serde(rename = "Availability")]
    pub availability: String,
    #[serde(rename = "ManagerStatus")]
    pub manager_status: String,
    #[serde(rename = "Self")]
    pub is_self: bool,
    #[serde(rename = "Addr")]
    pub addr: Ipv4Addr,
}

/// `shoal swarm join`'s answer (the local API's, not the control port's
/// `JoinReply`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SwarmJoinReply {
    pub node_id: String,
    pub role: Role,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SwarmJoin {
    pub token: String,
    /// A manager's control address, IP:2377.
    pub remote: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SwarmLeave {
    #[serde(default)]
    pub force: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeUpdate {
    pub availability: Option<Availability>,
    #[serde(default)]
    pub labels_add: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub labels_rm: Vec<String>,
}
/// `POST /swarm/join` on a manager's control port.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    pub token: String,
    pub hostname: String,
    pub addr: Ipv4Addr,
    /// The Raft id this node will run if the token makes it a manager.
    pub raft_id: u64,
    pub control_addr: SocketAddr,
    /// The node's certificate request: its key stays on the node.
    pub csr_pem: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinReply {
    pub node_id: String,
    pub role: Role,
    pub cert_pem: String,
    /// The roots to trust (two during a CA rotation; None: the one the
    /// token pins).
    #[serde(default)]
    pub ca_pem: Option<String>,
    /// Control addresses of the managers.
    pub managers: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CertReply {
    pub cert_pem: String,
    /// The roots to trust now (two during a CA rotation).
    #[serde(default)]
    pub ca_pem: Option<String>,
}

/// `/swarm/cert`: a new certificate for the calling node's new key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CertRequest {
    pub csr_pem: String,
}
/// A node's heartbeat body: how its tasks are doing.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SessionRequest {
    #[serde(default)]
    pub reports: Vec<TaskReport>,
    /// Answers to the log asks of the previous reply.
    #[serde(default)]
    pub logs: Vec<LogLines>,
    /// Answers to the flow asks of the previous reply.
    #[serde(default)]
    pub flows: Vec<FlowAnswer>,
    /// The swarm gossip keys this node holds and seals with (None: none).
    #[serde(default)]
    pub gossip_keys: Option<KeyReport>,
    /// The last heartbeat of a node leaving the swarm.
    #[serde(default)]
    pub leaving: bool,
    /// The last heartbeat of a daemon that restarts (`liveness::RESTART_GRACE`).
    #[serde(default)]
    pub restarting: bool,
    /// Whether this node can carry encrypted networks.
    #[serde(default)]
    pub ipsec: Option<Ipsec>,
    /// When this node's certificate expires (ms since the epoch).
    #[serde(default)]
    pub cert_not_after_ms: Option<u64>,
}
/// An operation only the leader performs.
#[derive(Clone, Debug, Serialize, Deserialize)]
// Wire and log types, built and moved once each: boxing the big variants
// would buy nothing.
#[allow(clippy::large_enum_variant)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum LeaderOp {
    Write {
        cmd: Command,
    },
    AddVoter {
        raft_id: RaftId,
        addr: String,
    },
    RemoveVoter {
        raft_id: RaftId,
    },
    /// A node's session heartbeat (liveness, role changes), with its
    /// tasks' states.
    Heartbeat {
        node_id: String,
        #[serde(default)]
        reports: Vec<TaskReport>,
        /// Answers to log asks handed out earlier.
        #[serde(default)]
        logs: Vec<LogLines>,
        /// Answers to flow asks handed out earlier.
        #[serde(default)]
        flows: Vec<FlowAnswer>,
        #[serde(default)]
        gossip_keys: Option<KeyReport>,
        /// `swarm leave`: mark the node down and rotate the gossip key now.
        #[serde(default)]
        leaving: bool,
        /// A daemon restart: wait `liveness::RESTART_GRACE` for it.
        #[serde(default)]
        restarting: bool,
        #[serde(default)]
        ipsec: Option<Ipsec>,
        /// When its certificate expires (ms since the epoch).
        #[serde(default)]
        cert_not_after_ms: Option<u64>,
        /// Which root signed the certificate it presented to the manager
        /// that relays this (never the node's own word).
        #[serde(default)]
        cert_issuer: Option<String>,
    },
    /// Ask nodes for their tasks' logs: (node id, ask) pairs.
    LogAsk {
        asks: Vec<(String, LogAsk)>,
    },
    /// What arrived for a log ask.
    LogCollect {
        id: u64,
    },
    /// Ask nodes for their flow logs: (node id, ask) pairs.
    FlowAsk {
        asks: Vec<(String, FlowAsk)>,
    },
    /// What arrived for a flow ask.
    FlowCollect {
        id: u64,
    },
}

/// What the leader answered.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LeaderReply {
    pub result: CommandResult,
    /// Log index of the change (0 for none); a forwarding follower waits
    /// until it has applied it, so its next read sees the change.
    pub index: u64,
    pub session: Option<SessionReply>,
    /// The id of a log or flow ask, or what was collected for one.
    #[serde(default)]
    pub log_id: u64,
    #[serde(default)]
    pub logs: Vec<LogLines>,
    #[serde(default)]
    pub flows: Vec<FlowAnswer>,
}

/// The leader's answer to a node's heartbeat.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionReply {
    pub node: NodeRecord,
    /// Control addresses of the managers (voters).
    pub managers: Vec<String>,
    pub leader: String,
    /// A few other Ready nodes' addresses: with the managers', where a
    /// node with no gossip peer asks in (`raft/gossip_hint.rs`).
    #[serde(default)]
    pub gossip_hint: Vec<std::net::Ipv4Addr>,
    /// The tasks this node should run or stop.
    #[serde(default)]
    pub assignments: Vec<Assignment>,
    /// Log asks for this node's tasks.
    #[serde(default)]
    pub log_asks: Vec<LogAsk>,
    /// Flow asks for this node's flow log.
    #[serde(default)]
    pub flow_asks: Vec<FlowAsk>,
    /// The swarm's VXLAN port (`swarm init --data-path-port`).
    #[serde(default = "default_data_path_port")]
    pub data_path_port: u16,
    /// The routing mesh: the ingress network and the published ports.
    #[serde(default)]
    pub mesh: MeshConfig,
    /// The gossip keys this node must accept, newest first: those some
    /// live node may still seal with.
    #[serde(default)]
    pub gossip_keys: Vec<GossipKey>,
    /// The key id to seal with: the newest every live node holds.
    #[serde(default)]
    pub gossip_send: Option<u32>,
    /// The swarm's node certificate lifetime (ms): a certificate that
    /// outlives it from now is renewed at once (`swarm update
    /// --cert-expiry` shortened it).
    #[serde(default)]
    pub cert_expiry_ms: Option<u64>,
    /// The roots to trust (PEM; two during a CA rotation).
    #[serde(default)]
    pub ca_pem: Option<String>,
    /// The name of the root that signs now: a node whose certificate
    /// another root signed renews at once (a CA rotation).
    #[serde(default)]
    pub signing_ca: Option<String>,
    /// The containers attached on this node, as the managers hold them.
    #[serde(default)]
    pub attachments: Vec<Attachment>,
}

fn default_data_path_port() -> u16 {
    4789
}

/// Why the leader could not run an operation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum OpError {
    /// Asked a manager that is not (or no longer) the leader: retry.
    NotLeader,
    Failed(WireError),
}

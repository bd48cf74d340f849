//! The cluster's nodes and settings, and the Raft log's commands and results (they cross the control port in Raft's RPCs and in writes forwarded to the leader).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::*;

/// Raft's own id for a manager.
pub type RaftId = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Manager,
    Worker,
}

impl Role {
    /// The role's word on the wire: `manager`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Manager => "manager",
            Role::Worker => "worker",
        }
    }
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
    /// Whether its kernel can carry encrypted networks (as it last said).
    #[serde(default)]
    pub ipsec: Ipsec,
    /// When the certificate it holds expires (ms since the epoch, as its
    /// heartbeat last said; None: not said yet).
    #[serde(default)]
    pub cert_not_after_ms: Option<u64>,
    /// The name of the root that signed the certificate it presents (as a
    /// manager saw it in the handshake; None: not seen yet).
    #[serde(default)]
    pub cert_issuer: Option<String>,
    /// Raft log index that last changed this record.
    pub version: u64,
}

/// Whether a node can encrypt overlay traffic (IPsec ESP with AES-GCM
/// through an xfrm interface), as its daemon found out at start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "state", content = "missing")]
pub enum Ipsec {
    /// Not said yet (a node whose daemon predates encrypted networks).
    #[default]
    Unknown,
    Ready,
    /// What its kernel lacks, e.g. "esp4 (IPsec ESP)".
    Missing(String),
}

impl Ipsec {
    /// Why the node cannot take a task of an encrypted network (None: it can).
    pub fn why_not(&self) -> Option<String> {
        match self {
            Ipsec::Ready => None,
            Ipsec::Unknown => Some("it has not said whether it can encrypt".into()),
            Ipsec::Missing(m) => Some(format!("its kernel lacks {m}")),
        }
    }
}

/// Cluster-wide settings and secrets, created by `swarm init`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub cluster_id: String,
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub worker_token: String,
    pub manager_token: String,
    /// Where network subnets come from.
    #[serde(default)]
    pub pool: AddrPool,
    /// UDP port of the VXLAN data path.
    #[serde(default = "default_data_path_port")]
    pub data_path_port: u16,
    /// The gossip key ring, newest first, at most `GOSSIP_RING` keys
    /// (nodes get what they need of it in their session replies).
    #[serde(default)]
    pub gossip_keys: Vec<GossipKey>,
    /// The leader makes a new gossip key this often (ms).
    #[serde(default = "default_gossip_key_rotation_ms")]
    pub gossip_key_rotation_ms: u64,
    /// How long node certificates are valid (ms); nodes renew in the last
    /// half of that.
    #[serde(default = "default_cert_expiry_ms")]
    pub cert_expiry_ms: u64,
    /// Nodes removed from the swarm, by id: their certificates are refused
    /// at every manager's handshake from then on, expired or not. Kept
    /// (node ids are never reused; one small entry per removal).
    #[serde(default)]
    pub revoked: BTreeMap<String, RevokedNode>,
    /// A CA rotation under way (`swarm ca --rotate`).
    #[serde(default)]
    pub ca_rotation: Option<CaRotation>,
}

/// The root a CA rotation moves the swarm to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaRotation {
    pub cert_pem: String,
    pub key_pem: String,
    /// The new root's name and key certified by the old root: presented
    /// after a new certificate, it chains to the old root too.
    pub cross_pem: String,
    /// When it started (ms since the epoch).
    pub started_ms: u64,
}

impl ClusterInfo {
    /// The root that signs certificates now (PEM cert, key).
    pub fn signing_ca(&self) -> (&str, &str) {
        match &self.ca_rotation {
            Some(r) => (&r.cert_pem, &r.key_pem),
            None => (&self.ca_cert_pem, &self.ca_key_pem),
        }
    }

    /// The roots every node trusts: both while a rotation is under way.
    pub fn trust_bundle(&self) -> String {
        match &self.ca_rotation {
            Some(r) => format!("{}{}", self.ca_cert_pem, r.cert_pem),
            None => self.ca_cert_pem.clone(),
        }
    }
}

/// A removed node whose certificates no manager accepts any more.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedNode {
    pub hostname: String,
    /// When it was removed (ms since the epoch; 0: not known).
    pub at_ms: u64,
}

/// Docker's node certificate lifetime: 90 days.
pub const DEFAULT_CERT_EXPIRY_MS: u64 = 90 * 24 * 3600 * 1000;

fn default_cert_expiry_ms() -> u64 {
    DEFAULT_CERT_EXPIRY_MS
}

fn default_data_path_port() -> u16 {
    4789
}

/// Docker's gossip key rotation period: 12 h.
pub const DEFAULT_GOSSIP_KEY_ROTATION_MS: u64 = 12 * 3600 * 1000;

fn default_gossip_key_rotation_ms() -> u64 {
    DEFAULT_GOSSIP_KEY_ROTATION_MS
}

/// Gossip keys kept in the replicated state (Docker keeps 3 too).
pub const GOSSIP_RING: usize = 3;

/// A change to the desired state. Tagged, so new commands can be added
/// without breaking old log entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
// Wire and log types, built and moved once each: boxing the big variants
// would buy nothing.
#[allow(clippy::large_enum_variant)]
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
    /// What a node's heartbeat says of its IPsec support, when it changed.
    NodeSetIpsec {
        id: String,
        ipsec: Ipsec,
    },
    /// Promotion (with the Raft id the node will run) or demotion.
    NodeSetRole {
        id: String,
        role: Role,
        raft_id: Option<RaftId>,
    },
    /// Also revokes its certificates (`ClusterInfo::revoked`).
    NodeRemove {
        id: String,
        #[serde(default)]
        now: u64,
    },
    /// When the certificate a node holds expires, as its heartbeat says,
    /// and which root signed it, as the handshake showed.
    NodeSetCertExpiry {
        id: String,
        not_after_ms: u64,
        #[serde(default)]
        issuer: Option<String>,
    },
    /// `swarm ca --rotate`: from now on certificates come from `rotation`'s
    /// root, and every node trusts both roots.
    CaRotate {
        rotation: CaRotation,
    },
    /// Every node holds a certificate of the new root: it becomes the only
    /// root, and the join tokens pin it.
    CaRotateFinish {
        worker_token: String,
        manager_token: String,
    },
    /// `swarm update --cert-expiry`: certificates signed from now on.
    ClusterSetCertExpiry {
        ms: u64,
    },
    /// A new gossip key (ids only grow; the ring keeps `GOSSIP_RING`).
    GossipKeyRotate {
        key: GossipKey,
    },
    NetworkCreate {
        id: String,
        spec: NetworkSpec,
        now: u64,
    },
    NetworkRemove {
        id: String,
    },
    /// A container on an attachable network (`raft/attachments.rs`).
    AttachmentCreate {
        node_id: String,
        req: AttachRequest,
        now: u64,
    },
    AttachmentRemove {
        node_id: String,
        req: DetachRequest,
    },
    ServiceCreate {
        id: String,
        spec: ServiceSpec,
        now: u64,
    },
    ServiceScale {
        id: String,
        replicas: u64,
        now: u64,
    },
    ServiceRemove {
        id: String,
    },
    /// A new spec (or, with `rollback`, the previous one); `version`: the
    /// service's version the spec was made from (0: any).
    ServiceUpdate {
        id: String,
        spec: Option<ServiceSpec>,
        version: u64,
        rollback: bool,
        now: u64,
    },
    /// The updater's verdicts: paused, completed, rolled back by itself.
    ServiceUpdateStatus {
        id: String,
        version: u64,
        status: UpdateStatus,
        rollback: bool,
    },
    TaskCreate {
        tasks: Vec<NewTask>,
        now: u64,
    },
    TaskAssign {
        id: String,
        node_id: String,
        now: u64,
    },
    TaskDesired {
        ids: Vec<String>,
        desired: DesiredState,
    },
    TaskReports {
        reports: Vec<TaskReport>,
        now: u64,
    },
    TaskRemove {
        ids: Vec<String>,
    },
}

/// What applying a command gave.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
// Wire and log types, built and moved once each: boxing the big variants
// would buy nothing.
#[allow(clippy::large_enum_variant)]
#[serde(rename_all = "snake_case")]
pub enum CommandResult {
    #[default]
    Ok,
    Node(NodeRecord),
    Network(NetworkRecord),
    /// The attachment made, or the ones removed.
    Attachments(Vec<Attachment>),
    Service(ServiceRecord),
    Error(WireError),
}

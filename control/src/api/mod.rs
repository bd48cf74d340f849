//! The daemon's local API: JSON over HTTP/1 on a Unix socket (mode 0600).
//! The CLI, the lab and, later, a CNI plugin use it. Every type here is the
//! wire shape.

pub mod client;
pub mod orchestration;
pub mod server;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

pub const DEFAULT_SOCKET: &str = "/run/shoal/shoal.sock";

/// The socket the CLI talks to: `--socket`, else `$SHOAL_SOCKET` (the lab
/// sets it for `shoal lab exec NODE -- shoal ...`), else the default.
pub fn socket_path(flag: Option<&std::path::Path>) -> std::path::PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    std::env::var_os("SHOAL_SOCKET")
        .map(Into::into)
        .unwrap_or_else(|| DEFAULT_SOCKET.into())
}

/// An overlay network as a node knows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Network {
    pub name: String,
    pub vni: u32,
    pub subnet: ipnet::Ipv4Net,
    pub gateway: Ipv4Addr,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NetworkCreate {
    pub name: String,
    pub vni: u32,
    /// CIDR, e.g. 10.0.1.0/24.
    pub subnet: String,
    /// Default: the subnet's first address.
    pub gateway: Option<Ipv4Addr>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EndpointCreate {
    pub network: String,
    /// CIDR with the network's prefix, e.g. 10.0.1.5/24.
    pub ip: String,
    pub mac: Option<String>,
    /// An existing network namespace (a path such as /run/netns/X or
    /// /proc/PID/ns/net) to attach...
    pub netns: Option<String>,
    /// ...or the name of one to create under /run/netns (also the
    /// endpoint's name).
    pub name: Option<String>,
    /// Interface name inside the namespace (default eth0; only eth0 gets
    /// the default route unless `default_route` says otherwise).
    #[serde(default)]
    pub ifname: Option<String>,
    /// A task endpoint's service record (gossiped with it).
    #[serde(default)]
    pub svc: Option<crate::gossip::table::SvcRecord>,
    /// Whether this interface holds the namespace's default route (None:
    /// if it is eth0). The others get source routes: what leaves from
    /// their address leaves by them.
    #[serde(default)]
    pub default_route: Option<bool>,
}

/// A local endpoint.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub network: String,
    pub vni: u32,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub mac: String,
    /// Path of the endpoint's network namespace.
    pub netns: String,
    /// Whether the daemon created (and so removes) the namespace.
    pub owns_netns: bool,
    /// Host-side veth on the node.
    pub host_if: String,
    pub node: String,
    /// Creation time, ms since the epoch (older claims win address conflicts).
    #[serde(default)]
    pub since: u64,
    /// Interface name inside the namespace.
    #[serde(default = "default_ifname")]
    pub ifname: String,
    #[serde(default)]
    pub svc: Option<crate::gossip::table::SvcRecord>,
    #[serde(default)]
    pub default_route: Option<bool>,
}

fn default_ifname() -> String {
    crate::agent::endpoint::EP_IFNAME.to_string()
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeInfo {
    pub node: String,
    pub generation: u64,
    pub vtep: Ipv4Addr,
    pub gossip_addr: SocketAddr,
    pub cluster_id: String,
    pub underlay_dev: String,
    pub hooks: shoal_dataplane::overlay::Hooks,
    pub pid: u32,
}

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
    pub svc: Option<crate::gossip::table::SvcRecord>,
    /// When its node created the endpoint (ms since the epoch; 0 for a
    /// refused entry).
    #[serde(default)]
    pub since: u64,
}

/// An API error: a one-line message for the CLI.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

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
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinTokenReply {
    pub role: crate::raft::state::Role,
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
    pub availability: Option<crate::raft::state::Availability>,
    #[serde(default)]
    pub labels_add: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub labels_rm: Vec<String>,
}

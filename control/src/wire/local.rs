//! The local API's node-level shapes: overlay networks and endpoints as one node knows them, and the node's own facts.

use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::*;

/// Name of the interface inside the endpoint's namespace, as in Docker.
pub const EP_IFNAME: &str = "eth0";

/// An overlay network as a node knows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Network {
    pub name: String,
    pub vni: u32,
    pub subnet: ipnet::Ipv4Net,
    pub gateway: Ipv4Addr,
    /// Encrypted between nodes (IPsec, keys from the swarm's managers).
    #[serde(default)]
    pub encrypted: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NetworkCreate {
    pub name: String,
    pub vni: u32,
    /// CIDR, e.g. 10.0.1.0/24.
    pub subnet: String,
    /// Default: the subnet's first address.
    pub gateway: Option<Ipv4Addr>,
    /// Only for swarm networks (the keys come from the managers).
    #[serde(default)]
    pub encrypted: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
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
    pub svc: Option<SvcRecord>,
    /// Whether this interface holds the namespace's default route (None:
    /// if it is eth0). The others get source routes: what leaves from
    /// their address leaves by them.
    #[serde(default)]
    pub default_route: Option<bool>,
    /// An attached container's endpoint (`agent/attachments.rs`).
    #[serde(default)]
    pub container: Option<ContainerRef>,
    /// The runtime configures the inside (Docker's driver): the peer stays
    /// in the node's namespace, named `ifname`, for the runtime to move.
    #[serde(default)]
    pub external: bool,
}

/// Which container an endpoint attaches, and under which name it answers.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContainerRef {
    pub id: String,
    pub name: String,
    /// The node's balancer address on the network, from the managers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lb_addr: Option<Ipv4Addr>,
    /// The namespace's inode when attached: a path that no longer opens,
    /// or opens another namespace, means the container is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns_ino: Option<u64>,
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
    pub svc: Option<SvcRecord>,
    #[serde(default)]
    pub default_route: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerRef>,
    /// See `EndpointCreate::external`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
}

fn default_ifname() -> String {
    EP_IFNAME.to_string()
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

/// Written to DATA_DIR/agent.json once the agent serves its API; the lab
/// waits for it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgentState {
    pub pid: u32,
    pub node: String,
    pub socket: std::path::PathBuf,
    pub underlay_dev: String,
    pub vtep: Ipv4Addr,
    pub hooks: shoal_dataplane::overlay::Hooks,
    pub bpffs_dir: std::path::PathBuf,
}

/// The file, in the daemon's data dir, that holds `AgentState`.
pub const STATE_FILE: &str = "agent.json";

/// The file, in the daemon's data dir, that holds the gossip members it
/// last knew (`gossip/remembered.rs`).
pub const GOSSIP_PEERS_FILE: &str = "gossip-peers.json";

/// `POST /v1/attachments`: attach a container's namespace to an attachable
/// swarm network (what the CNI plugin and the Docker driver ask).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AttachCreate {
    /// Network name or id.
    pub network: String,
    pub container_id: String,
    /// Interface name inside the namespace (default eth0).
    #[serde(default)]
    pub ifname: Option<String>,
    /// The namespace (a path such as /proc/PID/ns/net or /run/netns/X).
    pub netns: String,
    /// The container's name, answered by the embedded DNS (default: none).
    #[serde(default)]
    pub name: String,
    /// A wanted address (honoured when free).
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
    /// Whether this interface holds the default route (default: yes).
    #[serde(default)]
    pub default_route: Option<bool>,
}

/// A container attached on this node: what a CNI result or a Docker
/// driver reply is made of.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AttachView {
    pub container_id: String,
    pub ifname: String,
    pub name: String,
    pub network: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub mac: String,
    pub mtu: u32,
    pub netns: String,
    /// The local endpoint (`endpoint ls`).
    pub endpoint: String,
    pub host_if: String,
}

//! Overlay networks in the replicated state: spec, record, address pool.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// Where network subnets come from (`swarm init --default-addr-pool`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddrPool {
    pub base: Ipv4Net,
    pub mask_len: u8,
}

impl Default for AddrPool {
    fn default() -> Self {
        Self {
            base: "10.0.0.0/8".parse().expect("valid"),
            mask_len: 24,
        }
    }
}

/// What `network create` asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    pub name: String,
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    #[serde(default)]
    pub attachable: bool,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub ingress: bool,
    /// Every packet between nodes in IPsec ESP (`--opt encrypted`).
    #[serde(default)]
    pub encrypted: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub id: String,
    pub spec: NetworkSpec,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub vni: u32,
    pub created_at: u64,
    pub version: u64,
}

/// A container (not a task) attached to an attachable network by a node's
/// CNI plugin or Docker driver: it holds an address of the managers'
/// allocator, as a task does, until it is detached or its node removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// `NODE/CONTAINER/IFNAME` (`Attachment::key`).
    pub id: String,
    pub node_id: String,
    pub container_id: String,
    /// Interface name inside the container.
    pub ifname: String,
    /// The container's name: the embedded DNS answers it on the network.
    pub name: String,
    pub network_id: String,
    pub addr: Ipv4Addr,
    pub created_at: u64,
    pub version: u64,
}

impl Attachment {
    pub fn key(node_id: &str, container_id: &str, ifname: &str) -> String {
        format!("{node_id}/{container_id}/{ifname}")
    }
}

/// What a node asks a manager for (`/swarm/attach`); the node is the
/// caller's certificate's, never the body's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachRequest {
    /// Network name or id.
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    pub name: String,
    /// A wanted address (honoured when free).
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
}

/// The allocation, with the network the node needs to define locally.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachReply {
    pub attachment: Attachment,
    pub network: NetworkRecord,
    /// The node's balancer address on the network (IPVS balancing).
    #[serde(default)]
    pub lb_addr: Option<Ipv4Addr>,
}

/// `/swarm/detach`: one interface, or every one of the container's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetachRequest {
    pub container_id: String,
    #[serde(default)]
    pub ifname: Option<String>,
}

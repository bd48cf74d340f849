//! The static endpoint table: every node and endpoint of a cluster, as the
//! lab writes it and the node agent programs it. The gossip issue replaces
//! this file with tables learnt from peers; the types stay the wire shape.

use std::net::Ipv4Addr;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// An overlay network.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Network {
    pub name: String,
    pub vni: u32,
    pub subnet: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
}

/// A node (host) and its VTEP.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    /// Network namespace the node lives in (lab only).
    pub netns: String,
    pub underlay_ip: Ipv4Addr,
    pub underlay_dev: String,
}

/// An endpoint: a network namespace attached to a node by a veth pair.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub netns: String,
    pub node: String,
    pub network: String,
    pub vni: u32,
    pub ip: Ipv4Addr,
    pub mac: String,
    /// Host-side veth name on the node.
    pub host_if: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Table {
    pub networks: Vec<Network>,
    pub nodes: Vec<Node>,
    pub endpoints: Vec<Endpoint>,
}

impl Table {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read table {}: {e}", path.display()))?;
        serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("bad table {}: {e}", path.display()))
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn network(&self, name: &str) -> Option<&Network> {
        self.networks.iter().find(|n| n.name == name)
    }
}

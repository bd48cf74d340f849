//! The ingress routing mesh as every node gets it in its heartbeat reply, and the balancer addresses of each node on each network.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::*;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngressNet {
    pub name: String,
    pub vni: u32,
    pub subnet: ipnet::Ipv4Net,
    pub gateway: Ipv4Addr,
    /// Created with `--ingress --opt encrypted`: published ports' traffic
    /// crosses the underlay in ESP.
    #[serde(default)]
    pub encrypted: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MeshPortSpec {
    pub protocol: Protocol,
    pub published: u16,
    pub target: u16,
    /// The service's VIP on the ingress network.
    pub vip: Ipv4Addr,
    pub service: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshConfig {
    pub ingress: Option<IngressNet>,
    pub ports: Vec<MeshPortSpec>,
    /// The receiving node's address on the ingress network (its ingress
    /// sandbox, for local processes).
    #[serde(default)]
    pub local_addr: Option<Ipv4Addr>,
}
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LbAddr {
    pub network_id: String,
    pub node_id: String,
    pub addr: Ipv4Addr,
}

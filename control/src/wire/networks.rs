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

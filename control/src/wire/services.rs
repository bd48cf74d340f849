//! Services in the replicated state: Docker's service spec (what to run, how many, where, on which networks, with which ports) and the record the leader keeps (VIPs per network).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::*;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Replicated { replicas: u64 },
    Global,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    #[default]
    Vip,
    Dnsrr,
}

impl EndpointMode {
    /// The mode's word on the wire: `vip`.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointMode::Vip => "vip",
            EndpointMode::Dnsrr => "dnsrr",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetAttach {
    /// Network name or id, as given.
    pub target: String,
    #[serde(default)]
    pub aliases: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    #[default]
    Ingress,
    Host,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    pub published: u16,
    pub target: u16,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub mode: PublishMode,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    None,
    OnFailure,
    #[default]
    Any,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    pub condition: RestartCondition,
    /// Docker's default is 5 s.
    pub delay_ms: u64,
    /// 0: unlimited.
    pub max_attempts: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            condition: RestartCondition::Any,
            delay_ms: 5000,
            max_attempts: 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSpec {
    /// Run with `sh -c` inside the task's namespaces.
    pub cmd: String,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub retries: u64,
    pub start_period_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    pub mode: Mode,
    /// The task's process: argv.
    pub command: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub networks: Vec<NetAttach>,
    #[serde(default)]
    pub endpoint_mode: EndpointMode,
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    #[serde(default)]
    pub constraints: Vec<String>,
    #[serde(default)]
    pub placement_prefs: Vec<String>,
    #[serde(default)]
    pub max_per_node: u64,
    #[serde(default)]
    pub restart: RestartPolicy,
    #[serde(default)]
    pub health: Option<HealthSpec>,
    /// Docker's default is 10 s.
    pub stop_grace_ms: u64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub update: UpdatePolicy,
    #[serde(default)]
    pub rollback: UpdatePolicy,
    /// Bumped by `service update --force`: every task is replaced.
    #[serde(default)]
    pub force_update: u64,
}

/// A service's virtual IP on one of its networks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vip {
    pub network_id: String,
    pub addr: Ipv4Addr,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub id: String,
    pub spec: ServiceSpec,
    /// The networks' ids, in the spec's order.
    pub network_ids: Vec<String>,
    pub vips: Vec<Vip>,
    pub created_at: u64,
    pub updated_at: u64,
    pub version: u64,
    /// The spec before the last update (what a rollback returns to).
    #[serde(default)]
    pub previous_spec: Option<ServiceSpec>,
    #[serde(default)]
    pub update_status: Option<UpdateStatus>,
}

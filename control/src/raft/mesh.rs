//! What every node needs for the ingress routing mesh, derived from the
//! desired state and sent in each heartbeat reply: the ingress network and
//! every port published in ingress mode with its service's VIP there.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::services::{Protocol, PublishMode};
use super::state::ClusterState;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngressNet {
    pub name: String,
    pub vni: u32,
    pub subnet: ipnet::Ipv4Net,
    pub gateway: Ipv4Addr,
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

impl ClusterState {
    /// What `node_id` gets in its heartbeat replies.
    pub fn mesh_config(&self, node_id: &str) -> MeshConfig {
        let Some(net) = self.networks.values().find(|n| n.spec.ingress) else {
            return MeshConfig::default();
        };
        let mut ports: Vec<MeshPortSpec> = self
            .services
            .values()
            .filter_map(|s| {
                let vip = s.vips.iter().find(|v| v.network_id == net.id)?.addr;
                Some(
                    s.spec
                        .ports
                        .iter()
                        .filter(|p| p.mode == PublishMode::Ingress)
                        .map(move |p| MeshPortSpec {
                            protocol: p.protocol,
                            published: p.published,
                            target: p.target,
                            vip,
                            service: s.spec.name.clone(),
                        }),
                )
            })
            .flatten()
            .collect();
        ports.sort();
        MeshConfig {
            ingress: Some(IngressNet {
                name: net.spec.name.clone(),
                vni: net.vni,
                subnet: net.subnet,
                gateway: net.gateway,
            }),
            ports,
            local_addr: self.lb_addr(&net.id, node_id),
        }
    }
}

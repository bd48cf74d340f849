//! What every node needs for the ingress routing mesh, derived from the
//! desired state and sent in each heartbeat reply: the ingress network and
//! every port published in ingress mode with its service's VIP there.

use super::state::ClusterState;
use crate::wire::PublishMode;
use crate::wire::{IngressNet, MeshConfig, MeshPortSpec};

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
                encrypted: net.spec.encrypted,
            }),
            ports,
            local_addr: self.lb_addr(&net.id, node_id),
        }
    }
}

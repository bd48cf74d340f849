//! This node's part of the ingress routing mesh (`ebpf/c/include/mesh.h`,
//! docs/mesh.md). Every node, with or without tasks of a service, accepts
//! its published ports: so every node defines the ingress network from the
//! first heartbeat on (no lazy join for it), balances the ingress VIPs
//! (their Maglev tables, from gossip like any VIP), and holds the published
//! ports that the leader sends with each heartbeat.

use std::collections::BTreeSet;

use anyhow::Result;
use shoal_dataplane::lb::{MeshMaps, MeshPort};
use shoal_dataplane::overlay::ip_key;
use tracing::{info, warn};

use crate::api::NetworkCreate;
use crate::raft::mesh::MeshConfig;
use crate::raft::services::Protocol;

pub fn proto(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
    }
}

/// The published ports as the datapath keys them.
pub fn ports(m: &MeshConfig) -> BTreeSet<MeshPort> {
    m.ports
        .iter()
        .map(|p| MeshPort {
            proto: proto(p.protocol),
            published: p.published,
            addr: p.vip,
            target: p.target,
            host: false,
            vni: 0,
        })
        .collect()
}

/// Makes the published-port map equal to `want` (the difference only).
pub fn program(maps: &mut MeshMaps, want: &BTreeSet<MeshPort>) {
    let have: BTreeSet<MeshPort> = maps.ports().into_iter().collect();
    for p in want.difference(&have) {
        match maps.set_port(p) {
            Ok(()) => {
                info!(port = p.published, proto = p.proto, to = %p.addr, target = p.target, host = p.host, "port published on this node")
            }
            Err(e) => warn!("routing mesh: {e}"),
        }
    }
    for p in have.difference(want) {
        // A changed entry was just overwritten above: keep it.
        if want
            .iter()
            .any(|w| w.proto == p.proto && w.published == p.published)
        {
            continue;
        }
        maps.remove_port(p.proto, p.published);
        info!(
            port = p.published,
            proto = p.proto,
            "port unpublished on this node"
        );
    }
}

impl super::Agent {
    /// The leader's mesh configuration, from a heartbeat reply.
    pub async fn set_mesh(&self, m: MeshConfig) -> Result<()> {
        if let Some(net) = &m.ingress {
            self.join_network(NetworkCreate {
                name: net.name.clone(),
                vni: net.vni,
                subnet: net.subnet.to_string(),
                gateway: Some(net.gateway),
            })
            .await?;
        }
        let mut inner = self.inner.lock().await;
        if let Some(n) = &m.ingress {
            // Replies come back to this node over the ingress network even
            // when no task of it runs here.
            inner.maps.add_vni(n.vni)?;
        }
        let mut cfg = inner.maps.config()?;
        let (vni, subnet, prefix) = match &m.ingress {
            Some(n) => (
                n.vni,
                ip_key(n.subnet.network()),
                n.subnet.prefix_len() as u32,
            ),
            None => (0, 0, 0),
        };
        if (cfg.ingress_vni, cfg.ingress_net, cfg.ingress_prefix) != (vni, subnet, prefix) {
            cfg.ingress_vni = vni;
            cfg.ingress_net = subnet;
            cfg.ingress_prefix = prefix;
            inner.maps.set_config(cfg)?;
        }
        let changed = inner.mesh.as_ref() != Some(&m);
        inner.mesh = Some(m);
        drop(inner);
        if changed {
            self.changed.notify_one();
        }
        Ok(())
    }

    /// The ingress network's name, if the swarm has one.
    pub async fn ingress_name(&self) -> Option<String> {
        self.inner
            .lock()
            .await
            .mesh
            .as_ref()
            .and_then(|m| m.ingress.as_ref())
            .map(|n| n.name.clone())
    }
}

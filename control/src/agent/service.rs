//! The agent's shared state (`Agent`, `Inner`) and what follows from the
//! local table (`local_table.rs`) and gossip: the loop that re-merges them
//! and reprograms remote endpoints, DNS, the balancers and the routing
//! mesh; task health in the gossiped records; the gossip view.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use shoal_dataplane::netlink::Netlink;
use shoal_dataplane::overlay::{Maps, Overlay};
use tokio::sync::{Mutex, Notify};
use tracing::{info, warn};

use super::lb::Balancer;
use super::store::{State, Store};
use super::sync::Programmer;
use crate::gossip::table::{self, LocalView};
use crate::gossip::Gossip;
use crate::wire::EpRecord;
use crate::wire::{Endpoint, GossipView, NodeInfo};

pub struct Inner {
    pub overlay: Overlay,
    pub maps: Maps,
    pub state: State,
    pub store: Store,
    pub programmer: Programmer,
    pub lb: super::lb::Lb,
    /// The routing mesh: what the leader said last (None: not heard yet,
    /// so a restarted agent leaves the pinned ports alone), and the maps.
    pub mesh: Option<crate::wire::MeshConfig>,
    pub mesh_maps: shoal_dataplane::lb::MeshMaps,
    /// Published ports relayed for the node's own processes.
    pub relays: super::mesh_local::Relays,
    /// Interfaces besides the underlay where the mesh's entry is hooked.
    pub mesh_ifaces: super::mesh::MeshIfaces,
}

pub struct Agent {
    pub info: NodeInfo,
    pub data_dir: std::path::PathBuf,
    /// Port of the manager control plane (Raft between managers).
    pub control_port: u16,
    pub raft_opts: crate::raft::manager::Options,
    pub task_netns_prefix: String,
    pub tasks: super::tasks::Runner,
    pub swarm: Mutex<Option<super::swarm::Swarm>>,
    pub nl: Netlink,
    pub gossip: Gossip,
    /// The embedded DNS server of the node's tasks.
    pub dns: super::dns::NodeDns,
    pub mtu: u32,
    pub inner: Mutex<Inner>,
    /// The datapath's new flows and drops, newest kept (`flows.rs`).
    pub flows: super::flows::FlowLog,
    /// Poked when the local table changes, so the sync loop re-merges.
    pub changed: Notify,
    /// The balancer in use (`Inner::lb` is it).
    pub lb_mode: crate::wire::LbMode,
}

/// An endpoint's gossip record.
pub(super) fn ep_record(e: &Endpoint) -> EpRecord {
    EpRecord {
        mac: e.mac.clone(),
        net: e.network.clone(),
        since: e.since,
        svc: e.svc.clone(),
    }
}

/// The gossip records of a state's endpoints.
pub fn records(st: &State) -> Vec<(String, String)> {
    st.endpoints
        .iter()
        .map(|e| {
            (
                table::ep_key(e.vni, e.ip),
                serde_json::to_string(&ep_record(e)).expect("record serialises"),
            )
        })
        .collect()
}

impl Agent {
    /// Re-merges gossip with the local table and reprograms the difference.
    pub async fn resync(&self) -> Result<()> {
        let ingress = self.ingress_name().await;
        if self.lb_mode == crate::wire::LbMode::Ipvs {
            self.sync_lb_endpoints(self.lb_wanted(), ingress.as_deref())
                .await;
        }
        let host_published = self.host_published(ingress.as_deref());
        let sandbox = self.sync_ingress_sandbox().await;
        let peers = self.gossip.peers().await;
        let mut inner = self.inner.lock().await;
        let local = LocalView {
            networks: inner.state.networks.clone(),
            endpoints: inner
                .state
                .endpoints
                .iter()
                .map(|e| (e.vni, e.ip))
                .collect(),
            also_joined: inner
                .mesh
                .iter()
                .filter_map(|m| m.ingress.as_ref())
                .map(|n| n.vni)
                .collect(),
        };
        let merged = table::merge(&local, &peers);
        // The networks this node balances: its endpoints' and the ingress
        // network's (every node is an entry of the routing mesh, whether
        // or not it runs a task). Acknowledged after programming: the
        // peers stopping a task on one of them.
        let joined: std::collections::BTreeSet<u32> = local
            .endpoints
            .iter()
            .map(|(v, _)| *v)
            .chain(local.also_joined.iter().copied())
            .collect();
        let acks: std::collections::BTreeMap<String, u64> = peers
            .iter()
            .filter(|p| !p.stopping_vnis().is_disjoint(&joined))
            .map(|p| (p.node.clone(), p.ep_version))
            .collect();
        self.rebuild_dns(&inner.state, &merged);
        let want = super::lb::desired(task_records(&inner.state, &merged), &joined);
        let Inner {
            mesh,
            mesh_maps,
            mesh_ifaces,
            overlay,
            relays,
            state,
            ..
        } = &mut *inner;
        if let Some(m) = mesh.as_ref() {
            let mut published = super::mesh::ports(m);
            published.extend(host_published.iter().cloned());
            super::mesh::program(mesh_maps, &published);
            super::mesh::program_addrs(
                mesh_maps,
                overlay,
                mesh_ifaces,
                &self.info.underlay_dev,
                self.info.vtep,
            );
            let local = super::mesh::local_ports(m, sandbox.as_deref(), &host_published, |a| {
                state
                    .endpoints
                    .iter()
                    .find(|e| e.ip == a)
                    .map(|e| e.netns.clone())
            });
            relays.sync(&local);
        }
        let Inner {
            maps,
            programmer,
            lb,
            state,
            mesh,
            ..
        } = &mut *inner;
        lb.apply(
            &want,
            super::lb::Ctx {
                maps,
                endpoints: &state.endpoints,
                adopting: programmer.adopting(),
                ingress_vni: mesh
                    .as_ref()
                    .and_then(|m| m.ingress.as_ref())
                    .map(|n| n.vni),
            },
        )
        .await;
        programmer.apply(maps, merged)?;
        drop(inner);
        // Programmed: say how far into those peers' endpoint changes this
        // node's balancers (and DNS) now are; a node draining a task waits
        // for it.
        let present = peers.iter().map(|p| p.node.clone()).collect();
        self.gossip.set_applied(&present, &acks).await;
        Ok(())
    }

    /// The DNS records: every accepted task record of the table and this
    /// node's own; the local tasks' networks in attachment order.
    fn rebuild_dns(&self, st: &State, merged: &table::Merged) {
        let mut local: Vec<(&str, String, u32)> = st
            .endpoints
            .iter()
            .filter_map(|e| Some((e.name.as_str(), e.svc.as_ref()?.task_id.clone(), e.vni)))
            .collect();
        // Endpoint names end in the attachment index (t<id>-0, -1, ...).
        local.sort();
        self.dns.view.rebuild(
            task_records(st, merged),
            local.into_iter().map(|(_, t, v)| (t, v)),
        );
    }

    /// Sets the health in the service records of a task's endpoints and
    /// gossips it: DNS (and the load balancer) answer only healthy tasks.
    /// Returns the highest gossip version it published (None: nothing
    /// changed).
    pub async fn set_task_health(&self, task_id: &str, health: &str) -> Option<u64> {
        let mut inner = self.inner.lock().await;
        let mut changed = vec![];
        for ep in inner.state.endpoints.iter_mut() {
            if let Some(s) = ep.svc.as_mut().filter(|s| s.task_id == task_id) {
                if s.health != health {
                    s.health = health.to_string();
                    changed.push(ep.clone());
                }
            }
        }
        if changed.is_empty() {
            return None;
        }
        // Gossip carries the health now; the file only matters to a
        // restart, which re-runs the health check anyway.
        if let Err(e) = inner.store.save(&inner.state) {
            warn!(
                task = task_id,
                "cannot save the task's health locally: {e:#}"
            );
        }
        drop(inner);
        let mut version = 0;
        for ep in changed {
            version = version.max(self.gossip.publish(ep.vni, ep.ip, &ep_record(&ep)).await);
        }
        self.changed.notify_one();
        Some(version)
    }

    /// Adopts the swarm's VXLAN port (`swarm init --data-path-port`): the
    /// dataplane's config map is rewritten in place, no reload.
    pub async fn set_data_path_port(&self, port: u16) -> Result<()> {
        let mut inner = self.inner.lock().await;
        let mut cfg = inner.maps.config()?;
        if u16::from_be(cfg.vxlan_port) != port {
            cfg.vxlan_port = port.to_be();
            inner.maps.set_config(cfg)?;
            info!(port, "VXLAN data path port set by the swarm");
        }
        Ok(())
    }

    /// Every task address the node knows (gossip and its own): (VNI,
    /// address, service record).
    pub async fn task_addresses(&self) -> Vec<(u32, std::net::Ipv4Addr, crate::wire::SvcRecord)> {
        let inner = self.inner.lock().await;
        task_records(&inner.state, &inner.programmer.last)
            .map(|(vni, ip, r)| (vni, ip, r.clone()))
            .collect()
    }

    pub async fn gossip_view(&self) -> GossipView {
        let members = self.gossip.members().await;
        let inner = self.inner.lock().await;
        let mut table = inner.programmer.last.entries.clone();
        for e in &mut table {
            e.programmed = inner.programmer.is_programmed(e.vni, e.ip) && e.refused.is_none();
        }
        let mut refused: BTreeMap<String, u64> = inner
            .programmer
            .refused_total
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        for (k, v) in self.gossip.wire_refused() {
            refused.insert(k.to_string(), v);
        }
        GossipView {
            members,
            table,
            refused,
        }
    }
}

/// Every task record this node knows: its peers' accepted ones and its own.
fn task_records<'a>(
    st: &'a State,
    merged: &'a table::Merged,
) -> impl Iterator<Item = super::dns::Rec<'a>> {
    merged
        .entries
        .iter()
        .filter(|e| e.refused.is_none())
        .filter_map(|e| Some((e.vni, e.ip, e.svc.as_ref()?)))
        .chain(
            st.endpoints
                .iter()
                .filter_map(|e| Some((e.vni, e.ip, e.svc.as_ref()?))),
        )
}

/// Reprograms on every gossip change, local change, and once a second (the
/// adoption grace of a restarted agent ends on a timer).
pub async fn sync_loop(agent: Arc<Agent>) {
    let mut watcher = agent.gossip.watcher().await;
    loop {
        if let Err(e) = agent.resync().await {
            warn!("reprogramming remote endpoints failed: {e:#}");
        }
        tokio::select! {
            r = watcher.changed() => if r.is_err() { return },
            _ = agent.changed.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

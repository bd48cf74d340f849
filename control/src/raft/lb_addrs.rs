//! Each node's balancer address on each network it has tasks on: the
//! address of its load-balancing namespace (`lb_<network>`) when the node
//! balances with IPVS, which SNATs balanced connections to it so replies
//! come back through it (Docker allocates the same per node and network).
//!
//! Allocated while a task is assigned to a node (or a container attached
//! there), deterministically like
//! every address (the lowest free one); freed with the node or network.
//! On the ingress network every node has one from the moment it joins (or
//! the network is made), kept without tasks: its ingress sandbox, from
//! which local processes reach published ports (`agent/mesh_local.rs`).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use super::state::{put, Change, ClusterState};
use crate::wire::LbAddr;

/// The record's key inside `ClusterState::lb_addrs` (and after `lbaddr/`
/// in the store).
pub fn key(network_id: &str, node_id: &str) -> String {
    format!("{network_id}/{node_id}")
}

impl ClusterState {
    pub fn lb_addr(&self, network_id: &str, node_id: &str) -> Option<Ipv4Addr> {
        self.lb_addrs.get(&key(network_id, node_id)).map(|a| a.addr)
    }

    /// Gives `node_id` an address on each of `network_ids` it lacks one on.
    /// A full network gets none: the task still runs, only IPVS balancing
    /// on that node cannot.
    pub(super) fn ensure_lb_addrs(&mut self, node_id: &str, network_ids: &[String]) -> Vec<Change> {
        let mut changes = vec![];
        for nid in network_ids {
            let k = key(nid, node_id);
            if self.lb_addrs.contains_key(&k) {
                continue;
            }
            let Some(addr) = self.free_addr(nid, &Default::default()) else {
                continue;
            };
            let rec = LbAddr {
                network_id: nid.clone(),
                node_id: node_id.into(),
                addr,
            };
            changes.push(put(format!("lbaddr/{k}"), &rec));
            self.lb_addrs.insert(k, rec);
        }
        changes
    }

    /// Gives each of `node_ids` its address on the ingress network, if the
    /// swarm has one.
    pub(super) fn ensure_ingress_addrs(&mut self, node_ids: &[String]) -> Vec<Change> {
        let Some(ingress) = self.ingress_id() else {
            return vec![];
        };
        node_ids
            .iter()
            .flat_map(|n| self.ensure_lb_addrs(n, std::slice::from_ref(&ingress)))
            .collect()
    }

    pub fn ingress_id(&self) -> Option<String> {
        self.networks
            .values()
            .find(|n| n.spec.ingress)
            .map(|n| n.id.clone())
    }

    /// Frees the addresses of nodes left with neither a task nor an
    /// attached container on a network (the ingress network's stay).
    pub(super) fn prune_lb_addrs(&mut self) -> Vec<Change> {
        if self.lb_addrs.is_empty() {
            return vec![];
        }
        let ingress = self.ingress_id();
        let in_use: BTreeSet<(&str, &str)> = self
            .tasks
            .values()
            .filter_map(|t| Some((t, t.node_id.as_deref()?)))
            .flat_map(|(t, n)| t.networks.iter().map(move |a| (a.network_id.as_str(), n)))
            .chain(
                self.attachments
                    .values()
                    .map(|a| (a.network_id.as_str(), a.node_id.as_str())),
            )
            .collect();
        let gone: BTreeSet<String> = self
            .lb_addrs
            .iter()
            .filter(|(_, a)| Some(&a.network_id) != ingress.as_ref())
            .filter(|(_, a)| !in_use.contains(&(a.network_id.as_str(), a.node_id.as_str())))
            .map(|(k, _)| k.clone())
            .collect();
        self.drop_lb_addrs(|a| gone.contains(&key(&a.network_id, &a.node_id)))
    }

    /// Frees the addresses `keep` rejects.
    pub(super) fn drop_lb_addrs(&mut self, gone: impl Fn(&LbAddr) -> bool) -> Vec<Change> {
        let keys: Vec<String> = self
            .lb_addrs
            .iter()
            .filter(|(_, a)| gone(a))
            .map(|(k, _)| k.clone())
            .collect();
        keys.into_iter()
            .map(|k| {
                self.lb_addrs.remove(&k);
                Change::Delete(format!("lbaddr/{k}"))
            })
            .collect()
    }
}

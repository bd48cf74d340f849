//! Overlay networks in the replicated state, and their address management.
//!
//! Allocation happens while a command is applied, deterministically, on
//! every manager alike: a network gets the first free subnet of the
//! cluster's pool (or the one asked for, if it overlaps nothing) and the
//! lowest free VNI from 4096; an address is the lowest free host address,
//! where "used" is derived from the records that exist (gateway, service
//! VIPs, task addresses, node balancer addresses, attached containers). Removing a record frees its addresses; an address
//! is never handed out twice because it is only free when no record holds it.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::state::ClusterState;
use super::state::{err, put, Change};
use crate::wire::WireError;
use crate::wire::{AddrPool, NetworkRecord, NetworkSpec};
use crate::wire::{Command, CommandResult};

/// The first VNI Shoal gives a network (Docker's overlay VNIs start here).
pub const VNI_BASE: u32 = 4096;
/// Docker's ingress network.
pub const INGRESS_SUBNET: &str = "10.0.0.0/24";

impl ClusterState {
    pub fn network_by_key(&self, key: &str) -> Option<&NetworkRecord> {
        super::state::find_by_key(&self.networks, key, |n| (&n.id, &n.spec.name))
    }

    /// Every address of `network_id` some record holds.
    pub fn used_addrs(&self, network_id: &str) -> BTreeSet<Ipv4Addr> {
        let mut used = BTreeSet::new();
        if let Some(n) = self.networks.get(network_id) {
            used.insert(n.gateway);
        }
        for s in self.services.values() {
            used.extend(
                s.vips
                    .iter()
                    .filter(|v| v.network_id == network_id)
                    .map(|v| v.addr),
            );
        }
        for t in self.tasks.values() {
            used.extend(
                t.networks
                    .iter()
                    .filter(|a| a.network_id == network_id)
                    .map(|a| a.addr),
            );
        }
        used.extend(
            self.lb_addrs
                .values()
                .filter(|a| a.network_id == network_id)
                .map(|a| a.addr),
        );
        used.extend(
            self.attachments
                .values()
                .filter(|a| a.network_id == network_id)
                .map(|a| a.addr),
        );
        used
    }

    /// The lowest free host address of a network (None: exhausted).
    pub fn free_addr(&self, network_id: &str, also_used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        let n = self.networks.get(network_id)?;
        let used = self.used_addrs(network_id);
        n.subnet
            .hosts()
            .find(|a| !used.contains(a) && !also_used.contains(a))
    }

    /// How many host addresses of the network nothing uses: what task
    /// allocations can still take (the orchestrator creates no more tasks
    /// than that, `orchestrator::plan`).
    pub fn free_addr_count(&self, network_id: &str) -> usize {
        let Some(n) = self.networks.get(network_id) else {
            return 0;
        };
        let mut hosts = n.subnet.hosts();
        let Some(first) = hosts.next() else { return 0 };
        let last = hosts.next_back().unwrap_or(first);
        let range = u32::from(first)..=u32::from(last);
        let used = self
            .used_addrs(network_id)
            .iter()
            .filter(|a| range.contains(&u32::from(**a)))
            .count();
        (range.end() - range.start() + 1) as usize - used
    }

    /// Allocates a network from `spec`: checks and picks subnet, gateway
    /// and VNI. Err is the refusal's text.
    pub fn allocate_network(
        &self,
        id: &str,
        spec: &NetworkSpec,
        pool: &AddrPool,
    ) -> Result<NetworkRecord, WireError> {
        if spec.name.is_empty()
            || spec.name.len() > 64
            || !spec
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return Err(WireError::invalid(format!(
                "invalid network name {:?}",
                spec.name
            )));
        }
        if self.networks.values().any(|n| n.spec.name == spec.name) {
            return Err(WireError::conflict(format!(
                "network with name {} already exists",
                spec.name
            )));
        }
        if spec.ingress && self.networks.values().any(|n| n.spec.ingress) {
            return Err(WireError::conflict("an ingress network already exists"));
        }
        let overlaps = |s: &Ipv4Net| {
            self.networks
                .values()
                .find(|n| n.subnet.contains(&s.network()) || s.contains(&n.subnet.network()))
        };
        let subnet = match spec.subnet {
            Some(s) => {
                let s = s.trunc();
                if s.prefix_len() > 29 {
                    return Err(WireError::invalid(format!(
                        "subnet {s} is too small (at most /29)"
                    )));
                }
                if let Some(n) = overlaps(&s) {
                    return Err(WireError::conflict(format!(
                        "subnet {s} overlaps network {} ({})",
                        n.spec.name, n.subnet
                    )));
                }
                s
            }
            None => pool
                .base
                .subnets(pool.mask_len)
                .map_err(|e| WireError::invalid(format!("address pool: {e}")))?
                .find(|s| overlaps(s).is_none())
                .ok_or_else(|| {
                    WireError::conflict(format!("the address pool {} is exhausted", pool.base))
                })?,
        };
        let gateway = match spec.gateway {
            Some(g) => {
                if !subnet.contains(&g) || g == subnet.network() || g == subnet.broadcast() {
                    return Err(WireError::invalid(format!(
                        "gateway {g} is not a host address of {subnet}"
                    )));
                }
                g
            }
            None => subnet
                .hosts()
                .next()
                .ok_or_else(|| WireError::invalid("subnet has no hosts"))?,
        };
        let used: BTreeSet<u32> = self.networks.values().map(|n| n.vni).collect();
        let vni = (VNI_BASE..(1 << 24))
            .find(|v| !used.contains(v))
            .ok_or_else(|| WireError::conflict("no VNI left"))?;
        Ok(NetworkRecord {
            id: id.to_string(),
            spec: spec.clone(),
            subnet,
            gateway,
            vni,
            created_at: 0,
            version: 0,
        })
    }
}

impl ClusterState {
    /// Applies a network command (see `ClusterState::apply`).
    pub(super) fn apply_network(
        &mut self,
        index: u64,
        cmd: Command,
    ) -> (CommandResult, Vec<Change>) {
        match cmd {
            Command::NetworkCreate { id, spec, now } => {
                let pool = self
                    .cluster
                    .as_ref()
                    .map(|c| c.pool.clone())
                    .unwrap_or_default();
                match self.allocate_network(&id, &spec, &pool) {
                    Ok(mut n) => {
                        n.created_at = now;
                        n.version = index;
                        self.networks.insert(id.clone(), n.clone());
                        let mut changes = vec![put(format!("network/{id}"), &n)];
                        if n.spec.ingress {
                            let nodes: Vec<String> = self.nodes.keys().cloned().collect();
                            changes.extend(self.ensure_ingress_addrs(&nodes));
                        }
                        (CommandResult::Network(n), changes)
                    }
                    Err(e) => err(e),
                }
            }
            Command::NetworkRemove { id } => {
                let Some(n) = self.networks.get(&id).cloned() else {
                    return err(WireError::not_found(format!("network {id} not found")));
                };
                if let Some(s) = self.services.values().find(|s| s.network_ids.contains(&id)) {
                    return err(WireError::conflict(format!(
                        "network {} is in use by service {}",
                        n.spec.name, s.spec.name
                    )));
                }
                if self
                    .tasks
                    .values()
                    .any(|t| t.networks.iter().any(|a| a.network_id == id))
                {
                    return err(WireError::conflict(format!(
                        "network {} still has tasks attached",
                        n.spec.name
                    )));
                }
                if let Some(a) = self.attachments.values().find(|a| a.network_id == id) {
                    return err(WireError::conflict(format!(
                        "network {} still has containers attached ({} on node {})",
                        n.spec.name,
                        if a.name.is_empty() {
                            &a.container_id
                        } else {
                            &a.name
                        },
                        a.node_id
                    )));
                }
                self.networks.remove(&id);
                let mut changes = vec![Change::Delete(format!("network/{id}"))];
                changes.extend(self.drop_lb_addrs(|a| a.network_id == id));
                (CommandResult::Network(n), changes)
            }
            other => unreachable!("not a network command: {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, subnet: Option<&str>) -> NetworkSpec {
        NetworkSpec {
            name: name.into(),
            subnet: subnet.map(|s| s.parse().unwrap()),
            ..Default::default()
        }
    }

    #[test]
    fn subnets_from_the_pool_vnis_from_4096_and_overlaps_refused() {
        let mut st = ClusterState::default();
        let pool = AddrPool::default();
        let ing = st
            .allocate_network("i", &spec("ingress", Some(INGRESS_SUBNET)), &pool)
            .unwrap();
        assert_eq!((ing.vni, ing.gateway), (4096, "10.0.0.1".parse().unwrap()));
        st.networks.insert("i".into(), ing);
        let a = st
            .allocate_network("a", &spec("appnet", None), &pool)
            .unwrap();
        assert_eq!((a.subnet.to_string(), a.vni), ("10.0.1.0/24".into(), 4097));
        st.networks.insert("a".into(), a);
        assert!(st
            .allocate_network("b", &spec("appnet", None), &pool)
            .unwrap_err()
            .message
            .contains("already exists"));
        assert!(st
            .allocate_network("b", &spec("x", Some("10.0.1.128/25")), &pool)
            .unwrap_err()
            .message
            .contains("overlaps"));
        assert!(st
            .allocate_network("b", &spec("bad name", None), &pool)
            .is_err());
        let addr = st.free_addr("a", &BTreeSet::new()).unwrap();
        assert_eq!(addr, "10.0.1.2".parse::<Ipv4Addr>().unwrap());
    }
}

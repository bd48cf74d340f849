//! This node's part of the ingress routing mesh (`ebpf/c/include/mesh.h`,
//! docs/mesh.md). Every node, with or without tasks of a service, accepts
//! its published ports: so every node defines the ingress network from the
//! first heartbeat on (no lazy join for it), balances the ingress VIPs
//! (their Maglev tables, from gossip like any VIP), and holds the published
//! ports that the leader sends with each heartbeat.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use shoal_dataplane::lb::{MeshMaps, MeshPort};
use shoal_dataplane::netns::NetNs;
use shoal_dataplane::overlay::{self, ip_key, Overlay};
use tracing::{info, warn};

use crate::wire::LocalPort;
use crate::wire::MeshConfig;
use crate::wire::Protocol;
use crate::wire::{EndpointCreate, NetworkCreate};

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

/// Interfaces of the node Shoal made itself: the host sides of task and
/// sandbox veths (`sh` and 8 hex digits, endpoint::host_if_name).
fn shoal_made(name: &str) -> bool {
    name.starts_with("shoal")
        || (name.len() == 10
            && name.starts_with("sh")
            && name[2..].chars().all(|c| c.is_ascii_hexdigit()))
}

/// Where published ports answer besides the advertise address: every other
/// IPv4 address of the node on an Ethernet interface (the underlay
/// device's and others', not Shoal's own veths'; the mesh's programs parse
/// Ethernet frames, so loopback and L3 tunnels such as WireGuard are left
/// to the local relay), each with its interface.
pub fn node_addrs(advertise: std::net::Ipv4Addr) -> BTreeMap<std::net::Ipv4Addr, String> {
    const ARPHRD_ETHER: u16 = 1;
    let Ok(all) = nix::ifaddrs::getifaddrs() else {
        return BTreeMap::new();
    };
    let all: Vec<_> = all.collect();
    let ethernet: BTreeSet<&str> = all
        .iter()
        .filter(|a| {
            a.address
                .and_then(|s| s.as_link_addr().map(|l| l.hatype() == ARPHRD_ETHER))
                .unwrap_or(false)
        })
        .map(|a| a.interface_name.as_str())
        .collect();
    all.iter()
        .filter(|a| ethernet.contains(a.interface_name.as_str()) && !shoal_made(&a.interface_name))
        .filter_map(|a| Some((a.address?.as_sockaddr_in()?.ip(), a.interface_name.clone())))
        .filter(|(ip, _)| *ip != advertise)
        .collect()
}

/// The interfaces besides the underlay where the mesh's entry is hooked,
/// each with the ifindex it had then (a device deleted and made again
/// under the same name is hooked again), and those that could not be
/// hooked, with the error last reported (retried every pass, reported
/// again only when the error changes).
#[derive(Default)]
pub struct MeshIfaces {
    hooked: BTreeMap<String, u32>,
    failed: BTreeMap<String, String>,
}

/// Keeps the datapath's extra mesh addresses equal to the node's (checked
/// on every sync pass, so an address added or removed is followed), and
/// the underlay hook on every other interface that holds one, so a client
/// arriving there is meshed with its address kept like one on the
/// underlay (the hook passes everything else on).
pub fn program_addrs(
    maps: &mut MeshMaps,
    overlay: &mut Overlay,
    ifaces: &mut MeshIfaces,
    underlay: &str,
    advertise: std::net::Ipv4Addr,
) {
    let ifindex = |dev: &str| nix::net::if_::if_nametoindex(dev).ok();
    let addrs = node_addrs(advertise);
    let others: BTreeMap<String, u32> = addrs
        .values()
        .filter(|dev| *dev != underlay)
        .filter_map(|dev| Some((dev.clone(), ifindex(dev)?)))
        .collect();
    // Gone, or made again (its hook went with the old device; the stale
    // pin must not be reused for the new one).
    ifaces.hooked.retain(|dev, idx| {
        let keep = others.get(dev) == Some(idx);
        if !keep {
            overlay::detach(overlay.pin_dir(), dev);
        }
        keep
    });
    ifaces.failed.retain(|dev, _| others.contains_key(dev));
    for (dev, idx) in &others {
        if ifaces.hooked.contains_key(dev) {
            continue;
        }
        match overlay.attach_mesh_entry(dev) {
            Ok(()) => {
                info!(dev, "published ports answer on this interface too");
                ifaces.hooked.insert(dev.clone(), *idx);
                ifaces.failed.remove(dev);
            }
            Err(e) => {
                let e = e.to_string();
                if ifaces.failed.get(dev) != Some(&e) {
                    warn!(dev, "routing mesh: {e} (retried every pass)");
                }
                ifaces.failed.insert(dev.clone(), e);
            }
        }
    }
    let want: BTreeMap<_, _> = addrs
        .into_iter()
        .filter_map(|(ip, dev)| Some((ip, ifindex(&dev)?)))
        .collect();
    if want == maps.addrs() {
        return;
    }
    match maps.set_addrs(&want) {
        Ok(()) => info!(?want, "published ports also answer on these addresses"),
        Err(e) => warn!("routing mesh: {e}"),
    }
}

/// The ingress sandbox's endpoint (and, with the task prefix, namespace).
pub const SANDBOX: &str = "ingress-sbox";

/// The relays local processes need: ingress ports from the sandbox at
/// `sandbox_ns` to the service's VIP, host-mode ports from their task's
/// namespace (`task_ns` of its address) to its loopback.
pub fn local_ports(
    m: &MeshConfig,
    sandbox_ns: Option<&str>,
    host: &BTreeSet<MeshPort>,
    task_ns: impl Fn(std::net::Ipv4Addr) -> Option<String>,
) -> Vec<LocalPort> {
    let ingress = sandbox_ns.into_iter().flat_map(|ns| {
        m.ports.iter().map(move |p| LocalPort {
            proto: proto(p.protocol),
            published: p.published,
            upstream: std::net::SocketAddrV4::new(p.vip, p.target),
            netns: ns.to_string(),
        })
    });
    let host = host.iter().filter_map(|p| {
        Some(LocalPort {
            proto: p.proto,
            published: p.published,
            upstream: std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, p.target),
            netns: task_ns(p.addr)?,
        })
    });
    ingress.chain(host).collect()
}

impl super::Agent {
    /// The ingress sandbox exists while the swarm publishes ports in
    /// ingress mode and the leader gave this node its address (whatever
    /// the balancer: the ingress VIPs are always eBPF's); it goes
    /// otherwise. Returns its namespace path.
    pub async fn sync_ingress_sandbox(&self) -> Option<String> {
        let (want, have) = {
            let inner = self.inner.lock().await;
            let want = inner.mesh.as_ref().and_then(|m| {
                let net = m.ingress.as_ref()?;
                (!m.ports.is_empty()).then_some((net.clone(), m.local_addr?))
            });
            let have = inner
                .state
                .endpoints
                .iter()
                .find(|e| e.name == SANDBOX)
                .cloned();
            (want, have)
        };
        match (want, have) {
            (Some((net, addr)), Some(ep)) if ep.network == net.name && ep.ip == addr => {
                Some(ep.netns)
            }
            (want, have) => {
                if let Some(ep) = have {
                    let _ = self.remove_endpoint(&ep.name).await;
                    let _ = NetNs::delete(&format!("{}{SANDBOX}", self.task_netns_prefix));
                    info!(addr = %ep.ip, "ingress sandbox removed");
                }
                let (net, addr) = want?;
                let ns = format!("{}{SANDBOX}", self.task_netns_prefix);
                if let Err(e) = NetNs::open_or_create(&ns) {
                    warn!("ingress sandbox: {e:#}");
                    return None;
                }
                let r = self
                    .create_endpoint(EndpointCreate {
                        network: net.name.clone(),
                        ip: format!("{addr}/{}", net.subnet.prefix_len()),
                        mac: None,
                        netns: Some(NetNs::path_of(&ns).to_string_lossy().into_owned()),
                        name: Some(SANDBOX.into()),
                        ifname: None,
                        svc: None,
                        default_route: None,
                        ..Default::default()
                    })
                    .await;
                match r {
                    Ok(ep) => {
                        info!(%addr, "ingress sandbox ready (local access to published ports)");
                        Some(ep.netns)
                    }
                    Err(e) => {
                        warn!("ingress sandbox endpoint: {e:#}");
                        let _ = NetNs::delete(&ns);
                        None
                    }
                }
            }
        }
    }

    /// The leader's mesh configuration, from a heartbeat reply.
    pub async fn set_mesh(&self, m: MeshConfig) -> Result<()> {
        self.leave_replaced_ingress(m.ingress.as_ref()).await;
        if let Some(net) = &m.ingress {
            let join = || NetworkCreate {
                name: net.name.clone(),
                vni: net.vni,
                subnet: net.subnet.to_string(),
                gateway: Some(net.gateway),
                encrypted: net.encrypted,
            };
            if let Err(e) = self.join_network(join()).await {
                if crate::wire::WireError::kind_of(e.as_ref()) != crate::wire::ErrorKind::Conflict {
                    return Err(e);
                }
                // Defined here otherwise: the ingress network was replaced
                // by one of the same name while this daemon was down.
                self.leave_ingress(&net.name).await;
                self.join_network(join()).await?;
            }
        }
        let mut inner = self.inner.lock().await;
        if let Some(n) = &m.ingress {
            // Replies come back to this node over the ingress network even
            // when no task of it runs here (an encrypted one stays
            // encrypted: never in clear for want of a local task).
            let flags = match n.encrypted {
                true => shoal_dataplane::ebpf::VNI_F_ENCRYPTED,
                false => 0,
            };
            inner.maps.add_vni(n.vni, flags)?;
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

    /// After `network rm ingress` and `network create --ingress ...`: this
    /// node leaves the old ingress network, so the new one may reuse the
    /// name or subnet.
    async fn leave_replaced_ingress(&self, new: Option<&crate::wire::IngressNet>) {
        let old = {
            let inner = self.inner.lock().await;
            inner.mesh.as_ref().and_then(|m| m.ingress.clone())
        };
        if let Some(old) = old.filter(|o| Some(o) != new) {
            self.leave_ingress(&old.name).await;
        }
    }

    /// Drops a former ingress network here: its sandbox, its local
    /// definition, its VNI.
    async fn leave_ingress(&self, name: &str) {
        let Some(old) = self.networks().await.into_iter().find(|n| n.name == name) else {
            return;
        };
        let sandbox = self
            .endpoints()
            .await
            .into_iter()
            .find(|e| e.name == SANDBOX && e.network == old.name);
        if sandbox.is_some() {
            let _ = self.remove_endpoint(SANDBOX).await;
            let _ = NetNs::delete(&format!("{}{SANDBOX}", self.task_netns_prefix));
        }
        if let Err(e) = self.remove_network(&old.name).await {
            warn!(network = %old.name, "leaving the replaced ingress network: {e:#}");
        }
        if let Err(e) = self.inner.lock().await.maps.remove_vni(old.vni) {
            warn!(vni = old.vni, "leaving the replaced ingress network: {e:#}");
        }
        info!(network = %old.name, vni = old.vni, "left the replaced ingress network");
    }

    /// The ingress network (name, VNI), if the swarm has one.
    pub async fn ingress(&self) -> Option<(String, u32)> {
        self.inner
            .lock()
            .await
            .mesh
            .as_ref()
            .and_then(|m| m.ingress.as_ref())
            .map(|n| (n.name.clone(), n.vni))
    }

    pub async fn ingress_name(&self) -> Option<String> {
        self.ingress().await.map(|(name, _)| name)
    }
}

#[cfg(test)]
mod tests {
    use super::{node_addrs, shoal_made};

    #[test]
    fn the_nodes_addresses_leave_out_loopback_shoals_veths_and_the_advertise_address() {
        assert!(shoal_made("sh1ac4e5f6") && shoal_made("shoal-ipvs"));
        assert!(!shoal_made("eth0") && !shoal_made("sh") && !shoal_made("shelf12345"));
        let all = node_addrs(std::net::Ipv4Addr::UNSPECIFIED);
        assert!(
            all.values().all(|dev| dev != "lo" && !shoal_made(dev)),
            "{all:?}"
        );
        if let Some((ip, _)) = all.iter().next() {
            assert!(!node_addrs(*ip).contains_key(ip));
        }
    }
}

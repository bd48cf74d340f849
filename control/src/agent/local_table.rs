//! This node's local table: its networks and endpoints (the API's
//! network and endpoint handlers land here), kept in the store and plumbed
//! into veths and the dataplane's maps. What the table spreads to (gossip,
//! DNS, the balancers) is `service.rs`'s.

use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use shoal_dataplane::ebpf::{
    EpValue, IfaceValue, EP_F_CLEAR, EP_F_LOCAL, EP_F_VIP_CLIENT, IFACE_F_CLEAR,
};
use shoal_dataplane::netlink::{format_mac, mac_from_ip, parse_mac};
use shoal_dataplane::netns::NetNs;
use shoal_dataplane::overlay::{self, ip_key};
use tracing::{info, warn};

use super::endpoint;
use super::store::State;
use super::{Agent, Inner};
use crate::gossip::table;
use crate::wire::EpRecord;
use crate::wire::{Endpoint, EndpointCreate, Network, NetworkCreate};

fn valid_name(kind: &str, name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        || name.starts_with('-')
    {
        crate::fail!(
            Invalid,
            "invalid {kind} name {name:?}: use 1-64 letters, digits, '-', '_' or '.'"
        );
    }
    Ok(())
}

/// An endpoint's gossip record.
pub(crate) fn ep_record(e: &Endpoint) -> EpRecord {
    EpRecord {
        mac: e.mac.clone(),
        net: e.network.clone(),
        since: e.since,
        svc: e.svc.clone(),
        container: e.container.as_ref().map(|c| c.name.clone()),
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
    /// Re-plumbs and re-programs the endpoints of a previous run. Nothing
    /// is re-created that still exists, so established flows survive.
    pub async fn restore(&self, st: State) {
        let mut inner = self.inner.lock().await;
        inner.state.networks = st.networks.clone();
        for ep in st.endpoints {
            // A runtime-moved interface that is gone is not made again: its
            // container went while the agent was down.
            if ep.external && matches!(self.nl.link_index(&ep.host_if).await, Ok(None)) {
                warn!(endpoint = %ep.name, "its container is gone, dropping it");
                continue;
            }
            match self.plumb(&mut inner, &ep).await {
                Ok(()) => inner.state.endpoints.push(ep),
                Err(e) => warn!(endpoint = %ep.name, "cannot restore endpoint, dropping it: {e:#}"),
            }
        }
        // The dropped endpoints must not come back at the next start; if
        // the file cannot be written they will be tried (and dropped) again.
        if let Err(e) = inner.store.save(&inner.state) {
            warn!("cannot save the local table after restoring it: {e:#}");
        }
        info!(
            endpoints = inner.state.endpoints.len(),
            "local endpoints restored"
        );
    }

    pub async fn networks(&self) -> Vec<Network> {
        self.inner.lock().await.state.networks.clone()
    }

    pub async fn create_network(&self, req: NetworkCreate) -> Result<Network> {
        valid_name("network", &req.name)?;
        if req.vni == 0 || req.vni > 0xff_ffff {
            crate::fail!(Invalid, "VNI {} out of range (1-16777215)", req.vni);
        }
        let subnet: ipnet::Ipv4Net = req.subnet.parse().map_err(|_| {
            crate::wire_err!(
                Invalid,
                "bad subnet {:?} (want CIDR, e.g. 10.0.1.0/24)",
                req.subnet
            )
        })?;
        if subnet.trunc() != subnet {
            crate::fail!(
                Invalid,
                "subnet {subnet} has host bits set (did you mean {}?)",
                subnet.trunc()
            );
        }
        if subnet.prefix_len() > 30 {
            crate::fail!(Invalid, "subnet {subnet} is too small (at most /30)");
        }
        let gateway = req
            .gateway
            .unwrap_or_else(|| subnet.hosts().next().expect("a /30 has hosts"));
        if !subnet.contains(&gateway)
            || gateway == subnet.network()
            || gateway == subnet.broadcast()
        {
            crate::fail!(
                Invalid,
                "gateway {gateway} is not a host address of {subnet}"
            );
        }
        let mut inner = self.inner.lock().await;
        for n in &inner.state.networks {
            if n.name == req.name {
                crate::fail!(Conflict, "network {} already exists", n.name);
            }
            if n.vni == req.vni {
                crate::fail!(
                    Conflict,
                    "VNI {} is already used by network {}",
                    n.vni,
                    n.name
                );
            }
            if n.subnet.contains(&subnet.network()) || subnet.contains(&n.subnet.network()) {
                crate::fail!(
                    Conflict,
                    "subnet {subnet} overlaps network {} ({})",
                    n.name,
                    n.subnet
                );
            }
        }
        if req.encrypted {
            self.can_encrypt()?;
        }
        let net = Network {
            name: req.name,
            vni: req.vni,
            subnet,
            gateway,
            encrypted: req.encrypted,
        };
        inner.state.networks.push(net.clone());
        inner.store.save(&inner.state)?;
        info!(network = %net.name, vni = net.vni, subnet = %net.subnet, "network added");
        Ok(net)
    }

    /// Defines a network on this node unless it is (lazy join). Tasks
    /// starting at once may race to define it: the loser finds it there.
    pub async fn join_network(&self, req: NetworkCreate) -> Result<()> {
        let (name, vni) = (req.name.clone(), req.vni);
        let have = |nets: Vec<Network>| nets.into_iter().find(|n| n.name == name);
        let encrypted = req.encrypted;
        let check = |n: Network| {
            if n.vni == vni && n.encrypted == encrypted {
                Ok(())
            } else {
                Err(crate::wire_err!(
                    Conflict,
                    "network {} is defined on this node with VNI {}{}, not {vni}{}",
                    n.name,
                    n.vni,
                    if n.encrypted { " (encrypted)" } else { "" },
                    if encrypted { " (encrypted)" } else { "" },
                ))
            }
        };
        if let Some(n) = have(self.networks().await) {
            return Ok(check(n)?);
        }
        match self.create_network(req).await {
            Ok(_) => Ok(()),
            Err(e) => match have(self.networks().await) {
                Some(n) => Ok(check(n)?),
                None => Err(e),
            },
        }
    }

    pub async fn remove_network(&self, name: &str) -> Result<Network> {
        let mut inner = self.inner.lock().await;
        let Some(pos) = inner.state.networks.iter().position(|n| n.name == name) else {
            crate::fail!(NotFound, "no network named {name:?}");
        };
        let users: Vec<&str> = inner
            .state
            .endpoints
            .iter()
            .filter(|e| e.network == name)
            .map(|e| e.name.as_str())
            .collect();
        if !users.is_empty() {
            crate::fail!(
                Conflict,
                "network {name} is in use by endpoints {}",
                users.join(", ")
            );
        }
        let net = inner.state.networks.remove(pos);
        inner.store.save(&inner.state)?;
        Ok(net)
    }

    pub async fn endpoints(&self) -> Vec<Endpoint> {
        self.inner.lock().await.state.endpoints.clone()
    }

    /// Validates everything before touching the kernel, so a refused
    /// request changes nothing.
    pub async fn create_endpoint(&self, req: EndpointCreate) -> Result<Endpoint> {
        let mut inner = self.inner.lock().await;
        let net = inner
            .state
            .networks
            .iter()
            .find(|n| n.name == req.network)
            .cloned()
            .with_context(|| {
                format!(
                    "no network named {:?} (create it with `shoal debug network add`)",
                    req.network
                )
            })?;
        let (ip, prefix) = match req.ip.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (req.ip.as_str(), None),
        };
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| crate::wire_err!(Invalid, "bad IP address {:?}", req.ip))?;
        let prefix_len = match prefix {
            Some(p) => p
                .parse::<u8>()
                .map_err(|_| crate::wire_err!(Invalid, "bad prefix length in {:?}", req.ip))?,
            None => net.subnet.prefix_len(),
        };
        if prefix_len != net.subnet.prefix_len() {
            crate::fail!(
                Invalid,
                "{} does not have the prefix of network {} ({})",
                req.ip,
                net.name,
                net.subnet
            );
        }
        if !net.subnet.contains(&ip) {
            crate::fail!(
                Invalid,
                "{ip} is outside network {}'s subnet {}",
                net.name,
                net.subnet
            );
        }
        if ip == net.subnet.network() || ip == net.subnet.broadcast() || ip == net.gateway {
            crate::fail!(
                Invalid,
                "{ip} is the network, broadcast or gateway address of {}",
                net.subnet
            );
        }
        if let Some(e) = inner
            .state
            .endpoints
            .iter()
            .find(|e| e.vni == net.vni && e.ip == ip)
        {
            crate::fail!(
                Conflict,
                "{ip} is already used on network {} by endpoint {}",
                net.name,
                e.name
            );
        }
        if let Some(e) = inner
            .programmer
            .last
            .entries
            .iter()
            .find(|e| e.vni == net.vni && e.ip == ip)
        {
            crate::fail!(
                Conflict,
                "{ip} is already used on network {} by an endpoint of node {}",
                net.name,
                e.node
            );
        }
        let mac = match &req.mac {
            Some(m) => parse_mac(m)?,
            None => mac_from_ip(ip),
        };
        let name = req
            .name
            .clone()
            .unwrap_or_else(|| format!("ep-{}-{}", net.name, ip).replace('.', "-"));
        valid_name("endpoint", &name)?;
        if inner.state.endpoints.iter().any(|e| e.name == name) {
            crate::fail!(Conflict, "an endpoint named {name} already exists");
        }
        let (netns, owns_netns) = match &req.netns {
            // Docker's sandbox may not exist yet: it moves the peer later.
            Some(path) if req.external => (path.clone(), false),
            Some(path) => {
                std::fs::File::open(path)
                    .map_err(|e| anyhow::anyhow!("cannot open network namespace {path}: {e}"))?;
                (path.clone(), false)
            }
            None => {
                let existed = NetNs::exists(&name);
                NetNs::open_or_create(&name)?;
                (
                    NetNs::path_of(&name).to_string_lossy().into_owned(),
                    !existed,
                )
            }
        };
        let ep = Endpoint {
            host_if: endpoint::host_if_name(&net.name, ip),
            name,
            network: net.name.clone(),
            vni: net.vni,
            ip,
            prefix_len,
            mac: format_mac(&mac),
            netns,
            owns_netns,
            node: self.info.node.clone(),
            ifname: req
                .ifname
                .clone()
                .unwrap_or_else(|| crate::wire::EP_IFNAME.to_string()),
            svc: req.svc.clone(),
            default_route: req.default_route,
            since: crate::clock::now_ms(),
            container: req.container.clone(),
            external: req.external,
        };
        if let Err(e) = self.plumb(&mut inner, &ep).await {
            self.unplumb(&mut inner, &ep).await;
            return Err(e);
        }
        inner.state.endpoints.push(ep.clone());
        inner.store.save(&inner.state)?;
        drop(inner);
        self.gossip.publish(ep.vni, ep.ip, &ep_record(&ep)).await;
        self.changed.notify_one();
        info!(endpoint = %ep.name, ip = %ep.ip, network = %ep.network, "endpoint created");
        Ok(ep)
    }

    pub async fn remove_endpoint(&self, name: &str) -> Result<Endpoint> {
        let mut inner = self.inner.lock().await;
        let Some(pos) = inner.state.endpoints.iter().position(|e| e.name == name) else {
            crate::fail!(NotFound, "no endpoint named {name:?}");
        };
        let ep = inner.state.endpoints.remove(pos);
        inner.store.save(&inner.state)?;
        self.gossip.withdraw(ep.vni, ep.ip).await;
        self.unplumb(&mut inner, &ep).await;
        drop(inner);
        self.changed.notify_one();
        info!(endpoint = %ep.name, "endpoint removed");
        Ok(ep)
    }

    /// Names the container behind a local endpoint after the fact (Docker
    /// tells its driver the name only through its own API): kept, and
    /// gossiped again so that every node's DNS answers it.
    pub async fn name_container(&self, endpoint: &str, name: &str) -> Result<()> {
        valid_name("container", name)?;
        let mut inner = self.inner.lock().await;
        let Some(ep) = inner
            .state
            .endpoints
            .iter_mut()
            .find(|e| e.name == endpoint)
        else {
            crate::fail!(NotFound, "no endpoint named {endpoint:?}");
        };
        let Some(c) = ep.container.as_mut() else {
            crate::fail!(Invalid, "endpoint {endpoint} is not a container's");
        };
        c.name = name.to_string();
        let ep = ep.clone();
        inner.store.save(&inner.state)?;
        drop(inner);
        self.gossip.publish(ep.vni, ep.ip, &ep_record(&ep)).await;
        self.changed.notify_one();
        Ok(())
    }

    /// The MTU of an endpoint on `net`: ESP takes its room out of an
    /// encrypted network's packets.
    pub(super) fn endpoint_mtu(&self, net: &Network) -> u32 {
        match net.encrypted {
            true => self.mtu - shoal_dataplane::ipsec::OVERHEAD,
            false => self.mtu,
        }
    }

    /// Veth, namespace view, program and map entries of a local endpoint.
    async fn plumb(&self, inner: &mut Inner, ep: &Endpoint) -> Result<()> {
        let net = inner
            .state
            .networks
            .iter()
            .find(|n| n.name == ep.network)
            .cloned()
            .with_context(|| {
                format!("endpoint {} names unknown network {}", ep.name, ep.network)
            })?;
        let hooks = inner.overlay.hooks();
        let mtu = self.endpoint_mtu(&net);
        let p = endpoint::ensure(&self.nl, ep, &net, mtu, hooks).await?;
        inner.overlay.attach_endpoint(&ep.host_if)?;
        let mac = parse_mac(&ep.mac)?;
        // A clear network says so in both entries, so its frames skip the
        // network's entry on the way out and in; an encrypted one's never do.
        let (iface_flags, ep_flags) = match net.encrypted {
            true => (0, EP_F_LOCAL),
            false => (IFACE_F_CLEAR, EP_F_LOCAL | EP_F_CLEAR),
        };
        let ep_flags = ep_flags | vip_client_mark(inner.maps.endpoint(net.vni, ep.ip), p.existed);
        let slot = inner.maps.traffic_slot(p.host_ifindex, !p.existed)?;
        inner.maps.set_iface(
            p.host_ifindex,
            IfaceValue {
                vni: net.vni,
                ip: ip_key(ep.ip),
                gateway: ip_key(net.gateway),
                prefix_len: net.subnet.prefix_len() as u32,
                mac,
                host_mac: p.host_mac,
                flags: iface_flags,
                slot,
            },
        )?;
        inner.maps.upsert_endpoint(
            net.vni,
            ep.ip,
            EpValue {
                ifindex: p.host_ifindex,
                vtep: 0,
                mac,
                flags: ep_flags,
                slot,
            },
        )?;
        let flags = match net.encrypted {
            true => shoal_dataplane::ebpf::VNI_F_ENCRYPTED,
            false => 0,
        };
        inner.maps.add_vni(net.vni, flags)?;
        Ok(())
    }

    /// Best effort: removes whatever of the endpoint exists.
    async fn unplumb(&self, inner: &mut Inner, ep: &Endpoint) {
        if let Ok(Some(idx)) = self.nl.link_index(&ep.host_if).await {
            let _ = inner.maps.remove_iface(idx);
        }
        if inner
            .maps
            .endpoint(ep.vni, ep.ip)
            .is_some_and(|v| v.flags & EP_F_LOCAL != 0)
        {
            let _ = inner.maps.remove_endpoint(ep.vni, ep.ip);
        }
        // Leave the network's VNI when its last local endpoint goes.
        if !inner.state.endpoints.iter().any(|e| e.vni == ep.vni) {
            let _ = inner.maps.remove_vni(ep.vni);
        }
        overlay::detach(inner.overlay.pin_dir(), &ep.host_if);
        if let Err(e) = endpoint::remove(&self.nl, ep).await {
            warn!(endpoint = %ep.name, "cleanup: {e:#}");
        }
    }
}

/// The balancer's mark (`EP_F_VIP_CLIENT`: the endpoint opened a flow
/// through a VIP, so deliveries to it look for VIP replies) for an entry
/// about to be written. A re-plumbed endpoint (a restarted agent) keeps
/// its entry's mark, or the replies of its open VIP flows would lose their
/// VIP; one whose veth outlived its entry (a map an upgrade made anew) may
/// have such flows and is marked; a new one is not, until it opens one.
fn vip_client_mark(old: Option<EpValue>, veth_existed: bool) -> u16 {
    match old {
        Some(v) if v.flags & EP_F_LOCAL != 0 => v.flags & EP_F_VIP_CLIENT,
        _ if veth_existed => EP_F_VIP_CLIENT,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(flags: u16) -> Option<EpValue> {
        Some(EpValue {
            ifindex: 7,
            vtep: 0,
            mac: [2, 0, 0, 0, 0, 7],
            flags,
            slot: 1,
        })
    }

    #[test]
    fn a_re_plumbed_endpoint_keeps_the_balancer_s_mark_and_a_new_one_has_none() {
        let marked = EP_F_LOCAL | EP_F_CLEAR | EP_F_VIP_CLIENT;
        assert_eq!(vip_client_mark(entry(marked), true), EP_F_VIP_CLIENT);
        assert_eq!(vip_client_mark(entry(EP_F_LOCAL), true), 0);
        // Its entry gone with a remade map, its veth (and flows) still there.
        assert_eq!(vip_client_mark(None, true), EP_F_VIP_CLIENT);
        assert_eq!(vip_client_mark(None, false), 0);
        // Another node's entry for the address is not this endpoint's.
        let remote = shoal_dataplane::ebpf::EP_F_REMOTE | EP_F_VIP_CLIENT;
        assert_eq!(vip_client_mark(entry(remote), false), 0);
    }
}

//! Plumbing an endpoint: its network namespace, the veth pair that attaches
//! it to the node, and its Docker-like view of the network (address with the
//! subnet's prefix, default route via the gateway, MTU = underlay - 50).

use std::fs::File;
use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use shoal_dataplane::netlink::{self, Mac, Netlink};
use shoal_dataplane::netns::NetNs;

use crate::wire::EP_IFNAME;
use crate::wire::{Endpoint, Network};

/// What the dataplane needs to know about a plumbed endpoint.
pub struct Plumbed {
    pub host_ifindex: u32,
    pub host_mac: Mac,
    /// The veth was there already (a restarted agent re-plumbing it).
    pub existed: bool,
}

/// Host-side veth name: stable per endpoint (like Docker's vethXXXXXXX).
pub fn host_if_name(network: &str, ip: Ipv4Addr) -> String {
    // FNV-1a: tiny, stable across versions (std's hasher is not).
    let mut h: u32 = 0x811c_9dc5;
    for b in network.bytes().chain(ip.octets()) {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("sh{h:08x}")
}

/// Opens the endpoint's namespace file (a path).
fn open_ns(path: &str) -> Result<File> {
    File::open(path).with_context(|| format!("network namespace {path}"))
}

/// Creates the veth pair unless it exists (a restarted agent must not
/// re-create it: traffic would stop) and configures the inside.
pub async fn ensure(
    nl: &Netlink,
    ep: &Endpoint,
    net: &Network,
    mtu: u32,
    hooks: shoal_dataplane::overlay::Hooks,
) -> Result<Plumbed> {
    use shoal_dataplane::overlay::Hook;
    // XDP_REDIRECT into the veth (decap and mesh entry on an XDP underlay)
    // only delivers when the inside has GRO on; XDP at the endpoint
    // forwards raw frames, so the inside must finish its checksums.
    let (gro, finished_csums) = (
        hooks.underlay == Hook::Xdp || hooks.endpoint == Hook::Xdp,
        hooks.endpoint == Hook::Xdp,
    );
    let mac = netlink::parse_mac(&ep.mac)?;
    if ep.external {
        return ensure_external(nl, ep, mac, mtu).await;
    }
    let ns_file = open_ns(&ep.netns)?;
    let ns = NetNs::from_file(&ep.netns, ns_file);
    let existed = nl.link_index(&ep.host_if).await?.is_some();
    if !existed {
        nl.add_veth(&ep.host_if, &ep.ifname, Some(&ns), Some(mac), Some(mtu))
            .await
            .with_context(|| format!("veth for endpoint {}", ep.name))?;
    }
    let host_ifindex = nl.require_index(&ep.host_if).await?;
    nl.set_mtu(host_ifindex, mtu).await?;
    nl.set_up(host_ifindex).await?;
    let host_mac = nl.link_mac(&ep.host_if).await?;

    let inside = Netlink::connect_in(&ns)?;
    let idx = inside
        .require_index(&ep.ifname)
        .await
        .with_context(|| format!("{} of {}", ep.ifname, ep.name))?;
    inside.set_up(idx).await?;
    inside.add_addr(idx, ep.ip.into(), ep.prefix_len).await?;
    if ep.default_route.unwrap_or(ep.ifname == EP_IFNAME) {
        inside.add_default_route(net.gateway, idx).await?;
    } else {
        // Replies from this address leave by this network (the routing
        // mesh delivers clients from outside on the ingress network).
        inside
            .add_source_route(ep.ip, 100 + idx, net.gateway, idx)
            .await?;
    }
    let ifname = ep.ifname.clone();
    ns.run(move || -> Result<()> {
        // IPv4 only for now: keep the endpoint from chattering IPv6 (router
        // solicitations, DAD) into a dataplane that drops it.
        netlink::sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
        netlink::sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        if gro {
            netlink::set_gro(&ifname, true)?;
        }
        if finished_csums {
            netlink::set_tx_csum(&ifname, false)?;
        }
        Ok(())
    })??;
    Ok(Plumbed {
        host_ifindex,
        host_mac,
        existed,
    })
}

/// The host side of an endpoint whose inside a runtime configures (Docker
/// moves the peer into its sandbox and sets its address and routes): both
/// ends made here, the peer left for the runtime under `ep.ifname`.
async fn ensure_external(nl: &Netlink, ep: &Endpoint, mac: Mac, mtu: u32) -> Result<Plumbed> {
    let existed = nl.link_index(&ep.host_if).await?.is_some();
    if !existed {
        nl.add_veth(&ep.host_if, &ep.ifname, None, Some(mac), Some(mtu))
            .await
            .with_context(|| format!("veth for endpoint {}", ep.name))?;
        // Up before the runtime moves it: it keeps the state.
        let peer = nl.require_index(&ep.ifname).await?;
        nl.set_up(peer).await?;
    }
    let host_ifindex = nl.require_index(&ep.host_if).await?;
    nl.set_mtu(host_ifindex, mtu).await?;
    nl.set_up(host_ifindex).await?;
    let host_mac = nl.link_mac(&ep.host_if).await?;
    Ok(Plumbed {
        host_ifindex,
        host_mac,
        existed,
    })
}

/// Removes the veth pair, and the namespace when the agent created it.
pub async fn remove(nl: &Netlink, ep: &Endpoint) -> Result<()> {
    nl.del_link(&ep.host_if).await?;
    if ep.owns_netns {
        if let Some(name) = ep.netns.strip_prefix("/run/netns/") {
            NetNs::delete(name)?;
        }
    }
    Ok(())
}

//! Plumbing an endpoint: its network namespace, the veth pair that attaches
//! it to the node, and its Docker-like view of the network (address with the
//! subnet's prefix, default route via the gateway, MTU = underlay - 50).

use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use shoal_dataplane::netlink::{self, Mac, Netlink};
use shoal_dataplane::netns::NetNs;

use crate::table::{Endpoint, Network};

/// What the dataplane needs to know about a plumbed endpoint.
pub struct Plumbed {
    pub host_ifindex: u32,
    pub host_mac: Mac,
}

/// Name of the interface inside the endpoint's namespace, as in Docker.
pub const EP_IFNAME: &str = "eth0";

/// Creates the endpoint's namespace and veth pair unless they exist
/// (a restarted agent must not re-create them: traffic would stop).
pub async fn ensure(
    nl: &Netlink,
    ep: &Endpoint,
    net: &Network,
    mac: Mac,
    mtu: u32,
    behind_xdp: bool,
) -> Result<Plumbed> {
    let ns = NetNs::open_or_create(&ep.netns)
        .with_context(|| format!("namespace of endpoint {}", ep.name))?;
    if nl.link_index(&ep.host_if).await?.is_none() {
        nl.add_veth(&ep.host_if, EP_IFNAME, Some(&ns), Some(mac), Some(mtu))
            .await
            .with_context(|| format!("veth for endpoint {}", ep.name))?;
    }
    let host_ifindex = nl.require_index(&ep.host_if).await?;
    nl.set_mtu(host_ifindex, mtu).await?;
    nl.set_up(host_ifindex).await?;
    let host_mac = nl.link_mac(&ep.host_if).await?;

    let inside = Netlink::connect_in(&ns)?;
    let idx = inside
        .require_index(EP_IFNAME)
        .await
        .with_context(|| format!("{EP_IFNAME} of {}", ep.name))?;
    inside.set_up(idx).await?;
    inside.add_addr(idx, ep.ip.into(), net.prefix_len).await?;
    inside.add_default_route(net.gateway, idx).await?;
    // IPv4 only for now: keep the endpoint from chattering IPv6 (router
    // solicitations, DAD) into a dataplane that drops it.
    ns.run(move || -> Result<()> {
        netlink::sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
        netlink::sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        if behind_xdp {
            netlink::set_gro(EP_IFNAME, true)?;
            netlink::set_tx_csum(EP_IFNAME, false)?;
        }
        Ok(())
    })??;
    Ok(Plumbed {
        host_ifindex,
        host_mac,
    })
}

pub fn parse_ip_mac(ep: &Endpoint) -> Result<(Ipv4Addr, Mac)> {
    Ok((ep.ip, netlink::parse_mac(&ep.mac)?))
}

//! Links, addresses, routes and neighbours over rtnetlink, in the namespace
//! the connection was opened in.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::neighbour::{NeighbourAttribute, NeighbourExtFlags, NeighbourState};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::netns::NetNs;
use crate::Error;

/// A MAC address.
pub type Mac = [u8; 6];

pub fn format_mac(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn parse_mac(s: &str) -> Result<Mac, Error> {
    let parts: Vec<&str> = s.split(':').collect();
    let bad = || Error::Invalid(format!("bad MAC address {s:?} (want aa:bb:cc:dd:ee:ff)"));
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return Err(bad());
        }
        mac[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if mac[0] & 1 == 1 || mac == [0; 6] {
        return Err(Error::Invalid(format!("MAC {s} is not a unicast address")));
    }
    Ok(mac)
}

/// A locally administered unicast MAC derived from an IPv4 address, the
/// way Docker derives container MACs (02:42:a.b.c.d), so it is stable.
pub fn mac_from_ip(ip: Ipv4Addr) -> Mac {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// A rtnetlink connection bound to one network namespace.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// A connection in the calling thread's namespace. Needs a tokio runtime.
    pub fn connect() -> Result<Self, Error> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| Error::io("netlink socket".into(), e))?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// A connection inside `ns` (the socket is opened there, then used from here).
    pub fn connect_in(ns: &NetNs) -> Result<Self, Error> {
        let rt = tokio::runtime::Handle::current();
        let (conn, handle, _) = ns
            .run(move || {
                // The socket registers with this runtime's reactor.
                let _guard = rt.enter();
                rtnetlink::new_connection()
            })?
            .map_err(|e| Error::io(format!("netlink socket in {}", ns.name()), e))?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    async fn get_link(&self, name: &str) -> Result<Option<LinkMessage>, Error> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(l) => Ok(l),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
            Err(e) => Err(Error::netlink(format!("get link {name}"), e)),
        }
    }

    /// The id of the BPF program in the ingress filter of interface
    /// `index` at priority `prio` (Shoal's slot: `overlay::filter`), if any.
    pub async fn ingress_bpf_prog(&self, index: u32, prio: u16) -> Result<Option<u32>, Error> {
        use netlink_packet_route::tc::{TcAttribute, TcFilterBpfOption, TcOption};
        let mut filters = self
            .handle
            .traffic_filter(index as i32)
            .get()
            .ingress()
            .execute();
        while let Some(m) = filters
            .try_next()
            .await
            .map_err(|e| Error::netlink(format!("filters of interface {index}"), e))?
        {
            if m.header.info >> 16 != u32::from(prio) {
                continue;
            }
            let opts = m.attributes.iter().filter_map(|a| match a {
                TcAttribute::Options(o) => Some(o),
                _ => None,
            });
            for o in opts.flatten() {
                if let TcOption::Bpf(TcFilterBpfOption::ProgId(id)) = o {
                    return Ok(Some(*id));
                }
            }
        }
        Ok(None)
    }

    pub async fn link_index(&self, name: &str) -> Result<Option<u32>, Error> {
        Ok(self.get_link(name).await?.map(|l| l.header.index))
    }

    pub async fn require_index(&self, name: &str) -> Result<u32, Error> {
        self.link_index(name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("link {name}")))
    }

    pub async fn link_mac(&self, name: &str) -> Result<Mac, Error> {
        let link = self
            .get_link(name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("link {name}")))?;
        for attr in link.attributes {
            if let LinkAttribute::Address(a) = attr {
                if a.len() == 6 {
                    let mut mac = [0u8; 6];
                    mac.copy_from_slice(&a);
                    return Ok(mac);
                }
            }
        }
        Err(Error::NotFound(format!("MAC of {name}")))
    }

    pub async fn link_mtu(&self, name: &str) -> Result<u32, Error> {
        let link = self
            .get_link(name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("link {name}")))?;
        link.attributes
            .iter()
            .find_map(|a| {
                if let LinkAttribute::Mtu(m) = a {
                    Some(*m)
                } else {
                    None
                }
            })
            .ok_or_else(|| Error::NotFound(format!("MTU of {name}")))
    }

    /// Whether `name` is a virtual device (veth, bridge, ...): it has a
    /// link kind, which physical NICs do not.
    pub async fn is_virtual(&self, name: &str) -> Result<bool, Error> {
        let link = self
            .get_link(name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("link {name}")))?;
        Ok(link.attributes.iter().any(|a| {
            matches!(a, LinkAttribute::LinkInfo(infos)
                if infos.iter().any(|i| matches!(i, netlink_packet_route::link::LinkInfo::Kind(_))))
        }))
    }

    /// The name of the device that holds address `ip`.
    pub async fn dev_of_addr(&self, ip: Ipv4Addr) -> Result<Option<String>, Error> {
        use netlink_packet_route::address::AddressAttribute;
        let mut addrs = self.handle.address().get().execute();
        while let Some(a) = addrs
            .try_next()
            .await
            .map_err(|e| Error::netlink("list addresses".into(), e))?
        {
            let has = a
                .attributes
                .iter()
                .any(|at| matches!(at, AddressAttribute::Address(IpAddr::V4(x)) if *x == ip));
            if has {
                let index = a.header.index;
                let mut links = self.handle.link().get().match_index(index).execute();
                if let Some(l) = links
                    .try_next()
                    .await
                    .map_err(|e| Error::netlink("get link".into(), e))?
                {
                    for at in l.attributes {
                        if let LinkAttribute::IfName(n) = at {
                            return Ok(Some(n));
                        }
                    }
                }
            }
        }
        Ok(None)
    }

    /// The name of the link with this index.
    pub async fn link_name(&self, index: u32) -> Result<Option<String>, Error> {
        let mut links = self.handle.link().get().match_index(index).execute();
        match links.try_next().await {
            Ok(Some(l)) => Ok(l.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n),
                _ => None,
            })),
            Ok(None) => Ok(None),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
            Err(e) => Err(Error::netlink(format!("get link {index}"), e)),
        }
    }

    /// Names of all links in this namespace.
    pub async fn link_names(&self) -> Result<Vec<String>, Error> {
        let mut out = vec![];
        let mut links = self.handle.link().get().execute();
        while let Some(l) = links
            .try_next()
            .await
            .map_err(|e| Error::netlink("list links".into(), e))?
        {
            for a in l.attributes {
                if let LinkAttribute::IfName(n) = a {
                    out.push(n);
                }
            }
        }
        Ok(out)
    }

    /// Creates a veth pair: `name` here, `peer` in `peer_ns` (or here).
    pub async fn add_veth(
        &self,
        name: &str,
        peer: &str,
        peer_ns: Option<&NetNs>,
        peer_mac: Option<Mac>,
        mtu: Option<u32>,
    ) -> Result<(), Error> {
        let mut peer_msg = LinkUnspec::new_with_name(peer);
        if let Some(ns) = peer_ns {
            peer_msg = peer_msg.setns_by_fd(ns.raw_fd());
        }
        if let Some(mac) = peer_mac {
            peer_msg = peer_msg.address(mac.to_vec());
        }
        if let Some(mtu) = mtu {
            peer_msg = peer_msg.mtu(mtu);
        }
        let mut msg = LinkVeth::new(name, peer)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg.build())));
        if let Some(mtu) = mtu {
            msg = msg.mtu(mtu);
        }
        self.handle
            .link()
            .add(msg.build())
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("add veth {name}/{peer}"), e))
    }

    pub async fn add_bridge(&self, name: &str) -> Result<(), Error> {
        self.handle
            .link()
            .add(LinkBridge::new(name).build())
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("add bridge {name}"), e))
    }

    pub async fn set_master(&self, index: u32, master: u32) -> Result<(), Error> {
        self.set_link(
            LinkUnspec::new_with_index(index).controller(master).build(),
            || format!("set master of {index}"),
        )
        .await
    }

    pub async fn set_up(&self, index: u32) -> Result<(), Error> {
        self.set_link(LinkUnspec::new_with_index(index).up().build(), || {
            format!("set link {index} up")
        })
        .await
    }

    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<(), Error> {
        self.set_link(LinkUnspec::new_with_index(index).mtu(mtu).build(), || {
            format!("set mtu of {index}")
        })
        .await
    }

    pub async fn set_mac(&self, index: u32, mac: Mac) -> Result<(), Error> {
        self.set_link(
            LinkUnspec::new_with_index(index)
                .address(mac.to_vec())
                .build(),
            || format!("set mac of {index}"),
        )
        .await
    }

    async fn set_link(&self, msg: LinkMessage, what: impl FnOnce() -> String) -> Result<(), Error> {
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| Error::netlink(what(), e))
    }

    pub async fn is_up(&self, name: &str) -> Result<bool, Error> {
        Ok(self
            .get_link(name)
            .await?
            .map(|l| l.header.flags.contains(LinkFlags::Up))
            .unwrap_or(false))
    }

    pub async fn del_link(&self, name: &str) -> Result<(), Error> {
        if let Some(index) = self.link_index(name).await? {
            self.handle
                .link()
                .del(index)
                .execute()
                .await
                .map_err(|e| Error::netlink(format!("delete link {name}"), e))?;
        }
        Ok(())
    }

    /// Adds an address; an existing identical one is fine.
    pub async fn add_addr(&self, index: u32, ip: IpAddr, prefix: u8) -> Result<(), Error> {
        match self.handle.address().add(index, ip, prefix).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
            Err(e) => Err(Error::netlink(format!("add address {ip}/{prefix}"), e)),
        }
    }

    /// Removes an address if the interface has it.
    pub async fn del_addr(&self, index: u32, ip: IpAddr) -> Result<(), Error> {
        let mut found = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(ip)
            .execute();
        while let Some(msg) = found
            .try_next()
            .await
            .map_err(|e| Error::netlink(format!("list address {ip}"), e))?
        {
            self.handle
                .address()
                .del(msg)
                .execute()
                .await
                .map_err(|e| Error::netlink(format!("delete address {ip}"), e))?;
        }
        Ok(())
    }

    /// Adds (or replaces) a default route via `gw`.
    pub async fn add_default_route(&self, gw: Ipv4Addr, oif: u32) -> Result<(), Error> {
        self.replace_default_route(gw, oif, None).await
    }

    /// A default route via `gw` on `oif`, in the main table or `table`.
    async fn replace_default_route(
        &self,
        gw: Ipv4Addr,
        oif: u32,
        table: Option<u32>,
    ) -> Result<(), Error> {
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gw)
            .output_interface(oif);
        if let Some(t) = table {
            b = b.table_id(t);
        }
        self.handle
            .route()
            .add(b.build())
            .replace()
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("default route via {gw} (table {table:?})"), e))
    }

    /// Source routing: what leaves from `src` uses routing table `table`,
    /// whose default route goes via `gw` on `oif` (a task's replies from
    /// its address on one network leave by that network, whatever the
    /// main default route).
    pub async fn add_source_route(
        &self,
        src: Ipv4Addr,
        table: u32,
        gw: Ipv4Addr,
        oif: u32,
    ) -> Result<(), Error> {
        self.replace_default_route(gw, oif, Some(table)).await?;
        match self
            .handle
            .rule()
            .add()
            .v4()
            .source_prefix(src, 32)
            .table_id(table)
            .action(netlink_packet_route::rule::RuleAction::ToTable)
            .priority(100)
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
            Err(e) => Err(Error::netlink(format!("rule from {src} lookup {table}"), e)),
        }
    }

    /// A permanent neighbour entry `ip lladdr mac`.
    pub async fn add_neigh(&self, index: u32, ip: Ipv4Addr, mac: Mac) -> Result<(), Error> {
        self.handle
            .neighbours()
            .add(index, IpAddr::V4(ip))
            .link_layer_address(&mac)
            .replace()
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("add neighbour {ip}"), e))
    }

    /// A "managed" neighbour entry: the kernel resolves it and keeps it
    /// fresh by itself (Linux 5.16+), so XDP's FIB lookups find the VTEP's MAC.
    pub async fn add_managed_neigh(&self, index: u32, ip: Ipv4Addr) -> Result<(), Error> {
        let mut req = self
            .handle
            .neighbours()
            .add(index, IpAddr::V4(ip))
            .state(NeighbourState::None);
        req.message_mut()
            .attributes
            .push(NeighbourAttribute::ExtFlags(NeighbourExtFlags::Managed));
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
            Err(e) => Err(Error::netlink(format!("add managed neighbour {ip}"), e)),
        }
    }
}

/// Brings `lo` up in the calling thread's namespace (new namespaces start
/// with it down). Runs its own small runtime: it is called from plain threads.
pub fn set_lo_up_blocking() -> Result<(), Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("tokio runtime".into(), e))?;
    rt.block_on(async {
        let nl = Netlink::connect()?;
        let lo = nl.require_index("lo").await?;
        nl.set_up(lo).await
    })
}

/// Turns GRO on or off for `ifname` in the calling thread's namespace.
/// A veth only accepts XDP_REDIRECTed frames when its peer has GRO on (or
/// an XDP program).
pub fn set_gro(ifname: &str, on: bool) -> Result<(), Error> {
    const ETHTOOL_SGRO: u32 = 0x0000_002c;
    ethtool_set(ifname, ETHTOOL_SGRO, on, "gro")
}

/// Turns TX checksum offload on or off. Frames that an XDP program
/// redirects leave as raw frames: a checksum left for "hardware" would
/// never be filled in, so endpoints behind XDP compute their own.
pub fn set_tx_csum(ifname: &str, on: bool) -> Result<(), Error> {
    const ETHTOOL_STXCSUM: u32 = 0x0000_0017;
    ethtool_set(ifname, ETHTOOL_STXCSUM, on, "tx")
}

/// One ethtool "set value" ioctl (`ethtool -K IF FEATURE on|off`). Written
/// by hand because no maintained crate wraps the legacy ethtool ioctl, and
/// it is one syscall.
fn ethtool_set(ifname: &str, cmd: u32, on: bool, what: &str) -> Result<(), Error> {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        data: *mut EthtoolValue,
        _pad: [u8; 16],
    }
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    if ifname.len() >= libc::IFNAMSIZ {
        return Err(Error::Invalid(format!("interface name {ifname} too long")));
    }
    let mut value = EthtoolValue {
        cmd,
        data: on as u32,
    };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: &mut value,
        _pad: [0; 16],
    };
    req.name[..ifname.len()].copy_from_slice(ifname.as_bytes());
    // SAFETY: a plain socket and an ioctl on a correctly laid out ifreq.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(Error::io("socket".into(), std::io::Error::last_os_error()));
        }
        let rc = libc::ioctl(fd, SIOCETHTOOL, &mut req as *mut IfReq);
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc < 0 {
            return Err(Error::io(format!("ethtool -K {ifname} {what}"), err));
        }
    }
    Ok(())
}

/// Writes a sysctl under /proc/sys (for the calling thread's namespace when
/// the key is per-namespace, e.g. net.*).
pub fn sysctl(key: &str, value: &str) -> Result<(), Error> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value).map_err(|e| Error::io(format!("sysctl {key}"), e))
}

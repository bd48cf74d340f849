//! Shoal's eBPF programs and the Rust mirrors of their map types.
//!
//! The programs are written in C (under `c/`) and compiled by `build.rs`;
//! this crate only exposes the object bytes and `#[repr(C)]` types that
//! match `c/include/shoal.h` field for field.

use serde::{Deserialize, Serialize};

/// The overlay object: `shoal_ep_tc`, `shoal_ul_tc`, `shoal_ep_xdp`,
/// `shoal_ul_xdp` and the `shoal_*` maps.
pub static OVERLAY_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/overlay.bpf.o"));

/// The resolver's loopback program (`shoal_dns_lo`, no maps): loaded in
/// every task's namespace so the node's DNS server can listen on
/// [`RESOLVER_PORT`] while tasks ask port 53 (`c/resolver.bpf.c`).
pub static RESOLVER_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/resolver.bpf.o"));

/// Where the node's DNS server listens inside a task's namespace
/// (127.0.0.11); `SHOAL_RESOLVER_PORT` in `c/resolver.bpf.c`.
pub const RESOLVER_PORT: u16 = 53053;

/// Program names inside [`OVERLAY_OBJ`].
pub mod prog {
    pub const EP_TC: &str = "shoal_ep_tc";
    pub const UL_TC: &str = "shoal_ul_tc";
    pub const EP_XDP: &str = "shoal_ep_xdp";
    pub const UL_XDP: &str = "shoal_ul_xdp";
    /// In [`super::RESOLVER_OBJ`].
    pub const DNS_LO: &str = "shoal_dns_lo";
}

/// Map names inside [`OVERLAY_OBJ`] (also their pin file names).
pub mod map {
    pub const ENDPOINTS: &str = "shoal_endpoints";
    pub const IFACES: &str = "shoal_ifaces";
    pub const VNIS: &str = "shoal_vnis";
    pub const CONFIG: &str = "shoal_config";
    pub const DROPS: &str = "shoal_drops";
    pub const STATS: &str = "shoal_stats";
    pub const SERVICES: &str = "shoal_services";
    pub const MAGLEV: &str = "shoal_maglev";
    pub const BACKENDS: &str = "shoal_backends";
    pub const CT: &str = "shoal_ct";
    pub const RCT: &str = "shoal_rct";
    pub const LB_STATS: &str = "shoal_lb_stats";
    pub const MESH_PORTS: &str = "shoal_mesh_ports";
    pub const MESH_CT: &str = "shoal_mesh_ct";
    pub const MESH_REV: &str = "shoal_mesh_rev";
    pub const MESH_ADDRS: &str = "shoal_mesh_addrs";
    pub const EP_TRAFFIC: &str = "shoal_ep_traffic";
    pub const MONITOR: &str = "shoal_monitor";
    pub const EVENTS: &str = "shoal_events";
    pub const FLOWS: &str = "shoal_flows";
    pub const ALL: &[&str] = &[
        ENDPOINTS, IFACES, VNIS, CONFIG, DROPS, STATS, SERVICES, MAGLEV, BACKENDS, CT, RCT,
        LB_STATS, MESH_PORTS, MESH_CT, MESH_REV, MESH_ADDRS, EP_TRAFFIC, MONITOR, EVENTS, FLOWS,
    ];
}

/// Outer IPv4 + UDP + VXLAN + inner Ethernet.
pub const ENCAP_LEN: u32 = 50;
pub const EP_F_LOCAL: u16 = 1;
pub const EP_F_REMOTE: u16 = 2;
/// A static peer (`shoal debug peer add`): gossip never removes it.
pub const EP_F_STATIC: u16 = 4;

/// `struct ep_key`: an endpoint by network and overlay address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EpKey {
    pub vni: u32,
    /// IPv4 in network byte order (as stored by `u32::from_ne_bytes(ip.octets())`).
    pub ip: u32,
}

/// `struct ep_value`: where an endpoint lives.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EpValue {
    pub ifindex: u32,
    pub vtep: u32,
    pub mac: [u8; 6],
    pub flags: u16,
}

/// `struct iface_value`: a local endpoint, keyed by its host-side ifindex.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceValue {
    pub vni: u32,
    pub ip: u32,
    pub gateway: u32,
    pub prefix_len: u32,
    pub mac: [u8; 6],
    pub host_mac: [u8; 6],
}

/// `struct vni_value`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VniValue {
    pub flags: u32,
}

/// `struct shoal_config`: node-wide settings in slot 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub underlay_ifindex: u32,
    pub vtep_ip: u32,
    /// Network byte order.
    pub vxlan_port: u16,
    pub flags: u16,
    /// The routing mesh's network (0: none) and its subnet.
    pub ingress_vni: u32,
    pub ingress_net: u32,
    pub ingress_prefix: u32,
    /// MSS of mesh clients' SYNs that get encapsulated (0: none).
    pub mesh_mss: u32,
}

/// Largest Maglev table (`SHOAL_MAGLEV_MAX`, Cilium's default M).
pub const MAGLEV_MAX: usize = 16381;

/// `struct svc_key`: a service by network and VIP.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SvcKey {
    pub vni: u32,
    pub vip: u32,
}

/// `struct svc_value`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SvcValue {
    /// Live backends.
    pub count: u32,
    /// The Maglev table's size (a prime, at most `MAGLEV_MAX`).
    pub m: u32,
    pub flags: u32,
    pub pad: u32,
}

/// `struct maglev_value`: slot -> backend IPv4 (network order; 0 = none).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MaglevValue {
    pub slots: [u32; MAGLEV_MAX],
}

impl MaglevValue {
    pub fn zeroed() -> Box<Self> {
        Box::new(Self {
            slots: [0; MAGLEV_MAX],
        })
    }
}

/// `struct backend_key`: a live backend of a service.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BackendKey {
    pub vni: u32,
    pub vip: u32,
    pub ip: u32,
}

/// `struct ct_key`: one direction of a flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    pub vni: u32,
    pub saddr: u32,
    pub daddr: u32,
    /// Network byte order.
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub pad: [u8; 3],
}

/// `struct ct_value`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtValue {
    pub backend: u32,
    pub vip: u32,
}

/// `struct lb_stat_value`: what a service sent one backend (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbStatValue {
    pub packets: u64,
    pub bytes: u64,
}

/// `struct ep_traffic`: what one endpoint sent and received (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EpTraffic {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
}

/// `struct mesh_port_key`: a published port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MeshPortKey {
    /// Network byte order.
    pub port: u16,
    pub proto: u8,
    pub pad: u8,
}

/// `struct mesh_port_value`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MeshPortValue {
    /// Ingress mode: the service's ingress VIP; host mode: the local task
    /// (network byte order).
    pub addr: u32,
    /// Host mode: the task's network.
    pub vni: u32,
    /// Network byte order.
    pub target: u16,
    /// `MESH_F_*`.
    pub flags: u16,
}

/// `MESH_F_HOST`: a port published in host mode.
pub const MESH_F_HOST: u16 = 1;

/// `struct mesh_rev_value`: where a mesh flow entered.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MeshRevValue {
    pub entry_vtep: u32,
    pub node_ip: u32,
    /// Network byte order.
    pub port: u16,
    pub flags: u16,
}

// SAFETY: plain-old-data mirrors of C structs, no padding holes with
// uninitialised bytes that the kernel would read (sizes checked below).
unsafe impl aya::Pod for EpKey {}
unsafe impl aya::Pod for EpValue {}
unsafe impl aya::Pod for IfaceValue {}
unsafe impl aya::Pod for VniValue {}
unsafe impl aya::Pod for Config {}
unsafe impl aya::Pod for SvcKey {}
unsafe impl aya::Pod for SvcValue {}
unsafe impl aya::Pod for MaglevValue {}
unsafe impl aya::Pod for BackendKey {}
unsafe impl aya::Pod for CtKey {}
unsafe impl aya::Pod for CtValue {}
unsafe impl aya::Pod for LbStatValue {}
unsafe impl aya::Pod for MeshPortKey {}
unsafe impl aya::Pod for MeshPortValue {}
unsafe impl aya::Pod for MeshRevValue {}
unsafe impl aya::Pod for EpTraffic {}
unsafe impl aya::Pod for MonitorCfg {}

/// `struct monitor_cfg`: what the datapath reports (events.h).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MonitorCfg {
    pub flags: u32,
    pub trace_every: u32,
}

pub const MON_DROPS: u32 = 1;
pub const MON_TRACES: u32 = 2;
/// The agent keeps a flow log (flows.h).
pub const MON_FLOWS: u32 = 4;
pub const EV_DROP: u16 = 1;
pub const EV_TRACE: u16 = 2;

/// `struct shoal_event`: one drop or trace, as the ring buffer carries it.
/// Addresses and ports in network order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    pub ts_ns: u64,
    pub ifindex: u32,
    pub kind: u16,
    pub code: u16,
    pub len: u32,
    pub vni: u32,
    pub vtep: u32,
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub hook: u8,
    pub pad: [u8; 2],
}

impl Event {
    /// An event from the ring buffer's bytes (None: too short).
    pub fn parse(b: &[u8]) -> Option<Event> {
        <Event as RingRecord>::parse(b)
    }
}

/// `enum shoal_flow_kind`.
pub const FL_VIP: u16 = 1;
pub const FL_MESH: u16 = 2;
pub const FL_DROP: u16 = 3;

/// `struct shoal_flow`: a new service flow or a drop, as the flow ring
/// carries it. Addresses and ports in network order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flow {
    pub ts_ns: u64,
    pub ifindex: u32,
    pub vni: u32,
    pub kind: u16,
    pub reason: u16,
    pub saddr: u32,
    pub daddr: u32,
    pub backend: u32,
    pub sport: u16,
    pub dport: u16,
    pub bport: u16,
    pub proto: u8,
    pub hook: u8,
}

/// Plain-old-data records out of a ring buffer's bytes.
trait RingRecord: Copy {
    fn parse(b: &[u8]) -> Option<Self> {
        if b.len() < std::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: implementors are repr(C) structs of integers only, and
        // the slice holds at least one; read_unaligned copes with any
        // alignment.
        Some(unsafe { std::ptr::read_unaligned(b.as_ptr() as *const Self) })
    }
}

impl RingRecord for Flow {}
impl RingRecord for Event {}

impl Flow {
    /// A record from the ring buffer's bytes (None: too short).
    pub fn parse(b: &[u8]) -> Option<Flow> {
        <Flow as RingRecord>::parse(b)
    }
}

/// An IP protocol number's usual name.
pub fn proto_label(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        0 => "-".into(),
        p => p.to_string(),
    }
}

/// `enum shoal_trace_point`.
pub fn trace_label(code: u16) -> &'static str {
    match code {
        1 => "encap",
        2 => "decap",
        3 => "local",
        4 => "mesh_entry",
        5 => "mesh_reply",
        _ => "unknown",
    }
}

macro_rules! counters {
    ($(#[$m:meta])* $name:ident { $($var:ident = $label:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        #[repr(u32)]
        pub enum $name { $($var),* }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$var),*];
            pub fn label(self) -> &'static str {
                match self { $($name::$var => $label),* }
            }
        }
    };
}

counters! {
    /// `enum shoal_drop`: why the dataplane dropped a frame.
    DropReason {
        None = "none",
        Truncated = "truncated",
        BadVxlanFlags = "bad_vxlan_flags",
        UnknownVni = "unknown_vni",
        UnknownInnerDst = "unknown_inner_dst",
        InnerMalformed = "inner_malformed",
        Unsupported = "unsupported_protocol",
        OuterFragment = "outer_fragment",
        NoNeigh = "no_neighbour",
        EncapFailed = "encap_failed",
        DecapFailed = "decap_failed",
        UnknownEndpoint = "unknown_endpoint",
        NotConfigured = "not_configured",
        FibFailed = "no_route_to_vtep",
        ArpUnknown = "arp_unknown_target",
        FragNeeded = "too_big_for_underlay",
        VipProto = "vip_unsupported_protocol",
        VipFragment = "vip_fragment",
        NoBackend = "no_backend",
        LbRewrite = "lb_rewrite_failed",
        MeshFragment = "mesh_fragment",
        MeshCt = "mesh_conntrack_full",
    }
}

counters! {
    /// `enum shoal_stat`: what the dataplane forwarded.
    Stat {
        Encap = "encap",
        Decap = "decap",
        Local = "local",
        ArpReply = "arp_reply",
        PassUnderlay = "pass_underlay",
        PassEndpoint = "pass_endpoint",
        LbDnat = "lb_dnat",
        LbRevnat = "lb_revnat",
        LbEcho = "lb_echo_reply",
        MeshEntry = "mesh_entry",
        MeshReply = "mesh_reply",
        XdpToTc = "xdp_to_tc",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_c_header() {
        assert_eq!(std::mem::size_of::<EpKey>(), 8);
        assert_eq!(std::mem::size_of::<EpValue>(), 16);
        assert_eq!(std::mem::size_of::<IfaceValue>(), 28);
        assert_eq!(std::mem::size_of::<VniValue>(), 4);
        assert_eq!(std::mem::size_of::<Config>(), 28);
        assert_eq!(std::mem::size_of::<MeshPortKey>(), 4);
        assert_eq!(std::mem::size_of::<LbStatValue>(), 16);
        assert_eq!(std::mem::size_of::<EpTraffic>(), 32);
        assert_eq!(std::mem::size_of::<Event>(), 48);
        assert_eq!(std::mem::size_of::<Flow>(), 40);
        assert_eq!(std::mem::size_of::<MonitorCfg>(), 8);
        assert_eq!(std::mem::size_of::<MeshPortValue>(), 12);
        assert_eq!(std::mem::size_of::<MeshRevValue>(), 12);
        assert_eq!(std::mem::size_of::<SvcKey>(), 8);
        assert_eq!(std::mem::size_of::<SvcValue>(), 16);
        assert_eq!(std::mem::size_of::<MaglevValue>(), 4 * 16381);
        assert_eq!(std::mem::size_of::<BackendKey>(), 12);
        assert_eq!(std::mem::size_of::<CtKey>(), 20);
        assert_eq!(std::mem::size_of::<CtValue>(), 8);
    }

    #[test]
    fn the_resolver_port_matches_the_c_program() {
        let c = include_str!("../c/resolver.bpf.c");
        assert!(
            c.contains(&format!("#define SHOAL_RESOLVER_PORT {RESOLVER_PORT}\n")),
            "RESOLVER_PORT differs from c/resolver.bpf.c"
        );
        assert_eq!(&RESOLVER_OBJ[..4], b"\x7fELF");
    }

    #[test]
    fn object_is_an_ebpf_elf() {
        assert_eq!(&OVERLAY_OBJ[..4], b"\x7fELF");
        // e_machine == EM_BPF (247)
        assert_eq!(u16::from_le_bytes([OVERLAY_OBJ[18], OVERLAY_OBJ[19]]), 247);
    }

    #[test]
    fn counter_enums_cover_the_c_enums() {
        assert_eq!(DropReason::ALL.len(), 22); // DROP_MAX
        assert_eq!(Stat::ALL.len(), 12); // STAT_MAX
    }
}

//! The `#[repr(C)]` mirrors of the C map keys and values, ring buffer
//! records and enums (`c/include/shoal.h`, `maps.h`, `flows.h`,
//! `events.h`). Each is checked against the compiled object's BTF
//! (`btf_check.rs`): change the C side alone and a test fails.

use serde::{Deserialize, Serialize};

use crate::layout::{c_consts, c_struct, counters};

c_consts! {
    enum "shoal_sizes" prefix "SHOAL_" {
        /// Outer IPv4 + UDP + VXLAN + inner Ethernet.
        ENCAP_LEN: u32 = 50,
        /// Largest Maglev table (Cilium's default M).
        MAGLEV_MAX: usize = 16381,
    }
    enum "ep_flags" prefix "" {
        EP_F_LOCAL: u16 = 1,
        EP_F_REMOTE: u16 = 2,
        /// A static peer (`shoal debug peer add`): gossip never removes it.
        EP_F_STATIC: u16 = 4,
        /// Local, on a network known not to be encrypted: decap skips the
        /// network's entry (without it, that entry decides).
        EP_F_CLEAR: u16 = 8,
        /// Local, and has opened a flow through a VIP (the balancer sets
        /// it, the agent keeps it): only its deliveries look for a VIP's
        /// reverse entry.
        EP_F_VIP_CLIENT: u16 = 16,
    }
    enum "iface_flags" prefix "" {
        /// The endpoint's network is known not to be encrypted: encap skips
        /// the network's entry (without it, that entry decides).
        IFACE_F_CLEAR: u32 = 1,
    }
    enum "vni_flags" prefix "" {
        /// An encrypted network (`--opt encrypted`).
        VNI_F_ENCRYPTED: u32 = 1,
    }
    enum "shoal_ipsec" prefix "SHOAL_" {
        /// What the node's inbound IPsec SAs mark decrypted packets with.
        DECRYPT_MARK: u32 = 0xe00,
        DECRYPT_MASK: u32 = 0xf00,
        /// The first two bytes of the MAC that stands for a node (its
        /// VTEP in the other four) on an encrypted network's vxlan device.
        VTEP_MAC_0: u8 = 0x02,
        VTEP_MAC_1: u8 = 0x5e,
    }
    enum "mesh_port_flags" prefix "" {
        /// A port published in host mode.
        MESH_F_HOST: u16 = 1,
    }
    enum "monitor_flags" prefix "" {
        MON_DROPS: u32 = 1,
        MON_TRACES: u32 = 2,
        /// The agent keeps a flow log (flows.h).
        MON_FLOWS: u32 = 4,
    }
    enum "shoal_event_kind" prefix "" {
        EV_DROP: u16 = 1,
        EV_TRACE: u16 = 2,
    }
    enum "shoal_trace_point" prefix "" {
        TR_ENCAP: u16 = 1,
        TR_DECAP: u16 = 2,
        TR_LOCAL: u16 = 3,
        TR_MESH_ENTRY: u16 = 4,
        TR_MESH_REPLY: u16 = 5,
    }
    enum "shoal_flow_kind" prefix "" {
        FL_VIP: u16 = 1,
        FL_MESH: u16 = 2,
        FL_DROP: u16 = 3,
    }
}

c_struct! {
    /// `struct ep_key`: an endpoint by network and overlay address.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct EpKey = "ep_key", pod {
        pub vni: u32,
        /// IPv4 in network byte order (as stored by `u32::from_ne_bytes(ip.octets())`).
        pub ip: u32,
    }
}

c_struct! {
    /// `struct ep_value`: where an endpoint lives.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct EpValue = "ep_value", pod {
        pub ifindex: u32,
        pub vtep: u32,
        pub mac: [u8; 6],
        pub flags: u16,
        /// A local endpoint's slot in `shoal_ep_traffic`; 0 counts nothing.
        pub slot: u32,
    }
}

c_struct! {
    /// `struct iface_value`: a local endpoint, keyed by its host-side ifindex.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct IfaceValue = "iface_value", pod {
        pub vni: u32,
        pub ip: u32,
        pub gateway: u32,
        pub prefix_len: u32,
        pub mac: [u8; 6],
        pub host_mac: [u8; 6],
        /// `IFACE_F_*`.
        pub flags: u32,
        /// Its slot in `shoal_ep_traffic`, as in its `EpValue`.
        pub slot: u32,
    }
}

c_struct! {
    /// `struct vni_value`.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct VniValue = "vni_value", pod {
        pub flags: u32,
        /// An encrypted network's vxlan device (0: none yet).
        pub crypt_ifindex: u32,
    }
}

c_struct! {
    /// `struct shoal_config`: node-wide settings in slot 0.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Config = "shoal_config", pod {
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
        /// The encrypted networks' VXLAN port (network byte order) while
        /// they have devices: only ever inside ESP.
        pub crypt_port: u16,
        pub pad: u16,
    }
}

c_struct! {
    /// `struct svc_key`: a service by network and VIP.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub struct SvcKey = "svc_key", pod {
        pub vni: u32,
        pub vip: u32,
    }
}

c_struct! {
    /// `struct svc_value`.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct SvcValue = "svc_value", pod {
        /// Live backends.
        pub count: u32,
        /// The Maglev table's size (a prime, at most `MAGLEV_MAX`).
        pub m: u32,
        pub flags: u32,
        pub pad: u32,
    }
}

c_struct! {
    /// `struct maglev_value`: slot -> backend IPv4 (network order; 0 = none).
    #[derive(Clone, Copy)]
    pub struct MaglevValue = "maglev_value", pod {
        pub slots: [u32; MAGLEV_MAX],
    }
}

impl MaglevValue {
    pub fn zeroed() -> Box<Self> {
        Box::new(Self {
            slots: [0; MAGLEV_MAX],
        })
    }
}

c_struct! {
    /// `struct backend_key`: a live backend of a service.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct BackendKey = "backend_key", pod {
        pub vni: u32,
        pub vip: u32,
        pub ip: u32,
    }
}

c_struct! {
    /// `struct ct_key`: one direction of a flow.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct CtKey = "ct_key", pod {
        pub vni: u32,
        pub saddr: u32,
        pub daddr: u32,
        /// Network byte order.
        pub sport: u16,
        pub dport: u16,
        pub proto: u8,
        pub pad: [u8; 3],
    }
}

c_struct! {
    /// `struct ct_value`.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct CtValue = "ct_value", pod {
        pub backend: u32,
        pub vip: u32,
    }
}

c_struct! {
    /// `struct lb_stat_value`: what a service sent one backend (per CPU).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct LbStatValue = "lb_stat_value", pod {
        pub packets: u64,
        pub bytes: u64,
    }
}

c_struct! {
    /// `struct ep_traffic`: what one endpoint sent and received (per CPU).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct EpTraffic = "ep_traffic", pod {
        pub tx_packets: u64,
        pub tx_bytes: u64,
        pub rx_packets: u64,
        pub rx_bytes: u64,
    }
}

c_struct! {
    /// `struct mesh_port_key`: a published port.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct MeshPortKey = "mesh_port_key", pod {
        /// Network byte order.
        pub port: u16,
        pub proto: u8,
        pub pad: u8,
    }
}

c_struct! {
    /// `struct mesh_port_value`.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct MeshPortValue = "mesh_port_value", pod {
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
}

c_struct! {
    /// `struct mesh_rev_value`: where a mesh flow entered.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct MeshRevValue = "mesh_rev_value", pod {
        pub entry_vtep: u32,
        pub node_ip: u32,
        /// Network byte order.
        pub port: u16,
        pub flags: u16,
    }
}

c_struct! {
    /// `struct monitor_cfg`: what the datapath reports (events.h).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct MonitorCfg = "monitor_cfg", pod {
        pub flags: u32,
        pub trace_every: u32,
    }
}

c_struct! {
    /// `struct shoal_event`: one drop or trace, as the ring buffer carries it.
    /// Addresses and ports in network order.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Event = "shoal_event" {
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
}

c_struct! {
    /// `struct shoal_flow`: a new service flow or a drop, as the flow ring
    /// carries it. Addresses and ports in network order.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Flow = "shoal_flow" {
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

impl Event {
    /// An event from the ring buffer's bytes (None: too short).
    pub fn parse(b: &[u8]) -> Option<Event> {
        <Event as RingRecord>::parse(b)
    }
}

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

/// A trace point's name (`enum shoal_trace_point`).
pub fn trace_label(code: u16) -> &'static str {
    match code {
        TR_ENCAP => "encap",
        TR_DECAP => "decap",
        TR_LOCAL => "local",
        TR_MESH_ENTRY => "mesh_entry",
        TR_MESH_REPLY => "mesh_reply",
        _ => "unknown",
    }
}

counters! {
    /// `enum shoal_drop`: why the dataplane dropped a frame.
    DropReason = "shoal_drop", "DROP_" {
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
        ClearOnEncrypted = "clear_on_encrypted_network",
        CannotEncrypt = "cannot_encrypt",
    }
}

counters! {
    /// `enum shoal_stat`: what the dataplane forwarded.
    Stat = "shoal_stat", "STAT_" {
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
        HeadPull = "head_pull",
    }
}

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

/// Program names inside [`OVERLAY_OBJ`].
pub mod prog {
    pub const EP_TC: &str = "shoal_ep_tc";
    pub const UL_TC: &str = "shoal_ul_tc";
    pub const EP_XDP: &str = "shoal_ep_xdp";
    pub const UL_XDP: &str = "shoal_ul_xdp";
}

/// Map names inside [`OVERLAY_OBJ`] (also their pin file names).
pub mod map {
    pub const ENDPOINTS: &str = "shoal_endpoints";
    pub const IFACES: &str = "shoal_ifaces";
    pub const VNIS: &str = "shoal_vnis";
    pub const CONFIG: &str = "shoal_config";
    pub const DROPS: &str = "shoal_drops";
    pub const STATS: &str = "shoal_stats";
    pub const ALL: &[&str] = &[ENDPOINTS, IFACES, VNIS, CONFIG, DROPS, STATS];
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
    pub pad: u32,
}

// SAFETY: plain-old-data mirrors of C structs, no padding holes with
// uninitialised bytes that the kernel would read (sizes checked below).
unsafe impl aya::Pod for EpKey {}
unsafe impl aya::Pod for EpValue {}
unsafe impl aya::Pod for IfaceValue {}
unsafe impl aya::Pod for VniValue {}
unsafe impl aya::Pod for Config {}

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
        assert_eq!(std::mem::size_of::<Config>(), 16);
    }

    #[test]
    fn object_is_an_ebpf_elf() {
        assert_eq!(&OVERLAY_OBJ[..4], b"\x7fELF");
        // e_machine == EM_BPF (247)
        assert_eq!(u16::from_le_bytes([OVERLAY_OBJ[18], OVERLAY_OBJ[19]]), 247);
    }

    #[test]
    fn counter_enums_cover_the_c_enums() {
        assert_eq!(DropReason::ALL.len(), 16); // DROP_MAX
        assert_eq!(Stat::ALL.len(), 6); // STAT_MAX
    }
}

//! Shoal's eBPF programs and the Rust mirrors of their map types.
//!
//! The programs are written in C (under `c/`) and compiled by `build.rs`;
//! this crate only exposes the object bytes and `#[repr(C)]` types that
//! match the C headers field for field (`types.rs`), which a test checks
//! against the compiled object's BTF (`btf_check.rs`).

#[cfg(test)]
mod btf_check;
mod layout;
mod types;

pub use layout::{CEnum, CStruct, FieldLayout};
pub use types::*;

/// The overlay object: `shoal_ep_tc`, `shoal_ul_tc`, `shoal_ep_xdp`,
/// `shoal_ul_xdp`, `shoal_vx_tc` and the `shoal_*` maps.
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
    /// tc ingress of the encrypted networks' vxlan device.
    pub const VX_TC: &str = "shoal_vx_tc";
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

#[cfg(test)]
mod tests {
    use super::*;

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
}

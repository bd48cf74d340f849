//! VIP load balancing in eBPF: Maglev tables built here (`maglev.rs`) and
//! the pinned service, backend and conntrack maps (`maps.rs`) that the tc
//! program on every endpoint's veth reads (`ebpf/c/include/lb.h`).

pub mod maglev;
pub mod maps;
pub mod mesh;

pub use maps::{LbCounter, LbFlow, LbMaps, LbService};
pub use mesh::{MeshFlow, MeshMaps, MeshPort};

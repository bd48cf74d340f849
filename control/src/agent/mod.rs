//! The node agent (`shoal daemon`): owns the node's dataplane, gossips
//! endpoint tables with the other nodes, runs tasks and, on managers, the
//! Raft member. `Agent` is its shared state; `start.rs` builds it, and the
//! daemon command serves the local API and metrics over it.
//!
//! - `local_table.rs`: this node's networks and endpoints (the local API).
//! - `sync.rs`: the loop that merges gossip with the local table and
//!   programs the difference (`programmer.rs`: remote endpoints).
//! - `swarm/`: joining, the node session, and the manager's API handlers.
//! - `tasks/`: running, draining and health-checking tasks.
//! - `attachments.rs`: containers (CNI, the Docker driver) on attachable
//!   networks.
//! - `dns.rs`, `lb/`, `mesh.rs`, `mesh_local.rs`, `flows.rs`, `scrape.rs`:
//!   the embedded DNS, the VIP balancers, the routing mesh, local relays,
//!   the flow log and a metrics scrape.
//!
//! Stopping the agent detaches nothing: links and maps are pinned, so
//! traffic keeps flowing and a restarted agent picks up the same state.

pub mod attachments;
pub mod dns;
pub mod endpoint;
pub mod flows;
pub mod ipsec;
pub mod lb;
mod local_table;
pub mod mesh;
pub mod mesh_local;
pub mod programmer;
pub mod scrape;
mod start;
pub mod store;
mod swarm;
pub mod sync;
pub mod tasks;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use shoal_dataplane::netlink::Netlink;
use shoal_dataplane::overlay::{Accel, Maps, Overlay};
use tokio::sync::{Mutex, Notify};

use crate::gossip::Gossip;
use crate::wire::NodeInfo;
use programmer::Programmer;
use store::{State, Store};

pub use start::start;

/// Everything the agent is told at start.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub node_name: String,
    pub advertise_addr: Ipv4Addr,
    /// Gossip listen address (default: 0.0.0.0:7946).
    pub listen_addr: SocketAddr,
    pub underlay_dev: Option<String>,
    pub data_dir: PathBuf,
    pub bpffs_dir: PathBuf,
    pub socket: PathBuf,
    pub join: Vec<String>,
    pub cluster_id: String,
    pub accel: Accel,
    pub vxlan_port: u16,
    pub gossip_interval: Duration,
    /// Manager control plane port (Docker's 2377).
    pub control_port: u16,
    pub raft: crate::raft::manager::Options,
    /// Task namespaces are named this + 12 characters of the task id.
    pub task_netns_prefix: String,
    /// Where the tasks' resolver forwards names it does not know.
    pub dns_upstreams: Vec<SocketAddr>,
    /// TTL of the cluster's DNS answers, seconds.
    pub dns_ttl: u32,
    pub dns_max_forwards: usize,
    /// Maglev table size of every service (a prime of `lb::maglev::SIZES`).
    pub maglev_size: u32,
    /// The VIP balancer (`auto`: eBPF).
    pub lb: crate::wire::LbMode,
    /// Where `/metrics` is served, if anywhere.
    pub metrics_addr: Option<SocketAddr>,
    /// Flow records kept for `debug flows` (0: no flow log).
    pub flow_log_size: usize,
    /// The gossip key outside a swarm (`--gossip-key-file`).
    pub gossip_key_file: Option<PathBuf>,
    /// Plaintext gossip while no key is held (`--insecure-gossip`).
    pub insecure_gossip: bool,
    /// The gossip key rotation period a `swarm init` here sets by default.
    pub gossip_key_rotation: Duration,
    /// The shortest node certificate lifetime this node's API accepts.
    pub min_cert_expiry: Duration,
}

/// What the agent holds behind one lock: the dataplane and the local table.
pub struct Inner {
    pub overlay: Overlay,
    pub maps: Maps,
    pub state: State,
    pub store: Store,
    pub programmer: Programmer,
    pub lb: lb::Lb,
    /// The routing mesh: what the leader said last (None: not heard yet,
    /// so a restarted agent leaves the pinned ports alone), and the maps.
    pub mesh: Option<crate::wire::MeshConfig>,
    pub mesh_maps: shoal_dataplane::lb::MeshMaps,
    /// Published ports relayed for the node's own processes.
    pub relays: mesh_local::Relays,
    /// Interfaces besides the underlay where the mesh's entry is hooked.
    pub mesh_ifaces: mesh::MeshIfaces,
}

pub struct Agent {
    pub info: NodeInfo,
    pub data_dir: std::path::PathBuf,
    /// Port of the manager control plane (Raft between managers).
    pub control_port: u16,
    pub raft_opts: crate::raft::manager::Options,
    pub task_netns_prefix: String,
    pub tasks: tasks::Runner,
    pub swarm: Mutex<Option<swarm::Swarm>>,
    pub nl: Netlink,
    pub gossip: Gossip,
    /// The embedded DNS server of the node's tasks.
    pub dns: dns::NodeDns,
    /// Encrypted networks: what the kernel can do, and the SAs.
    pub ipsec: ipsec::Ipsec,
    pub mtu: u32,
    pub inner: Mutex<Inner>,
    /// The datapath's new flows and drops, newest kept (`flows.rs`).
    pub flows: flows::FlowLog,
    /// Poked when the local table changes, so the sync loop re-merges.
    pub changed: Notify,
    /// The balancer in use (`Inner::lb` is it).
    pub lb_mode: crate::wire::LbMode,
    /// `swarm init`'s default gossip key rotation period.
    pub gossip_key_rotation: Duration,
    /// `--min-cert-expiry`: the floor of `--cert-expiry` here.
    pub min_cert_expiry: Duration,
    /// Attachments the managers hold that this node lacks.
    pub sweep: attachments::Sweep,
}

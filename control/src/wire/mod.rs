//! Every type that crosses a boundary of the daemon: the local API (CLI,
//! lab, later CNI), the control port (joins, node sessions, Raft's log and
//! forwarded writes) and gossip. Depends on nothing else in this crate, so
//! any module may use it and none of them need each other for a shape.
//!
//! - `error.rs`: the error every answer carries, with its kind.
//! - `local.rs`: a node's own networks and endpoints (`/v1/local/*`,
//!   `/v1/endpoints`, `/v1/info`).
//! - `gossip.rs`: the endpoint and service records gossiped on 7946.
//! - `swarm.rs`: init, join, leave, node rows, node sessions, leader ops.
//! - `cluster.rs`: nodes, cluster settings, Raft commands and results.
//! - `networks.rs`, `services.rs`, `tasks.rs`, `updates.rs`, `mesh.rs`:
//!   the replicated state's records.
//! - `asks.rs`: `service logs` and `debug flows` through node sessions.
//! - `debug.rs`: what `shoal debug` reads (DNS, balancers, relays, Raft).
//! - `docker.rs`: Docker-shaped views (inspect objects, list rows).

mod asks;
mod cluster;
mod debug;
mod docker;
mod error;
mod gossip;
mod local;
mod mesh;
mod networks;
mod services;
mod swarm;
mod tasks;
mod updates;

pub use asks::*;
pub use cluster::*;
pub use debug::*;
pub use docker::*;
pub use error::*;
pub use gossip::*;
pub use local::*;
pub use mesh::*;
pub use networks::*;
pub use services::*;
pub use swarm::*;
pub use tasks::*;
pub use updates::*;

//! The embedded DNS server: Docker's 127.0.0.11, answered inside every
//! task's network namespace by the node's daemon.
//!
//! It knows nothing of Raft or gossip: the daemon implements [`Records`]
//! ("which addresses does this client see for this name") and hands the
//! server one UDP socket and one TCP listener per task, opened inside the
//! task's namespace ([`DnsServer::serve`]). Names the records do not know
//! are forwarded to the upstream resolvers, answers relayed as they came.
//!
//! - `answer.rs`: the record logic (local names, NODATA, PTR, case) and
//!   wire checks (FORMERR, NOTIMP, REFUSED, truncation), as pure functions.
//! - `forward.rs`: the upstreams, over UDP and TCP, with their health.
//! - `server.rs`: the sockets: a hand-written UDP loop (the hot path, no
//!   task per datagram), TCP through hickory-server's `Server`.
//! - `stats.rs`: counters by kind.

mod answer;
mod forward;
mod server;
mod stats;

use std::net::Ipv4Addr;

pub use forward::UpstreamView;
pub use server::{Config, DnsServer, Serving};
pub use stats::{LatencyStats, Stats, LATENCY_BOUNDS};

/// What the cluster knows, as one client (a task) sees it.
pub trait Records: Send + Sync + 'static {
    /// The addresses of `name` (lowercase, without the trailing dot) on
    /// the client's networks; `None` if it is not a name of the cluster
    /// (then it is forwarded). The order is free: answers are shuffled.
    fn addrs(&self, client: &str, name: &str) -> Option<Vec<Ipv4Addr>>;

    /// The name of `ip` (a task or a VIP on the client's networks), for PTR.
    fn name_of(&self, client: &str, ip: Ipv4Addr) -> Option<String>;
}

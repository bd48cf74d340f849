//! Cluster membership and failure detection at Swarm2000's size: SWIM
//! (probes, indirect probes, suspicion, infection-style dissemination of
//! changes) from the foca crate. Unlike chitchat's heartbeats, a node's
//! steady cost does not grow with the cluster: each period it probes one
//! member, and only changes are gossiped.
//!
//! A member is a node process (`Origin`: address and generation), the
//! same identity the per-network tables use (`netdb`), so a restart is a
//! new member whose old records go with the old one.

use std::net::Ipv4Addr;
use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

use super::netdb::Origin;

impl foca::Identity for Origin {
    type Addr = Ipv4Addr;

    /// Rejoining after being declared down: the next generation.
    fn renew(&self) -> Option<Self> {
        Some(Origin {
            addr: self.addr,
            generation: self.generation + 1,
        })
    }

    fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// Two identities for one address: the newer process wins.
    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

/// Membership settings for a cluster of `size` nodes, tuned so a dead node
/// is declared down everywhere within 3 s (issue 24's bound) on a LAN:
/// a probe every 300 ms, 100 ms for its answer before asking 3 others to
/// probe, 700 ms of suspicion (a suspect that answers refutes it), and
/// changes gossiped to 3 members every 200 ms, each sent
/// 4 x log10(size + 1) times (memberlist's multiplier).
pub fn config(size: usize) -> foca::Config {
    let tx = (4.0 * ((size + 1) as f64).log10()).ceil().clamp(1.0, 255.0) as u8;
    foca::Config {
        probe_period: Duration::from_millis(300),
        probe_rtt: Duration::from_millis(100),
        num_indirect_probes: NonZeroUsize::new(3).expect("3"),
        max_transmissions: NonZeroU8::new(tx).expect("at least 1"),
        suspect_to_down_after: Duration::from_millis(700),
        remove_down_after: Duration::from_secs(15),
        max_packet_size: NonZeroUsize::new(1400).expect("1400"),
        notify_down_members: true,
        periodic_announce: Some(foca::PeriodicParams {
            frequency: Duration::from_secs(30),
            num_members: NonZeroUsize::new(1).expect("1"),
        }),
        periodic_announce_to_down_members: Some(foca::PeriodicParams {
            frequency: Duration::from_secs(65),
            num_members: NonZeroUsize::new(2).expect("2"),
        }),
        periodic_gossip: Some(foca::PeriodicParams {
            frequency: Duration::from_millis(200),
            num_members: NonZeroUsize::new(3).expect("3"),
        }),
    }
}

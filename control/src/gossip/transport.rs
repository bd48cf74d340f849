//! What the gossip transport counts: refused datagrams by reason, and
//! traffic; operators need numbers, not log lines. Membership messages
//! that open (or, with `--insecure-gossip`, arrive in clear) but do not
//! decode are `malformed_packets`; a swarm's other cluster tag is
//! `foreign_cluster` (`sealed.rs`).

use std::sync::atomic::{AtomicU64, Ordering};

use super::seal::Refusal;
use crate::wire::GossipTraffic;

/// Membership datagrams that opened but are no SWIM message.
pub static MALFORMED_PACKETS: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Default)]
pub struct WireCounters {
    pub foreign_cluster: AtomicU64,
    pub no_key: AtomicU64,
    pub unknown_key: AtomicU64,
    pub open_failed: AtomicU64,
    pub replay: AtomicU64,
    pub malformed: AtomicU64,
    /// Authentic datagrams for a network this node is not on (it left a
    /// moment ago, or a peer's view lags): dropped, not refused.
    pub not_joined: AtomicU64,
    pub sent_datagrams: AtomicU64,
    pub sent_bytes: AtomicU64,
    pub received_datagrams: AtomicU64,
    pub received_bytes: AtomicU64,
    /// Table gossip (`netdb`) refused by what it said: from a node not on
    /// the network, about this node's own records, about an origin not on
    /// the network, with nonsense buckets, or no netdb message at all.
    pub table_refused: [AtomicU64; 5],
}

/// The reasons of `WireCounters::table_refused`, in order.
pub const TABLE_REFUSALS: [&str; 5] = [
    "table_not_member",
    "table_about_self",
    "table_unknown_origin",
    "table_bad_buckets",
    "table_malformed",
];

impl WireCounters {
    fn of(&self, r: Refusal) -> &AtomicU64 {
        match r {
            Refusal::NoKey => &self.no_key,
            Refusal::UnknownKey => &self.unknown_key,
            Refusal::OpenFailed => &self.open_failed,
            Refusal::Replay => &self.replay,
            Refusal::Malformed => &self.malformed,
        }
    }

    /// Counts a refusal; returns the new count (callers log the 1st, 2nd,
    /// 4th, 8th... so a flood cannot flood the log).
    pub fn refuse(&self, r: Refusal) -> u64 {
        self.of(r).fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Every reason with its count.
    pub fn refused(&self) -> Vec<(&'static str, u64)> {
        let mut v: Vec<(&'static str, u64)> = Refusal::ALL
            .iter()
            .map(|r| (r.reason(), self.of(*r).load(Ordering::Relaxed)))
            .collect();
        v.push((
            "foreign_cluster",
            self.foreign_cluster.load(Ordering::Relaxed),
        ));
        v.push((
            "malformed_packets",
            MALFORMED_PACKETS.load(Ordering::Relaxed),
        ));
        for (r, c) in TABLE_REFUSALS.iter().zip(&self.table_refused) {
            v.push((r, c.load(Ordering::Relaxed)));
        }
        v
    }

    pub fn traffic(&self) -> GossipTraffic {
        GossipTraffic {
            sent_datagrams: self.sent_datagrams.load(Ordering::Relaxed),
            sent_bytes: self.sent_bytes.load(Ordering::Relaxed),
            received_datagrams: self.received_datagrams.load(Ordering::Relaxed),
            received_bytes: self.received_bytes.load(Ordering::Relaxed),
            not_joined: self.not_joined.load(Ordering::Relaxed),
        }
    }
}

//! Which networks a node is on, as its node record says (`roster.rs`):
//! VNI -> the generation of the node's table there (`netdb`). A node on a
//! network reads another node's entries on it only from the generation
//! that node lists, and only while membership keeps the node: leaving a
//! network (one entry gone from the record) or dying (declared down, or
//! "leaving") takes its entries out of every network at once, everywhere.
//!
//! A table's generation is new for every join, so a node that leaves and
//! comes back starts its versions afresh under a new identity, and nobody
//! takes a restarted count for the old one.

use std::sync::atomic::{AtomicU64, Ordering};

/// How `debug gossip` and the table merge name a node's network: `net:VNI`
/// -> the generation of its table there.
pub const NET_PREFIX: &str = "net:";

pub fn net_key(vni: u32) -> String {
    format!("{NET_PREFIX}{vni}")
}

/// A generation no earlier instance of this node used: microseconds since
/// the epoch, and never the same twice in one process.
pub fn next_generation() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = crate::clock::now_ms() * 1000;
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let g = now.max(last + 1);
        match LAST.compare_exchange(last, g, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return g,
            Err(l) => last = l,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_join_gets_a_new_generation() {
        let a = next_generation();
        let b = next_generation();
        assert!(b > a);
        assert!(a >= crate::clock::now_ms() * 1000 - 10_000_000);
    }
}

#[cfg(test)]
#[path = "networks_tests.rs"]
mod scoped_tests;

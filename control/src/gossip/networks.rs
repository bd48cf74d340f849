//! Which networks a node is on, as membership says: one key per network,
//! `net:VNI` -> the generation of the node's table there (`netdb`). A node
//! on a network reads another node's entries on it only from the
//! generation that node lists, and only while membership keeps the node:
//! leaving a network (one key deleted) or dying (convicted, or "leaving")
//! takes its entries out of every network at once, everywhere.
//!
//! A table's generation is new for every join, so a node that leaves and
//! comes back starts its versions afresh under a new identity, and nobody
//! takes a restarted count for the old one.

use std::sync::atomic::{AtomicU64, Ordering};

/// Membership key saying a node is on a network: `net:VNI` -> the
/// generation of its instance for that network.
pub const NET_PREFIX: &str = "net:";

pub fn net_key(vni: u32) -> String {
    format!("{NET_PREFIX}{vni}")
}

/// (VNI, instance generation) of a `net:` key.
pub fn parse_net_key(k: &str, v: &str) -> Option<(u32, u64)> {
    let vni: u32 = k.strip_prefix(NET_PREFIX)?.parse().ok()?;
    if vni == 0 || vni > 0xff_ffff {
        return None;
    }
    Some((vni, v.parse().ok()?))
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
    fn net_keys_round_trip_and_refuse_nonsense() {
        assert_eq!(parse_net_key(&net_key(4097), "17"), Some((4097, 17)));
        for (k, v) in [
            ("net:0", "1"),
            ("net:16777216", "1"),
            ("net:x", "1"),
            ("net:4097", "-1"),
            ("vtep", "1"),
        ] {
            assert_eq!(parse_net_key(k, v), None, "{k}={v}");
        }
    }

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

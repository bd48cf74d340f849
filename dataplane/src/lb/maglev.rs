//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), as Cilium and
//! Katran use it: every node builds the same lookup table from the same
//! backends, so every node sends a flow to the same backend, and a change
//! of backends moves few flows.
//!
//! Each backend gets a permutation of the table's M slots from two hashes
//! of its address (offset and skip); backends take turns claiming their
//! next preferred free slot until the table is full. M is prime, so every
//! skip visits every slot. The hash is xxh3 with fixed seeds: stable across
//! nodes, builds and versions (std's hasher makes no such promise).

use std::net::Ipv4Addr;

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Cilium's default table size.
pub const DEFAULT_M: u32 = 16381;

/// Table sizes the datapath accepts (primes; the map holds up to the
/// largest).
pub const SIZES: &[u32] = &[251, 509, 1021, 2039, 4093, 8191, 16381];

/// The lookup table: slot -> index into `backends` (sorted, deduplicated).
/// Empty when there are no backends.
pub fn table(backends: &[Ipv4Addr], m: u32) -> Vec<u32> {
    assert!(
        SIZES.contains(&m),
        "Maglev size {m} is not one of {SIZES:?}"
    );
    let n = backends.len();
    if n == 0 {
        return vec![];
    }
    let perm: Vec<(u64, u64)> = backends
        .iter()
        .map(|b| {
            let o = b.octets();
            let offset = xxh3_64_with_seed(&o, 0x5a0a1) % u64::from(m);
            let skip = xxh3_64_with_seed(&o, 0x5a0a2) % u64::from(m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; n];
    let mut t = vec![u32::MAX; m as usize];
    let mut filled = 0;
    'fill: loop {
        for i in 0..n {
            let (offset, skip) = perm[i];
            loop {
                let c = ((offset + next[i] * skip) % u64::from(m)) as usize;
                next[i] += 1;
                if t[c] == u32::MAX {
                    t[c] = i as u32;
                    filled += 1;
                    break;
                }
            }
            if filled == m as usize {
                break 'fill;
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(n: u8) -> Vec<Ipv4Addr> {
        (1..=n).map(|i| Ipv4Addr::new(10, 0, 1, i)).collect()
    }

    #[test]
    fn every_slot_is_filled_evenly() {
        let t = table(&ips(3), DEFAULT_M);
        assert_eq!(t.len(), DEFAULT_M as usize);
        let mut count = [0usize; 3];
        for s in &t {
            count[*s as usize] += 1;
        }
        // Maglev's balance: within 1% of M/N here.
        for c in count {
            assert!(
                (c as f64 - DEFAULT_M as f64 / 3.0).abs() < DEFAULT_M as f64 * 0.01,
                "{count:?}"
            );
        }
        assert!(table(&[], DEFAULT_M).is_empty());
    }

    #[test]
    fn removing_a_backend_moves_only_its_slots_mostly() {
        let before = table(&ips(5), DEFAULT_M);
        let kept: Vec<Ipv4Addr> = ips(5).into_iter().filter(|b| b.octets()[3] != 3).collect();
        let after = table(&kept, DEFAULT_M);
        let name = |l: &[Ipv4Addr], i: u32| l[i as usize];
        let moved = (0..DEFAULT_M as usize)
            .filter(|&s| name(&ips(5), before[s]).octets()[3] != 3)
            .filter(|&s| name(&ips(5), before[s]) != name(&kept, after[s]))
            .count();
        // Slots of surviving backends that changed hands: a few percent.
        assert!(moved < DEFAULT_M as usize / 20, "{moved}");
    }

    #[test]
    fn the_same_backends_give_the_same_table() {
        assert_eq!(table(&ips(4), 1021), table(&ips(4), 1021));
    }
}

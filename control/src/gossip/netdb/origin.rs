//! What one node holds of one origin's records on one network, and the
//! version bookkeeping that makes repair cheap (scuttlebutt's idea):
//! every change an origin makes gets the next version number, so "I have
//! every change of yours up to W" is one number per origin, and the delta
//! a peer needs is "your records with a version above W".

use std::net::Ipv4Addr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A node process: its underlay address and the generation of that
/// process (a restart is a new origin; the old one's records go with it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Origin {
    pub addr: Ipv4Addr,
    pub generation: u64,
}

impl Default for Origin {
    fn default() -> Self {
        Origin {
            addr: Ipv4Addr::UNSPECIFIED,
            generation: 0,
        }
    }
}

/// What a record is about, within one network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Key {
    /// An endpoint on the network (the daemon's `ep:VNI:IP`).
    Ep(Ipv4Addr),
    /// What the origin has applied of another node's records
    /// (the daemon's `applied:NODE`).
    Applied(Ipv4Addr),
    /// The origin's node record, in the cluster table (`roster.rs`).
    Node,
}

/// A record's value: shared, because the same bytes sit in the table, in
/// the rumor queue and (in the simulation) in every node's table.
pub type Value = Arc<[u8]>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rec {
    pub key: Key,
    pub version: u64,
    /// None: deleted (a tombstone, kept until the origin collects it).
    pub value: Option<Value>,
}

/// A record as it travels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRec {
    pub key: Key,
    pub version: u64,
    pub value: Option<Vec<u8>>,
}

impl WireRec {
    pub fn from_rec(r: &Rec) -> Self {
        WireRec {
            key: r.key,
            version: r.version,
            value: r.value.as_ref().map(|v| v.to_vec()),
        }
    }

    /// Bytes it takes on the wire, near enough to budget messages by.
    pub fn wire_len(&self) -> usize {
        12 + self.value.as_ref().map_or(0, |v| v.len() + 2)
    }
}

pub fn rec_wire_len(r: &Rec) -> usize {
    12 + r.value.as_ref().map_or(0, |v| v.len() + 2)
}

#[derive(Clone, Debug, Default)]
pub struct OriginView {
    /// Every change of the origin up to this version is here (the newest
    /// per key; a change a later one superseded need not be).
    pub watermark: u64,
    /// Tombstones up to this version were collected by the origin: a peer
    /// below it cannot be sent a delta, only the whole live set.
    pub gc_floor: u64,
    /// Versions seen above the watermark (rumors that overtook a missed
    /// one): the watermark moves past them once the gap is filled.
    ahead: Vec<u64>,
    /// Sorted by key. An origin holds tens of records (its tasks on this
    /// network), so a sorted vector is smaller and faster than a map.
    recs: Vec<Rec>,
}

impl OriginView {
    pub fn recs(&self) -> &[Rec] {
        &self.recs
    }

    pub fn get(&self, key: &Key) -> Option<&Rec> {
        self.recs
            .binary_search_by(|r| r.key.cmp(key))
            .ok()
            .map(|i| &self.recs[i])
    }

    /// Takes `rec` if it is newer than what is held for its key; true if
    /// it was.
    pub fn apply(&mut self, rec: Rec) -> bool {
        if rec.version <= self.gc_floor && rec.value.is_none() {
            return false;
        }
        match self.recs.binary_search_by(|r| r.key.cmp(&rec.key)) {
            Ok(i) if self.recs[i].version >= rec.version => false,
            Ok(i) => {
                self.recs[i] = rec;
                true
            }
            Err(i) => {
                self.recs.insert(i, rec);
                true
            }
        }
    }

    /// Notes that the change numbered `version` has been seen (a rumor
    /// carries exactly one change), moving the watermark over any run of
    /// consecutive versions.
    pub fn saw(&mut self, version: u64) {
        if version <= self.watermark || self.ahead.contains(&version) {
            return;
        }
        self.ahead.push(version);
        self.settle();
    }

    /// A delta brought every change up to `upto`.
    pub fn complete_to(&mut self, upto: u64) {
        self.watermark = self.watermark.max(upto);
        self.settle();
    }

    fn settle(&mut self) {
        loop {
            let next = self.watermark + 1;
            match self.ahead.iter().position(|&v| v == next) {
                Some(i) => {
                    self.ahead.swap_remove(i);
                    self.watermark = next;
                }
                None => break,
            }
        }
        let w = self.watermark;
        self.ahead.retain(|&v| v > w);
    }

    /// The origin collected its tombstones up to `floor`: drop ours too.
    pub fn raise_gc_floor(&mut self, floor: u64) {
        if floor > self.gc_floor {
            self.gc_floor = floor;
            self.recs.retain(|r| r.value.is_some() || r.version > floor);
        }
    }

    /// Replaces everything up to `upto` by `recs` (a peer that was too far
    /// behind gets the origin's whole live set), keeping newer records.
    pub fn reset(&mut self, recs: Vec<Rec>, upto: u64, gc_floor: u64) {
        let newer: Vec<Rec> = self.recs.drain(..).filter(|r| r.version > upto).collect();
        self.recs = recs;
        self.recs.sort_by_key(|a| a.key);
        self.recs.dedup_by(|a, b| a.key == b.key);
        for r in newer {
            self.apply(r);
        }
        self.gc_floor = gc_floor;
        // Everything up to `upto` is theirs now, and what was held above it
        // was kept: a watermark that was already higher still holds.
        self.watermark = self.watermark.max(upto);
        self.settle();
    }

    /// The records a peer at `since` lacks, oldest change first.
    pub fn since(&self, since: u64) -> Vec<&Rec> {
        let mut out: Vec<&Rec> = self.recs.iter().filter(|r| r.version > since).collect();
        out.sort_by_key(|r| r.version);
        out
    }

    /// Highest version held (the origin's own view: its last change).
    pub fn max_version(&self) -> u64 {
        self.recs
            .iter()
            .map(|r| r.version)
            .max()
            .unwrap_or(0)
            .max(self.watermark)
    }

    pub fn live(&self) -> impl Iterator<Item = &Rec> {
        self.recs.iter().filter(|r| r.value.is_some())
    }

    /// Heap bytes this view holds, payloads counted as if not shared.
    pub fn heap_bytes(&self) -> usize {
        self.recs.capacity() * std::mem::size_of::<Rec>()
            + self.ahead.capacity() * 8
            + self
                .recs
                .iter()
                .map(|r| r.value.as_ref().map_or(0, |v| v.len() + 16))
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ip: u8, version: u64, v: Option<&str>) -> Rec {
        Rec {
            key: Key::Ep(Ipv4Addr::new(10, 0, 0, ip)),
            version,
            value: v.map(|s| Arc::from(s.as_bytes())),
        }
    }

    #[test]
    fn newer_wins_and_the_watermark_waits_for_gaps() {
        let mut v = OriginView::default();
        assert!(v.apply(rec(1, 1, Some("a"))));
        v.saw(1);
        assert!(v.apply(rec(1, 3, Some("c"))));
        v.saw(3);
        assert_eq!(v.watermark, 1, "version 2 is missing");
        assert!(!v.apply(rec(1, 2, Some("b"))), "older than what is held");
        v.saw(2);
        assert_eq!(v.watermark, 3);
        assert_eq!(
            v.get(&Key::Ep(Ipv4Addr::new(10, 0, 0, 1))).unwrap().version,
            3
        );
    }

    #[test]
    fn since_is_ordered_by_version_and_reset_keeps_newer() {
        let mut v = OriginView::default();
        v.apply(rec(2, 5, Some("x")));
        v.apply(rec(1, 7, None));
        v.apply(rec(3, 6, Some("y")));
        let s: Vec<u64> = v.since(5).iter().map(|r| r.version).collect();
        assert_eq!(s, vec![6, 7]);
        v.reset(vec![rec(4, 2, Some("z"))], 6, 3);
        let keys: Vec<u64> = v.recs().iter().map(|r| r.version).collect();
        assert_eq!(
            keys,
            vec![7, 2],
            "the tombstone at 7 is newer than the reset"
        );
        assert_eq!((v.watermark, v.gc_floor), (6, 3));
        v.raise_gc_floor(7);
        assert_eq!(v.recs().len(), 1);
    }
}

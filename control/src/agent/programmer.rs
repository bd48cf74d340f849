//! Programming remote endpoints from the merged gossip table: only the
//! difference against what is already in the map is written, so a change
//! costs O(change) map updates.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::Result;
use shoal_dataplane::ebpf::{EpValue, EP_F_LOCAL, EP_F_REMOTE, EP_F_STATIC};
use shoal_dataplane::overlay::{ip_key, key_ip, Maps};
use tracing::{info, warn};

use crate::gossip::table::{Merged, Remote};

pub struct Programmer {
    programmed: BTreeMap<(u32, Ipv4Addr), EpValue>,
    /// Until then, entries found in the pinned map at start that gossip has
    /// not confirmed yet are kept: a restarted agent must not cut flows
    /// while it relearns the table.
    keep_adopted_until: Instant,
    adopted: BTreeSet<(u32, Ipv4Addr)>,
    refused_seen: BTreeSet<(String, String, &'static str)>,
    pub refused_total: BTreeMap<&'static str, u64>,
    pub last: Merged,
    /// Endpoints created after this agent started: how long each took from
    /// its creation on its node to being programmed here.
    pub propagation: Histogram,
    /// How long each programming pass (`Agent::resync`) took.
    pub passes: Histogram,
    started_ms: u64,
    seen: BTreeSet<(u32, Ipv4Addr, u64)>,
}

/// Upper bounds of the propagation buckets, seconds.
pub const PROPAGATION_BOUNDS: [f64; 10] = [0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0];
/// Upper bounds of the programming-pass buckets, seconds.
pub const PASS_BOUNDS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// Durations, bucketed (cumulative buckets are made when exported): gossip
/// propagation times (creation on another node -> programmed here; node
/// clocks are compared, so skew between nodes shows in it), and how long
/// each programming pass took.
#[derive(Clone, Debug)]
pub struct Histogram {
    pub bounds: &'static [f64; 10],
    pub buckets: [u64; 10],
    pub count: u64,
    pub sum_seconds: f64,
    pub max_seconds: f64,
    pub last_seconds: f64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64; 10]) -> Self {
        Self {
            bounds,
            buckets: [0; 10],
            count: 0,
            sum_seconds: 0.0,
            max_seconds: 0.0,
            last_seconds: 0.0,
        }
    }

    pub fn observe(&mut self, secs: f64) {
        if let Some(i) = self.bounds.iter().position(|b| secs <= *b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum_seconds += secs;
        self.max_seconds = self.max_seconds.max(secs);
        self.last_seconds = secs;
    }

    pub fn stats(&self) -> shoal_dns::LatencyStats {
        shoal_dns::LatencyStats {
            bounds: self.bounds.to_vec(),
            buckets: self.buckets.to_vec(),
            count: self.count,
            sum_seconds: self.sum_seconds,
        }
    }
}

impl Programmer {
    /// Adopts the remote entries a previous run left in the pinned map.
    pub fn new(maps: &Maps, grace: Duration) -> Self {
        let mut programmed = BTreeMap::new();
        for (k, v) in maps.endpoints() {
            if v.flags & (EP_F_LOCAL | EP_F_STATIC) == 0 {
                programmed.insert((k.vni, key_ip(k.ip)), v);
            }
        }
        let adopted = programmed.keys().cloned().collect();
        Self {
            programmed,
            keep_adopted_until: Instant::now() + grace,
            adopted,
            refused_seen: BTreeSet::new(),
            refused_total: BTreeMap::new(),
            last: Merged::default(),
            propagation: Histogram::new(&PROPAGATION_BOUNDS),
            passes: Histogram::new(&PASS_BOUNDS),
            started_ms: crate::clock::now_ms(),
            seen: BTreeSet::new(),
        }
    }

    /// Makes the map's remote entries equal to `merged.desired`.
    pub fn apply(&mut self, maps: &mut Maps, merged: Merged) -> Result<(usize, usize)> {
        for r in &merged.refused {
            if self.refused_seen.insert(r.clone()) {
                *self.refused_total.entry(r.2).or_default() += 1;
                warn!(node = %r.0, key = %r.1, reason = r.2, "gossip entry refused");
            }
        }
        let want: BTreeMap<(u32, Ipv4Addr), EpValue> =
            merged.desired.iter().map(|(k, r)| (*k, value(r))).collect();
        self.observe_propagation(&merged);
        let (mut added, mut removed) = (0, 0);
        for (k, v) in &want {
            if self.programmed.get(k) != Some(v) {
                // Never overwrite a local endpoint or a static peer.
                if let Some(cur) = maps.endpoint(k.0, k.1) {
                    if cur.flags & (EP_F_LOCAL | EP_F_STATIC) != 0 {
                        continue;
                    }
                }
                maps.upsert_endpoint(k.0, k.1, *v)?;
                self.programmed.insert(*k, *v);
                added += 1;
            }
            self.adopted.remove(k);
        }
        let keep_adopted = Instant::now() < self.keep_adopted_until;
        let gone: Vec<(u32, Ipv4Addr)> = self
            .programmed
            .keys()
            .filter(|k| !(want.contains_key(k) || keep_adopted && self.adopted.contains(k)))
            .cloned()
            .collect();
        for k in gone {
            if let Some(cur) = maps.endpoint(k.0, k.1) {
                if cur.flags & (EP_F_LOCAL | EP_F_STATIC) == 0 {
                    maps.remove_endpoint(k.0, k.1)?;
                }
            }
            self.programmed.remove(&k);
            self.adopted.remove(&k);
            removed += 1;
        }
        if added + removed > 0 {
            info!(
                added,
                removed,
                total = self.programmed.len(),
                "remote endpoints programmed"
            );
        }
        self.last = merged;
        Ok((added, removed))
    }

    /// Entries of other nodes seen for the first time, created after this
    /// agent started: their age is how long gossip took to bring them
    /// (whether or not this node programs them: it may not have joined
    /// their network).
    fn observe_propagation(&mut self, merged: &Merged) {
        let now = crate::clock::now_ms();
        let current: BTreeSet<(u32, Ipv4Addr, u64)> = merged
            .entries
            .iter()
            .filter(|e| e.refused.is_none() && e.since >= self.started_ms)
            .map(|e| (e.vni, e.ip, e.since))
            .collect();
        for (_, _, since) in current.difference(&self.seen) {
            self.propagation
                .observe(now.saturating_sub(*since) as f64 / 1000.0);
        }
        self.seen = current;
    }

    /// Still relearning the table after a restart: what gossip has not
    /// confirmed yet is kept, not removed.
    pub fn adopting(&self) -> bool {
        Instant::now() < self.keep_adopted_until
    }

    pub fn is_programmed(&self, vni: u32, ip: Ipv4Addr) -> bool {
        self.programmed.contains_key(&(vni, ip))
    }
}

fn value(r: &Remote) -> EpValue {
    EpValue {
        ifindex: 0,
        vtep: ip_key(r.vtep),
        mac: r.mac,
        flags: EP_F_REMOTE,
        slot: 0,
    }
}

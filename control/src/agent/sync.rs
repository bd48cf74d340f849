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
    }
}

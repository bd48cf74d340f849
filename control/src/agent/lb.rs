//! The node's VIP balancer programming: from the gossip table (what runs),
//! each service VIP on a network this node has joined gets its healthy
//! tasks as backends, written into the eBPF maps (`shoal_dataplane::lb`)
//! as the difference against what is programmed. A VIP whose tasks are all
//! gone or unhealthy stays programmed with no backend: it answers ping and
//! ARP, and connections to it are dropped (and counted) instead of hanging
//! on ARP.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use shoal_dataplane::lb::LbMaps;
use tracing::{info, warn};

use super::dns::Rec;

pub type Desired = BTreeMap<(u32, Ipv4Addr), BTreeSet<Ipv4Addr>>;

/// Services and their healthy backends, for the networks in `joined`.
pub fn desired<'a>(recs: impl Iterator<Item = Rec<'a>>, joined: &BTreeSet<u32>) -> Desired {
    let mut d = Desired::new();
    for (vni, ip, r) in recs {
        let Some(vip) = r.vip else { continue };
        if !joined.contains(&vni) {
            continue;
        }
        let backends = d.entry((vni, vip)).or_default();
        if matches!(r.health.as_str(), "none" | "healthy") {
            backends.insert(ip);
        }
    }
    d
}

pub struct LbProgrammer {
    pub maps: LbMaps,
    /// Maglev table size for every service.
    pub m: u32,
    programmed: Desired,
}

impl LbProgrammer {
    /// Adopts what a previous run left in the pinned maps.
    pub fn new(maps: LbMaps, m: u32) -> Self {
        let programmed = maps
            .services()
            .into_iter()
            .map(|s| {
                (
                    (s.vni, s.vip),
                    s.backends.into_iter().map(|(b, _)| b).collect(),
                )
            })
            .collect();
        Self {
            maps,
            m,
            programmed,
        }
    }

    pub fn apply(&mut self, want: Desired) {
        for (k, backends) in &want {
            if self.programmed.get(k) == Some(backends) {
                continue;
            }
            let list: Vec<Ipv4Addr> = backends.iter().copied().collect();
            match self.maps.set_service(k.0, k.1, &list, self.m) {
                Ok(()) => {
                    info!(vni = k.0, vip = %k.1, backends = list.len(), "service balanced");
                    self.programmed.insert(*k, backends.clone());
                }
                Err(e) => warn!(vni = k.0, vip = %k.1, "balancer: {e}"),
            }
        }
        let gone: Vec<(u32, Ipv4Addr)> = self
            .programmed
            .keys()
            .filter(|k| !want.contains_key(k))
            .copied()
            .collect();
        for k in gone {
            self.maps.remove_service(k.0, k.1);
            self.programmed.remove(&k);
            info!(vni = k.0, vip = %k.1, "service no longer balanced here");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::table::SvcRecord;

    fn rec(vip: Option<Ipv4Addr>, health: &str) -> SvcRecord {
        SvcRecord {
            service_id: "s".into(),
            service: "web".into(),
            task_id: "t".into(),
            task: "web.1.t".into(),
            slot: 1,
            network: "appnet".into(),
            vip,
            aliases: vec![],
            health: health.into(),
        }
    }

    #[test]
    fn healthy_tasks_of_joined_networks_only() {
        let vip = Ipv4Addr::new(10, 0, 1, 2);
        let (ok, sick, rr) = (
            rec(Some(vip), "healthy"),
            rec(Some(vip), "starting"),
            rec(None, "none"),
        );
        let recs = [
            (4096, Ipv4Addr::new(10, 0, 1, 5), &ok),
            (4096, Ipv4Addr::new(10, 0, 1, 6), &sick),
            (4096, Ipv4Addr::new(10, 0, 1, 7), &rr),
            (4097, Ipv4Addr::new(10, 0, 2, 5), &ok),
        ];
        let d = desired(recs.into_iter(), &BTreeSet::from([4096]));
        assert_eq!(d.len(), 1);
        assert_eq!(
            d[&(4096, vip)],
            BTreeSet::from([Ipv4Addr::new(10, 0, 1, 5)])
        );
    }
}

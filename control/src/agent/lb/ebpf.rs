//! The eBPF balancer (the default): each service VIP's backends written
//! into the pinned maps (`shoal_dataplane::lb`) as the difference against
//! what is programmed; the tc program on every endpoint's veth balances.
//! A VIP whose tasks are all gone or unhealthy stays programmed with no
//! backend: it answers ping and ARP, and connections to it are dropped
//! (and counted) instead of hanging on ARP.

use std::net::Ipv4Addr;

use shoal_dataplane::lb::LbMaps;
use tracing::{info, warn};

use super::Desired;

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

    fn program(&mut self, want: &Desired) {
        for (k, backends) in want {
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

impl super::Balancer for LbProgrammer {
    async fn apply(&mut self, want: &Desired, ctx: super::Ctx<'_>) {
        let want = super::settle(want, &self.programmed, ctx.adopting);
        crate::heavy::heavy(|| self.program(&want))
    }
}

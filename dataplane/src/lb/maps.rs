//! Typed access to the load balancer's pinned maps (`ebpf/c/include/lb.h`):
//! services by (VNI, VIP), their Maglev tables and live backends, and the
//! two conntrack tables.

use std::collections::{BTreeSet, HashMap as StdHashMap};
use std::net::Ipv4Addr;
use std::path::Path;

use aya::maps::{HashMap, Map, MapData, PerCpuHashMap};
use shoal_ebpf::{
    map, BackendKey, CtKey, CtValue, LbStatValue, MaglevValue, SvcKey, SvcValue, MAGLEV_MAX,
};

use super::maglev;
use crate::overlay::{ip_key, key_ip};
use crate::Error;

pub struct LbMaps {
    stats: PerCpuHashMap<MapData, BackendKey, LbStatValue>,
    services: HashMap<MapData, SvcKey, SvcValue>,
    maglev: HashMap<MapData, SvcKey, MaglevValue>,
    backends: HashMap<MapData, BackendKey, u32>,
    ct: HashMap<MapData, CtKey, CtValue>,
    rct: HashMap<MapData, CtKey, CtValue>,
    /// Each service's backends as the backends map holds them, read from
    /// the map once (a restarted agent adopts what its predecessor
    /// programmed) and kept beside it since: finding a service's stale
    /// backends by walking the whole map was one syscall per backend of
    /// every service, for every service programmed (minutes at 96,287
    /// backends).
    installed: Option<StdHashMap<(u32, u32), BTreeSet<u32>>>,
}

/// A service as the datapath holds it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LbService {
    pub vni: u32,
    pub vip: Ipv4Addr,
    pub m: u32,
    pub backends: Vec<(Ipv4Addr, u32)>,
}

/// What a service sent one backend.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LbCounter {
    pub vni: u32,
    pub vip: Ipv4Addr,
    pub backend: Ipv4Addr,
    pub packets: u64,
    pub bytes: u64,
}

/// A conntrack entry: a client's flow to a VIP and its backend.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LbFlow {
    pub vni: u32,
    pub client: Ipv4Addr,
    pub client_port: u16,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub proto: u8,
    pub backend: Ipv4Addr,
}

impl LbMaps {
    pub fn open(dir: &Path) -> Result<Self, Error> {
        let hash = |name: &str| -> Result<MapData, Error> { crate::pinned_map(dir, name) };
        Ok(Self {
            stats: PerCpuHashMap::try_from(Map::PerCpuHashMap(hash(map::LB_STATS)?))
                .map_err(|e| Error::map("map shoal_lb_stats", e))?,
            services: HashMap::try_from(Map::HashMap(hash(map::SERVICES)?))
                .map_err(|e| Error::map("map shoal_services", e))?,
            maglev: HashMap::try_from(Map::HashMap(hash(map::MAGLEV)?))
                .map_err(|e| Error::map("map shoal_maglev", e))?,
            backends: HashMap::try_from(Map::HashMap(hash(map::BACKENDS)?))
                .map_err(|e| Error::map("map shoal_backends", e))?,
            ct: HashMap::try_from(Map::LruHashMap(hash(map::CT)?))
                .map_err(|e| Error::map("map shoal_ct", e))?,
            rct: HashMap::try_from(Map::LruHashMap(hash(map::RCT)?))
                .map_err(|e| Error::map("map shoal_rct", e))?,
            installed: None,
        })
    }

    /// The backends map by service, read once.
    fn installed(&mut self) -> &mut StdHashMap<(u32, u32), BTreeSet<u32>> {
        let backends = &self.backends;
        self.installed.get_or_insert_with(|| {
            let mut by: StdHashMap<(u32, u32), BTreeSet<u32>> = StdHashMap::new();
            for k in backends.keys().filter_map(|k| k.ok()) {
                by.entry((k.vni, k.vip)).or_default().insert(k.ip);
            }
            by
        })
    }

    /// Programs a service's backends (any order): its Maglev table first,
    /// then the live set, so a packet never finds a slot naming a backend
    /// the table does not know. `m`: one of `maglev::SIZES`.
    pub fn set_service(
        &mut self,
        vni: u32,
        vip: Ipv4Addr,
        backends: &[Ipv4Addr],
        m: u32,
    ) -> Result<(), Error> {
        let set: BTreeSet<Ipv4Addr> = backends.iter().copied().collect();
        let list: Vec<Ipv4Addr> = set.iter().copied().collect();
        let key = SvcKey {
            vni,
            vip: ip_key(vip),
        };
        let mut table = MaglevValue::zeroed();
        for (slot, i) in maglev::table(&list, m).into_iter().enumerate() {
            table.slots[slot] = ip_key(list[i as usize]);
        }
        self.maglev
            .insert(key, table, 0)
            .map_err(|e| Error::map("maglev insert", e))?;
        for b in &list {
            let bk = BackendKey {
                vni,
                vip: ip_key(vip),
                ip: ip_key(*b),
            };
            self.backends
                .insert(bk, 1, 0)
                .map_err(|e| Error::map("backend insert", e))?;
        }
        self.services
            .insert(
                key,
                SvcValue {
                    count: list.len() as u32,
                    m,
                    ..Default::default()
                },
                0,
            )
            .map_err(|e| Error::map("service insert", e))?;
        let now: BTreeSet<u32> = list.iter().map(|b| ip_key(*b)).collect();
        let was = self
            .installed()
            .insert((vni, ip_key(vip)), now.clone())
            .unwrap_or_default();
        self.drop_backends(vni, vip, was.difference(&now).copied());
        Ok(())
    }

    fn drop_backends(&mut self, vni: u32, vip: Ipv4Addr, ips: impl IntoIterator<Item = u32>) {
        for ip in ips {
            let _ = self.backends.remove(&BackendKey {
                vni,
                vip: ip_key(vip),
                ip,
            });
        }
    }

    pub fn remove_service(&mut self, vni: u32, vip: Ipv4Addr) {
        let key = SvcKey {
            vni,
            vip: ip_key(vip),
        };
        let _ = self.services.remove(&key);
        let _ = self.maglev.remove(&key);
        let gone = self
            .installed()
            .remove(&(vni, ip_key(vip)))
            .unwrap_or_default();
        self.drop_backends(vni, vip, gone);
        let counted: Vec<BackendKey> = self
            .stats
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| k.vni == vni && k.vip == ip_key(vip))
            .collect();
        for k in counted {
            let _ = self.stats.remove(&k);
        }
    }

    /// The live backends of a service, as the map holds them.
    #[cfg(test)]
    pub(crate) fn backends_of(&self, vni: u32, vip: Ipv4Addr) -> Vec<Ipv4Addr> {
        let mut out: Vec<Ipv4Addr> = self
            .backends
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| k.vni == vni && k.vip == ip_key(vip))
            .map(|k| key_ip(k.ip))
            .collect();
        out.sort();
        out
    }

    /// Size of each conntrack table (`SHOAL_CT_MAX` in lb.h).
    pub const CT_CAPACITY: u64 = 262_144;

    /// Entries in the conntrack tables now: (flows, reverse entries).
    pub fn conntrack_entries(&self) -> (u64, u64) {
        (
            self.ct.keys().filter(|k| k.is_ok()).count() as u64,
            self.rct.keys().filter(|k| k.is_ok()).count() as u64,
        )
    }

    /// Packets and bytes each service sent each backend (summed over CPUs).
    pub fn counters(&self) -> Vec<LbCounter> {
        let mut out: Vec<LbCounter> = self
            .stats
            .iter()
            .filter_map(|r| r.ok())
            .map(|(k, per_cpu)| LbCounter {
                vni: k.vni,
                vip: key_ip(k.vip),
                backend: key_ip(k.ip),
                packets: per_cpu.iter().map(|v| v.packets).sum(),
                bytes: per_cpu.iter().map(|v| v.bytes).sum(),
            })
            .collect();
        out.sort_by_key(|c| (c.vni, c.vip, c.backend));
        out
    }

    /// Every service with each backend's share of its Maglev table.
    pub fn services(&self) -> Vec<LbService> {
        let mut out = vec![];
        for (k, v) in self.services.iter().filter_map(|r| r.ok()) {
            let mut shares: std::collections::BTreeMap<Ipv4Addr, u32> = Default::default();
            if let Ok(t) = self.maglev.get(&k, 0) {
                for s in &t.slots[..(v.m as usize).min(MAGLEV_MAX)] {
                    if *s != 0 {
                        *shares.entry(key_ip(*s)).or_default() += 1;
                    }
                }
            }
            out.push(LbService {
                vni: k.vni,
                vip: key_ip(k.vip),
                m: v.m,
                backends: shares.into_iter().collect(),
            });
        }
        out.sort_by_key(|s| (s.vni, s.vip));
        out
    }

    /// The conntrack table (clients' flows to VIPs).
    pub fn flows(&self) -> Vec<LbFlow> {
        let mut out: Vec<LbFlow> = self
            .ct
            .iter()
            .filter_map(|r| r.ok())
            .map(|(k, v)| LbFlow {
                vni: k.vni,
                client: key_ip(k.saddr),
                client_port: u16::from_be(k.sport),
                vip: key_ip(k.daddr),
                port: u16::from_be(k.dport),
                proto: k.proto,
                backend: key_ip(v.backend),
            })
            .collect();
        out.sort_by_key(|f| (f.vni, f.vip, f.client, f.client_port));
        out
    }
}

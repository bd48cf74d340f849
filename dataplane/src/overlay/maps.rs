//! Typed access to the overlay's pinned maps. Opening by pin path (not
//! through the loaded object) lets `shoal debug` read a node's tables
//! without loading anything.

use std::net::Ipv4Addr;
use std::path::Path;

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray, PerCpuHashMap};
use serde::{Deserialize, Serialize};
use shoal_ebpf::{map, Config, DropReason, EpKey, EpTraffic, EpValue, IfaceValue, Stat, VniValue};

use crate::Error;

/// The overlay's maps of one daemon.
pub struct Maps {
    endpoints: HashMap<MapData, EpKey, EpValue>,
    ifaces: HashMap<MapData, u32, IfaceValue>,
    vnis: HashMap<MapData, u32, VniValue>,
    config: Array<MapData, Config>,
    drops: PerCpuArray<MapData, u64>,
    stats: PerCpuArray<MapData, u64>,
    ep_traffic: PerCpuHashMap<MapData, u32, EpTraffic>,
}

macro_rules! typed {
    ($variant:ident, $dir:expr, $name:expr) => {
        Map::$variant(crate::pinned_map($dir, $name)?)
            .try_into()
            .map_err(|e| Error::map(format!("map {}", $name), e))?
    };
}

/// Forwarding and drop counters summed over CPUs.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counters {
    pub stats: Vec<(String, u64)>,
    pub drops: Vec<(String, u64)>,
}

impl Counters {
    pub fn drop_count(&self, reason: DropReason) -> u64 {
        self.drops
            .iter()
            .find(|(l, _)| l == reason.label())
            .map(|(_, v)| *v)
            .unwrap_or(0)
    }
    pub fn stat(&self, s: Stat) -> u64 {
        self.stats
            .iter()
            .find(|(l, _)| l == s.label())
            .map(|(_, v)| *v)
            .unwrap_or(0)
    }
}

pub fn ip_key(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

pub fn key_ip(k: u32) -> Ipv4Addr {
    Ipv4Addr::from(k.to_ne_bytes())
}

/// A map removal where "was not there" is not an error: whether it was.
fn removed(r: Result<(), aya::maps::MapError>) -> Result<bool, aya::maps::MapError> {
    match r {
        Ok(()) => Ok(true),
        Err(aya::maps::MapError::KeyNotFound) => Ok(false),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

impl Maps {
    pub fn open(dir: &Path) -> Result<Self, Error> {
        Ok(Self {
            endpoints: typed!(HashMap, dir, map::ENDPOINTS),
            ifaces: typed!(HashMap, dir, map::IFACES),
            vnis: typed!(HashMap, dir, map::VNIS),
            config: typed!(Array, dir, map::CONFIG),
            drops: typed!(PerCpuArray, dir, map::DROPS),
            stats: typed!(PerCpuArray, dir, map::STATS),
            ep_traffic: typed!(PerCpuHashMap, dir, map::EP_TRAFFIC),
        })
    }

    pub fn set_config(&mut self, cfg: Config) -> Result<(), Error> {
        self.config
            .set(0, cfg, 0)
            .map_err(|e| Error::map("write config", e))
    }

    pub fn config(&self) -> Result<Config, Error> {
        self.config
            .get(&0, 0)
            .map_err(|e| Error::map("read config", e))
    }

    pub fn upsert_endpoint(&mut self, vni: u32, ip: Ipv4Addr, v: EpValue) -> Result<(), Error> {
        self.endpoints
            .insert(
                EpKey {
                    vni,
                    ip: ip_key(ip),
                },
                v,
                0,
            )
            .map_err(|e| Error::map(format!("write endpoint {vni}/{ip}"), e))
    }

    pub fn remove_endpoint(&mut self, vni: u32, ip: Ipv4Addr) -> Result<bool, Error> {
        match self.endpoints.remove(&EpKey {
            vni,
            ip: ip_key(ip),
        }) {
            Ok(()) => Ok(true),
            Err(aya::maps::MapError::KeyNotFound) => Ok(false),
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(false)
            }
            Err(e) => Err(Error::map(format!("remove endpoint {vni}/{ip}"), e)),
        }
    }

    pub fn endpoint(&self, vni: u32, ip: Ipv4Addr) -> Option<EpValue> {
        self.endpoints
            .get(
                &EpKey {
                    vni,
                    ip: ip_key(ip),
                },
                0,
            )
            .ok()
    }

    pub fn endpoints(&self) -> Vec<(EpKey, EpValue)> {
        self.endpoints.iter().filter_map(|r| r.ok()).collect()
    }

    pub fn set_iface(&mut self, ifindex: u32, v: IfaceValue) -> Result<(), Error> {
        self.ifaces
            .insert(ifindex, v, 0)
            .map_err(|e| Error::map(format!("write iface {ifindex}"), e))
    }

    pub fn remove_iface(&mut self, ifindex: u32) -> Result<bool, Error> {
        removed(self.ifaces.remove(&ifindex))
            .map_err(|e| Error::map(format!("remove iface {ifindex}"), e))
    }

    pub fn ifaces(&self) -> Vec<(u32, IfaceValue)> {
        self.ifaces.iter().filter_map(|r| r.ok()).collect()
    }

    /// A network this node is on; `flags`: `VNI_F_*`. An encrypted
    /// network keeps the vxlan device it has.
    pub fn add_vni(&mut self, vni: u32, flags: u32) -> Result<(), Error> {
        let crypt_ifindex = match flags & shoal_ebpf::VNI_F_ENCRYPTED {
            0 => 0,
            _ => self.vnis.get(&vni, 0).map_or(0, |v| v.crypt_ifindex),
        };
        let v = VniValue {
            flags,
            crypt_ifindex,
        };
        self.vnis
            .insert(vni, v, 0)
            .map_err(|e| Error::map(format!("write vni {vni}"), e))
    }

    /// The vxlan device an encrypted network `vni` leaves by (0: none);
    /// false if this node is not on it.
    pub fn set_vni_device(&mut self, vni: u32, ifindex: u32) -> Result<bool, Error> {
        let Ok(mut v) = self.vnis.get(&vni, 0) else {
            return Ok(false);
        };
        v.crypt_ifindex = ifindex;
        self.vnis
            .insert(vni, v, 0)
            .map_err(|e| Error::map(format!("write vni {vni}"), e))?;
        Ok(true)
    }

    pub fn remove_vni(&mut self, vni: u32) -> Result<bool, Error> {
        removed(self.vnis.remove(&vni)).map_err(|e| Error::map(format!("remove vni {vni}"), e))
    }

    pub fn vnis(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.vnis.keys().filter_map(|r| r.ok()).collect();
        v.sort();
        v
    }

    /// The networks this node is on that are encrypted.
    pub fn encrypted_vnis(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .vnis
            .iter()
            .filter_map(|r| r.ok())
            .filter(|(_, f)| f.flags & shoal_ebpf::VNI_F_ENCRYPTED != 0)
            .map(|(k, _)| k)
            .collect();
        v.sort();
        v
    }

    /// Each endpoint's traffic (by its host-side veth's ifindex), summed
    /// over CPUs.
    pub fn endpoint_traffic(&self) -> std::collections::HashMap<u32, EpTraffic> {
        self.ep_traffic
            .iter()
            .filter_map(|r| r.ok())
            .map(|(k, per_cpu)| {
                let mut t = EpTraffic::default();
                for v in per_cpu.iter() {
                    t.tx_packets += v.tx_packets;
                    t.tx_bytes += v.tx_bytes;
                    t.rx_packets += v.rx_packets;
                    t.rx_bytes += v.rx_bytes;
                }
                (k, t)
            })
            .collect()
    }

    /// Drops a gone endpoint's counters (its ifindex may come back).
    pub fn forget_endpoint_traffic(&mut self, ifindex: u32) {
        let _ = removed(self.ep_traffic.remove(&ifindex));
    }

    pub fn counters(&self) -> Counters {
        let sum = |m: &PerCpuArray<MapData, u64>, i: u32| {
            m.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0)
        };
        Counters {
            stats: Stat::ALL
                .iter()
                .map(|s| (s.label().to_string(), sum(&self.stats, *s as u32)))
                .collect(),
            drops: DropReason::ALL
                .iter()
                .skip(1)
                .map(|d| (d.label().to_string(), sum(&self.drops, *d as u32)))
                .collect(),
        }
    }
}

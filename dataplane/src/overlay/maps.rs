//! Typed access to the overlay's pinned maps. Opening by pin path (not
//! through the loaded object) lets `shoal debug` read a node's tables
//! without loading anything.

use std::net::Ipv4Addr;
use std::path::Path;

use std::collections::BTreeSet;

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray, PerCpuValues};
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
    ep_traffic: PerCpuArray<MapData, EpTraffic>,
    /// The `ep_traffic` slots the iface entries hold: read from the map on
    /// the first allocation, then kept here (one scan, not one per endpoint).
    slots_used: Option<BTreeSet<u32>>,
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
            ep_traffic: typed!(PerCpuArray, dir, map::EP_TRAFFIC),
            slots_used: None,
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
            .map_err(|e| Error::map(format!("write iface {ifindex}"), e))?;
        if let (Some(used), true) = (self.slots_used.as_mut(), v.slot != 0) {
            used.insert(v.slot);
        }
        Ok(())
    }

    /// Removes the entry and frees its traffic slot.
    pub fn remove_iface(&mut self, ifindex: u32) -> Result<bool, Error> {
        let slot = self.ifaces.get(&ifindex, 0).map_or(0, |v| v.slot);
        let gone = removed(self.ifaces.remove(&ifindex))
            .map_err(|e| Error::map(format!("remove iface {ifindex}"), e))?;
        if let Some(used) = self.slots_used.as_mut() {
            used.remove(&slot);
        }
        Ok(gone)
    }

    pub fn iface(&self, ifindex: u32) -> Option<IfaceValue> {
        self.ifaces.get(&ifindex, 0).ok()
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

    /// The traffic slot of the local endpoint behind `ifindex`. An
    /// endpoint whose entry already holds one keeps it: a restarted agent
    /// goes on counting where it was. A `fresh` endpoint (its veth just
    /// made) whose ifindex still has a gone endpoint's entry (its veth
    /// vanished before the agent could remove it) takes that slot over,
    /// zeroed. Otherwise the lowest free slot, zeroed: a slot outlives the
    /// endpoint that had it. The caller writes it into the endpoint's
    /// iface and ep entries.
    pub fn traffic_slot(&mut self, ifindex: u32, fresh: bool) -> Result<u32, Error> {
        if let Some(v) = self.iface(ifindex).filter(|v| v.slot != 0) {
            if fresh {
                self.zero_traffic(v.slot)?;
            }
            return Ok(v.slot);
        }
        if self.slots_used.is_none() {
            let used = self.ifaces().into_iter().map(|(_, v)| v.slot).collect();
            self.slots_used = Some(used);
        }
        let slots = self.ep_traffic.len();
        let used = self.slots_used.as_ref().expect("loaded above");
        let slot = (1..slots).find(|s| !used.contains(s)).ok_or_else(|| {
            Error::Other(format!(
                "every one of the {slots} endpoint traffic slots is taken"
            ))
        })?;
        self.zero_traffic(slot)?;
        self.slots_used.as_mut().expect("loaded above").insert(slot);
        Ok(slot)
    }

    fn zero_traffic(&mut self, slot: u32) -> Result<(), Error> {
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| Error::io(what.to_string(), e))?;
        let zero = PerCpuValues::try_from(vec![EpTraffic::default(); cpus])
            .map_err(|e| Error::io("per-CPU zero".to_string(), e))?;
        self.ep_traffic
            .set(slot, zero, 0)
            .map_err(|e| Error::map(format!("zero traffic slot {slot}"), e))
    }

    /// Each local endpoint's traffic (by its host-side veth's ifindex),
    /// summed over CPUs.
    pub fn endpoint_traffic(&self) -> std::collections::HashMap<u32, EpTraffic> {
        self.ifaces()
            .into_iter()
            .filter(|(_, v)| v.slot != 0)
            .filter_map(|(ifindex, v)| {
                let per_cpu = self.ep_traffic.get(&v.slot, 0).ok()?;
                let mut t = EpTraffic::default();
                for c in per_cpu.iter() {
                    t.tx_packets += c.tx_packets;
                    t.tx_bytes += c.tx_bytes;
                    t.rx_packets += c.rx_packets;
                    t.rx_bytes += c.rx_bytes;
                }
                Some((ifindex, t))
            })
            .collect()
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

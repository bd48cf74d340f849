//! The routing mesh's pinned maps (`ebpf/c/include/mesh.h`): published
//! ports, and the flows that entered through this node.

use std::net::Ipv4Addr;
use std::path::Path;

use aya::maps::{HashMap, Map, MapData};
use serde::{Deserialize, Serialize};
use shoal_ebpf::{map, CtKey, CtValue, MeshPortKey, MeshPortValue, MeshRevValue, MESH_F_HOST};

use crate::overlay::{ip_key, key_ip};
use crate::Error;

/// A published port as the datapath holds it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MeshPort {
    pub proto: u8,
    pub published: u16,
    /// Ingress mode: the service's VIP on the ingress network (its Maglev
    /// table). Host mode: the local task's address on network `vni`.
    pub addr: Ipv4Addr,
    pub target: u16,
    /// Host mode (`mode=host`): straight to the one local task.
    pub host: bool,
    pub vni: u32,
}

/// A client's flow that entered the cluster through this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshFlow {
    pub proto: u8,
    pub client: Ipv4Addr,
    pub client_port: u16,
    pub node_addr: Ipv4Addr,
    pub published: u16,
    pub backend: Ipv4Addr,
}

pub struct MeshMaps {
    ports: HashMap<MapData, MeshPortKey, MeshPortValue>,
    addrs: HashMap<MapData, u32, u32>,
    ct: HashMap<MapData, CtKey, CtValue>,
    rev: HashMap<MapData, CtKey, MeshRevValue>,
}

fn port_key(proto: u8, port: u16) -> MeshPortKey {
    MeshPortKey {
        port: port.to_be(),
        proto,
        pad: 0,
    }
}

impl MeshMaps {
    pub fn open(dir: &Path) -> Result<Self, Error> {
        Ok(Self {
            ports: HashMap::try_from(Map::HashMap(crate::pinned_map(dir, map::MESH_PORTS)?))
                .map_err(|e| Error::map("map shoal_mesh_ports", e))?,
            addrs: HashMap::try_from(Map::HashMap(crate::pinned_map(dir, map::MESH_ADDRS)?))
                .map_err(|e| Error::map("map shoal_mesh_addrs", e))?,
            ct: HashMap::try_from(Map::LruHashMap(crate::pinned_map(dir, map::MESH_CT)?))
                .map_err(|e| Error::map("map shoal_mesh_ct", e))?,
            rev: HashMap::try_from(Map::LruHashMap(crate::pinned_map(dir, map::MESH_REV)?))
                .map_err(|e| Error::map("map shoal_mesh_rev", e))?,
        })
    }

    pub fn set_port(&mut self, p: &MeshPort) -> Result<(), Error> {
        self.ports
            .insert(
                port_key(p.proto, p.published),
                MeshPortValue {
                    addr: ip_key(p.addr),
                    vni: p.vni,
                    target: p.target.to_be(),
                    flags: if p.host { MESH_F_HOST } else { 0 },
                },
                0,
            )
            .map_err(|e| Error::map(format!("publish port {}", p.published), e))
    }

    pub fn remove_port(&mut self, proto: u8, published: u16) {
        let _ = self.ports.remove(&port_key(proto, published));
    }

    pub fn ports(&self) -> Vec<MeshPort> {
        let mut out: Vec<MeshPort> = self
            .ports
            .iter()
            .filter_map(|r| r.ok())
            .map(|(k, v)| MeshPort {
                proto: k.proto,
                published: u16::from_be(k.port),
                addr: key_ip(v.addr),
                target: u16::from_be(v.target),
                host: v.flags & MESH_F_HOST != 0,
                vni: v.vni,
            })
            .collect();
        out.sort();
        out
    }

    /// The node's extra addresses where published ports answer, each with
    /// the ifindex of the interface that holds it (replies leave there).
    pub fn addrs(&self) -> std::collections::BTreeMap<Ipv4Addr, u32> {
        self.addrs
            .iter()
            .filter_map(|e| e.ok())
            .map(|(k, ifindex)| (key_ip(k), ifindex))
            .collect()
    }

    /// Makes the extra addresses equal to `want` (the difference only).
    pub fn set_addrs(
        &mut self,
        want: &std::collections::BTreeMap<Ipv4Addr, u32>,
    ) -> Result<(), Error> {
        let have = self.addrs();
        for (a, ifindex) in want {
            if have.get(a) != Some(ifindex) {
                self.addrs
                    .insert(ip_key(*a), ifindex, 0)
                    .map_err(|e| Error::map(format!("mesh address {a}"), e))?;
            }
        }
        for a in have.keys().filter(|a| !want.contains_key(a)) {
            let _ = self.addrs.remove(&ip_key(*a));
        }
        Ok(())
    }

    /// Size of each mesh conntrack table (`SHOAL_MESH_CT_MAX` in mesh.h).
    pub const CT_CAPACITY: u64 = 262_144;

    /// Entries in the mesh's tables now: (flows entered here, return paths).
    pub fn conntrack_entries(&self) -> (u64, u64) {
        (
            self.ct.keys().filter(|k| k.is_ok()).count() as u64,
            self.rev.keys().filter(|k| k.is_ok()).count() as u64,
        )
    }

    /// Flows that entered through this node (its mesh conntrack).
    pub fn flows(&self) -> Vec<MeshFlow> {
        let mut out: Vec<MeshFlow> = self
            .ct
            .iter()
            .filter_map(|r| r.ok())
            .map(|(k, v)| MeshFlow {
                proto: k.proto,
                client: key_ip(k.saddr),
                client_port: u16::from_be(k.sport),
                node_addr: key_ip(k.daddr),
                published: u16::from_be(k.dport),
                backend: key_ip(v.backend),
            })
            .collect();
        out.sort_by_key(|f| (f.published, f.client, f.client_port));
        out
    }

    /// Flows this node's backends answer through another node: (backend,
    /// client, entry node).
    pub fn returns(&self) -> Vec<(Ipv4Addr, Ipv4Addr, Ipv4Addr)> {
        self.rev
            .iter()
            .filter_map(|r| r.ok())
            .map(|(k, v)| (key_ip(k.saddr), key_ip(k.daddr), key_ip(v.entry_vtep)))
            .collect()
    }
}

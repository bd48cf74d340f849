//! Merging the endpoint tables that other nodes gossip into the set of
//! remote endpoints this node programs, refusing what must not be trusted.
//!
//! Pure functions over plain data: unit-tested here, driven by the agent.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use crate::wire::{EpRecord, SvcRecord, TaskHealth};
use crate::wire::{Network, TableEntry};

/// Key prefix of an endpoint in a node's gossip state: `ep:VNI:IP`.
pub const EP_PREFIX: &str = "ep:";
/// The node's VTEP address.
pub const VTEP_KEY: &str = "vtep";
/// Set when a node leaves gracefully; others drop it at once.
pub const LEAVING_KEY: &str = "leaving";
/// Set when a node's daemon restarts (SIGUSR1, `systemctl restart`):
/// others keep its entries for `RESTART_HOLD` of silence.
pub const RESTARTING_KEY: &str = "restarting";

pub fn ep_key(vni: u32, ip: Ipv4Addr) -> String {
    format!("{EP_PREFIX}{vni}:{ip}")
}

pub fn parse_ep_key(key: &str) -> Option<(u32, Ipv4Addr)> {
    let rest = key.strip_prefix(EP_PREFIX)?;
    let (vni, ip) = rest.split_once(':')?;
    let vni: u32 = vni.parse().ok()?;
    if vni == 0 || vni > 0xff_ffff {
        return None;
    }
    Some((vni, ip.parse().ok()?))
}

/// One other node's gossip state: its record and its entries.
#[derive(Clone, Debug)]
pub struct PeerState {
    pub node: String,
    /// The address it gossips from: its VTEP must be this address.
    pub gossip_ip: Ipv4Addr,
    pub kv: Vec<(String, String)>,
    /// Per network this node is on: the highest version among its `ep:`
    /// keys there, deleted ones included (how far into its endpoint
    /// changes on that network this state goes).
    pub ep_versions: BTreeMap<u32, u64>,
}

impl PeerState {
    /// The networks on which it has a task stopping: a node that balances
    /// one of them acknowledges applying this state (`netdb::Key::Applied`).
    pub fn stopping_vnis(&self) -> BTreeSet<u32> {
        self.kv
            .iter()
            .filter_map(|(k, v)| {
                let (vni, _) = parse_ep_key(k)?;
                let rec: EpRecord = serde_json::from_str(v).ok()?;
                (rec.svc?.health == TaskHealth::Stopping).then_some(vni)
            })
            .collect()
    }
}

/// What this node has locally.
#[derive(Clone, Debug, Default)]
pub struct LocalView {
    pub networks: Vec<Network>,
    /// (VNI, IP) of local endpoints; their VNIs are the joined networks.
    pub endpoints: BTreeSet<(u32, Ipv4Addr)>,
    /// Networks joined without a local endpoint (the routing mesh's
    /// ingress network: every node sends to its tasks).
    pub also_joined: BTreeSet<u32>,
}

/// A remote endpoint to program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remote {
    pub node: String,
    pub vtep: Ipv4Addr,
    pub mac: [u8; 6],
}

/// One node's claim on an address: (since, where, MAC as published,
/// service record, container name).
type Claim = (u64, Remote, String, Option<SvcRecord>, Option<String>);

#[derive(Clone, Debug, Default)]
pub struct Merged {
    pub desired: BTreeMap<(u32, Ipv4Addr), Remote>,
    pub entries: Vec<TableEntry>,
    /// (node, key, reason) of every refused entry.
    pub refused: Vec<(String, String, &'static str)>,
}

/// Merges peers' tables. Rules:
/// - a node's VTEP is its gossip source address; a `vtep` key that says
///   otherwise (a node claiming another node's endpoints) refuses all of
///   that node's entries;
/// - only networks with a local endpoint are programmed (lazy join, as
///   Docker's NetworkDB joins networks);
/// - an entry outside its network's subnet, with a bad MAC, or on a local
///   endpoint's address is refused;
/// - an address claimed by two nodes goes to the older claim (then the
///   lower node name): existing flows keep their endpoint, the newcomer is
///   refused.
pub fn merge(local: &LocalView, peers: &[PeerState]) -> Merged {
    let mut m = Merged::default();
    let joined: BTreeSet<u32> = local
        .endpoints
        .iter()
        .map(|(v, _)| *v)
        .chain(local.also_joined.iter().copied())
        .collect();
    let by_vni: HashMap<u32, &Network> = local.networks.iter().map(|n| (n.vni, n)).collect();
    let mut claims: BTreeMap<(u32, Ipv4Addr), Vec<Claim>> = BTreeMap::new();

    for p in peers {
        let vtep =
            p.kv.iter()
                .find(|(k, _)| k == VTEP_KEY)
                .and_then(|(_, v)| v.parse::<Ipv4Addr>().ok());
        let vtep_ok = vtep == Some(p.gossip_ip);
        for (key, value) in &p.kv {
            if !key.starts_with(EP_PREFIX) {
                continue;
            }
            let mut refuse = |reason: &'static str, vni: u32, ip: Ipv4Addr, mac: String| {
                m.refused.push((p.node.clone(), key.clone(), reason));
                m.entries.push(TableEntry {
                    node: p.node.clone(),
                    vni,
                    ip,
                    mac,
                    vtep: vtep.unwrap_or(p.gossip_ip),
                    programmed: false,
                    refused: Some(reason.to_string()),
                    svc: None,
                    since: 0,
                    container: None,
                });
            };
            let Some((vni, ip)) = parse_ep_key(key) else {
                refuse("malformed_key", 0, Ipv4Addr::UNSPECIFIED, String::new());
                continue;
            };
            let Ok(rec) = serde_json::from_str::<EpRecord>(value) else {
                refuse("malformed_value", vni, ip, String::new());
                continue;
            };
            if !vtep_ok {
                refuse("foreign_vtep", vni, ip, rec.mac);
                continue;
            }
            let Ok(mac) = shoal_dataplane::netlink::parse_mac(&rec.mac) else {
                refuse("bad_mac", vni, ip, rec.mac);
                continue;
            };
            if let Some(net) = by_vni.get(&vni) {
                if !net.subnet.contains(&ip)
                    || ip == net.subnet.network()
                    || ip == net.subnet.broadcast()
                {
                    refuse("outside_subnet", vni, ip, rec.mac);
                    continue;
                }
            }
            if local.endpoints.contains(&(vni, ip)) {
                refuse("duplicate_ip", vni, ip, rec.mac);
                continue;
            }
            claims.entry((vni, ip)).or_default().push((
                rec.since,
                Remote {
                    node: p.node.clone(),
                    vtep: p.gossip_ip,
                    mac,
                },
                rec.mac,
                rec.svc,
                rec.container,
            ));
        }
    }
    for ((vni, ip), mut cs) in claims {
        cs.sort_by(|a, b| (a.0, &a.1.node).cmp(&(b.0, &b.1.node)));
        for (i, (since, r, mac, svc, container)) in cs.iter().enumerate() {
            let winner = i == 0;
            if !winner {
                m.refused
                    .push((r.node.clone(), ep_key(vni, ip), "duplicate_ip"));
            }
            m.entries.push(TableEntry {
                node: r.node.clone(),
                vni,
                ip,
                mac: mac.clone(),
                vtep: r.vtep,
                programmed: winner && joined.contains(&vni),
                refused: (!winner).then(|| "duplicate_ip".to_string()),
                svc: svc.clone(),
                since: *since,
                container: container.clone(),
            });
        }
        if joined.contains(&vni) {
            m.desired.insert((vni, ip), cs[0].1.clone());
        }
    }
    m.entries
        .sort_by(|a, b| (a.vni, u32::from(a.ip), &a.node).cmp(&(b.vni, u32::from(b.ip), &b.node)));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> Network {
        Network {
            encrypted: false,
            name: "n".into(),
            vni: 4097,
            subnet: "10.0.1.0/24".parse().unwrap(),
            gateway: "10.0.1.1".parse().unwrap(),
        }
    }

    fn rec(mac: &str) -> String {
        rec_since(mac, 100)
    }

    fn rec_since(mac: &str, since: u64) -> String {
        let r = EpRecord {
            mac: mac.into(),
            net: "n".into(),
            since,
            svc: None,
            container: None,
        };
        serde_json::to_string(&r).unwrap()
    }

    fn peer(node: &str, ip: [u8; 4], vtep: &str, eps: &[(&str, String)]) -> PeerState {
        let mut kv = vec![(VTEP_KEY.to_string(), vtep.to_string())];
        kv.extend(eps.iter().map(|(k, v)| (k.to_string(), v.clone())));
        PeerState {
            node: node.into(),
            gossip_ip: Ipv4Addr::from(ip),
            kv,
            ep_versions: Default::default(),
        }
    }

    fn local() -> LocalView {
        LocalView {
            also_joined: Default::default(),
            networks: vec![net()],
            endpoints: [(4097, "10.0.1.2".parse().unwrap())].into(),
        }
    }

    #[test]
    fn programs_valid_entries_of_joined_networks() {
        let p = peer(
            "n2",
            [198, 18, 0, 2],
            "198.18.0.2",
            &[("ep:4097:10.0.1.3", rec("02:42:0a:00:01:03"))],
        );
        let m = merge(&local(), &[p]);
        assert_eq!(m.desired.len(), 1);
        let r = &m.desired[&(4097, "10.0.1.3".parse().unwrap())];
        assert_eq!(r.vtep, Ipv4Addr::new(198, 18, 0, 2));
        assert!(m.refused.is_empty());
    }

    #[test]
    fn does_not_program_networks_without_local_endpoints() {
        let p = peer(
            "n2",
            [198, 18, 0, 2],
            "198.18.0.2",
            &[("ep:5000:10.0.9.3", rec("02:42:0a:00:09:03"))],
        );
        let m = merge(&local(), &[p]);
        assert!(m.desired.is_empty());
        assert_eq!(m.entries.len(), 1);
        assert!(!m.entries[0].programmed && m.entries[0].refused.is_none());
    }

    #[test]
    fn refuses_hostile_and_malformed_entries() {
        let good = peer(
            "n2",
            [198, 18, 0, 2],
            "198.18.0.2",
            &[
                ("ep:4097:10.0.2.9", rec("02:42:0a:00:02:09")), // outside the subnet
                ("ep:4097:10.0.1.255", rec("02:42:0a:00:01:ff")), // broadcast
                ("ep:4097:10.0.1.2", rec("02:42:0a:00:01:02")), // our own endpoint's address
                ("ep:4097:10.0.1.7", rec("01:00:5e:00:00:01")), // multicast MAC
                ("ep:4097:10.0.1.8", "{not json".into()),
                ("ep:0:10.0.1.8", rec("02:42:0a:00:01:08")), // VNI 0
                ("ep:4097:banana", rec("02:42:0a:00:01:08")),
                ("ep:4097:10.0.1.5", rec("02:42:0a:00:01:05")), // claimed twice (below)
            ],
        );
        // n3 says its VTEP is n2's address: it claims n2's endpoints.
        let liar = peer(
            "n3",
            [198, 18, 0, 3],
            "198.18.0.2",
            &[("ep:4097:10.0.1.4", rec("02:42:0a:00:01:04"))],
        );
        let dup = peer(
            "n4",
            [198, 18, 0, 4],
            "198.18.0.4",
            // n4 claims 10.0.1.5 later than n2 did: n2 keeps it.
            &[("ep:4097:10.0.1.5", rec_since("02:42:0a:00:01:15", 200))],
        );
        let m = merge(&local(), &[good, liar, dup]);
        assert_eq!(m.desired.len(), 1, "{:?}", m.desired);
        assert_eq!(m.desired[&(4097, "10.0.1.5".parse().unwrap())].node, "n2");
        let reasons: Vec<&str> = m.refused.iter().map(|r| r.2).collect();
        for want in [
            "outside_subnet",
            "duplicate_ip",
            "bad_mac",
            "malformed_value",
            "malformed_key",
            "foreign_vtep",
        ] {
            assert!(reasons.contains(&want), "missing {want}: {reasons:?}");
        }
        // Our own address, and n4's later claim.
        assert_eq!(reasons.iter().filter(|r| **r == "duplicate_ip").count(), 2);
    }

    #[test]
    fn the_networks_a_peer_is_stopping_a_task_on() {
        let svc = |health: TaskHealth| SvcRecord {
            service_id: "s".into(),
            service: "web".into(),
            task_id: "t".into(),
            task: "web.1".into(),
            slot: 1,
            network: "n".into(),
            vip: None,
            aliases: vec![],
            health,
        };
        let with = |health: TaskHealth| {
            let mut r: EpRecord = serde_json::from_str(&rec("02:42:0a:00:01:05")).unwrap();
            r.svc = Some(svc(health));
            serde_json::to_string(&r).unwrap()
        };
        let p = peer(
            "n2",
            [198, 18, 0, 2],
            "198.18.0.2",
            &[
                ("ep:4097:10.0.1.5", with(TaskHealth::Healthy)),
                ("ep:4098:10.0.2.5", with(TaskHealth::Stopping)),
                ("ep:4099:10.0.3.5", rec("02:42:0a:00:03:05")),
                ("ep:4100:10.0.4.5", "not json".into()),
            ],
        );
        assert_eq!(p.stopping_vnis(), [4098].into());
    }
}

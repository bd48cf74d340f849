//! Whose gossip counts, read out of membership and the network tables:
//! the peers whose entries this node programs (`peers`), those a draining
//! task waits for (`acks`), and what `shoal debug gossip` shows.
//!
//! Membership (`roster.rs`) decides who counts and for how long (alive as
//! SWIM says, held a moment after it declared a node down, a restarting
//! node until its next process is back); each network's table (`netdb`)
//! only supplies the entries of the nodes whose records list that network,
//! from the table generation they list.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::netdb::{Key, NetDb, Origin};
use super::networks::net_key;
use super::roster::{Liveness, NodeRecord, CLUSTER};
use super::rounds::Shared;
use super::table::{ep_key, PeerState, LEAVING_KEY, RESTARTING_KEY, VTEP_KEY};
use super::{stall, Gossip, HOLD, RESTART_HOLD, SUSPECT_WINDOW};
use crate::wire::{Member, NetworkGossip};

/// A peer as a draining task sees it.
#[derive(Clone, Debug)]
pub struct PeerAck {
    pub node: String,
    /// Per network: what it has applied of this node's endpoint keys there
    /// (absent: it says nothing of us there yet).
    pub applied: BTreeMap<u32, u64>,
    /// The networks it is on.
    pub vnis: BTreeSet<u32>,
}

/// A node process membership knows, with its record (one without a record
/// yet is nobody's peer).
#[derive(Clone, Debug)]
pub(super) struct Node {
    pub name: String,
    pub origin: Origin,
    pub gossip_addr: SocketAddr,
    pub record: Arc<NodeRecord>,
    /// SWIM counts it alive, it has a VTEP and has not said goodbye.
    pub live: bool,
    pub is_self: bool,
    /// When it last sent an authentic datagram.
    pub heard: Option<Instant>,
}

/// Every node membership knows (this one included), with its record.
pub(super) fn snapshot(st: &mut Shared, port: u16) -> Vec<Node> {
    let Shared { roster, db, heard } = st;
    let me = roster.me();
    let mut out = vec![Node {
        name: roster.record().name.clone(),
        origin: me,
        gossip_addr: SocketAddr::from((me.addr, port)),
        record: Arc::new(roster.record().clone()),
        live: true,
        is_self: true,
        heard: None,
    }];
    let known: Vec<(Origin, Liveness)> = roster.members().map(|(o, k)| (*o, k.liveness)).collect();
    for (o, liveness) in known {
        let Some(record) = roster.record_of(db, &o) else {
            continue;
        };
        out.push(Node {
            name: record.name.clone(),
            origin: o,
            gossip_addr: SocketAddr::from((o.addr, port)),
            live: liveness == Liveness::Alive && record.vtep.is_some() && !record.leaving,
            record,
            is_self: false,
            heard: heard.get(&o.addr).copied(),
        });
    }
    out
}

/// A node that has not said goodbye, heard from within `window`: if it is
/// not live, SWIM declared it down a moment ago.
fn heard_lately(n: &Node, window: Duration) -> bool {
    n.record.vtep.is_some() && !n.record.leaving && n.heard.is_some_and(|at| at.elapsed() < window)
}

/// The other nodes of `nodes`, the newest generation of each (a restarted
/// node's previous process may linger a moment), by name.
pub(super) fn newest<'a>(
    nodes: impl Iterator<Item = &'a Node>,
    me: &str,
) -> BTreeMap<String, &'a Node> {
    let mut newest: BTreeMap<String, &Node> = BTreeMap::new();
    for n in nodes {
        if n.name == me {
            continue;
        }
        let e = newest.entry(n.name.clone()).or_insert(n);
        if n.origin.generation > e.origin.generation {
            *e = n;
        }
    }
    newest
}

/// A node membership keeps, and where to read its entries.
struct Listed {
    node: String,
    gossip_addr: SocketAddr,
    /// Its membership keys as the table merge reads them (`vtep`...).
    kv: Vec<(String, String)>,
    /// VNI -> the table generations to read its entries from: the one
    /// its record lists, then, for a restarted node, the one its previous
    /// process listed, until the new one's table arrives (a restart hands
    /// over without a blink).
    nets: BTreeMap<u32, Vec<u64>>,
}

/// What a listed node has on one network.
struct OnNet {
    eps: Vec<(String, String)>,
    /// The highest version among its endpoint records there, deleted
    /// ones too (the watermark).
    ep_version: u64,
    /// What it has applied of this node's records there.
    applied_me: Option<u64>,
}

/// The chosen nodes with their networks; the previous generation of each
/// (in `all`) supplies fallbacks.
fn listing(all: &[Node], chosen: BTreeMap<String, &Node>) -> Vec<Listed> {
    let mut previous: HashMap<&str, &Node> = HashMap::new();
    for n in all {
        let Some(c) = chosen.get(&n.name) else {
            continue;
        };
        if n.origin.generation < c.origin.generation {
            let e = previous.entry(&n.name).or_insert(n);
            if n.origin.generation > e.origin.generation {
                *e = n;
            }
        }
    }
    chosen
        .into_values()
        .map(|n| {
            let mut l = listed_one(n);
            if let Some(old) = previous.get(n.name.as_str()) {
                for (vni, g) in &old.record.nets {
                    if let Some(gs) = l.nets.get_mut(vni).filter(|gs| !gs.contains(g)) {
                        gs.push(*g);
                    }
                }
            }
            l
        })
        .collect()
}

/// One node as its record lists itself (no fallback).
fn listed_one(n: &Node) -> Listed {
    let r = &n.record;
    let mut kv = vec![];
    if let Some(v) = r.vtep {
        kv.push((VTEP_KEY.to_string(), v.to_string()));
    }
    if r.leaving {
        kv.push((LEAVING_KEY.to_string(), "1".into()));
    }
    if r.restarting {
        kv.push((RESTARTING_KEY.to_string(), "1".into()));
    }
    for (vni, g) in &r.nets {
        kv.push((net_key(*vni), g.to_string()));
    }
    Listed {
        node: n.name.clone(),
        gossip_addr: n.gossip_addr,
        kv,
        nets: r.nets.iter().map(|(v, g)| (*v, vec![*g])).collect(),
    }
}

/// What each listed node has on each network this node is on, by
/// (index in `listed`, VNI).
fn on_nets(db: &NetDb, me: Ipv4Addr, listed: &[Listed]) -> HashMap<(usize, u32), OnNet> {
    let mut out = HashMap::new();
    for vni in db.networks().filter(|v| *v != CLUSTER) {
        for (i, l) in listed.iter().enumerate() {
            let (Some(gens), std::net::IpAddr::V4(addr)) = (l.nets.get(&vni), l.gossip_addr.ip())
            else {
                continue;
            };
            let Some(view) = gens
                .iter()
                .find_map(|&generation| db.view(vni, &Origin { addr, generation }))
            else {
                continue;
            };
            let mut eps = vec![];
            let mut applied_me = None;
            for r in view.live() {
                let v = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default());
                match r.key {
                    Key::Ep(ip) => eps.push((ep_key(vni, ip), v.into_owned())),
                    Key::Applied(of) if of == me => applied_me = v.parse().ok(),
                    Key::Applied(_) | Key::Node => {}
                }
            }
            out.insert(
                (i, vni),
                OnNet {
                    eps,
                    ep_version: view.watermark,
                    applied_me,
                },
            );
        }
    }
    out
}

impl Gossip {
    fn me_ip(&self) -> Ipv4Addr {
        match self.advertise.ip() {
            std::net::IpAddr::V4(ip) => ip,
            std::net::IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        }
    }

    /// The other nodes whose entries count, ready for [`table::merge`]:
    /// live as SWIM *and* their records say, newest generation of each
    /// node only (a restarted node's previous process may linger a
    /// moment), with their entries on the networks this node is on.
    ///
    /// Also the peers declared down a moment ago: one is dropped only once
    /// it has been silent for [`HOLD`] (it said goodbye: at once).
    /// Liveness is one node's view; a peer starved for a moment (seen in
    /// CI under emulation: back 0.1-0.7 s after the verdict) would
    /// otherwise blink out of every VIP, and IPVS, which expires a removed
    /// backend's connections at once, resets them.
    ///
    /// Right after this node itself stalled, every peer declared down
    /// while it was not running is kept (`stall.rs`): the silence was its
    /// own. And while it hears from no peer at all although two or more
    /// spoke within `stall::GRACE`: every peer going silent in the same
    /// instant is far likelier this node's trouble (starved, or cut off)
    /// than theirs, and dropping every remote backend then only turns a
    /// hiccup into refused connections.
    pub async fn peers(&self) -> Vec<PeerState> {
        crate::heavy::heavy(|| self.peers_now())
    }

    fn peers_now(&self) -> Vec<PeerState> {
        let stalled = self.stalled();
        let mut st = self.rounds.state.lock().expect("gossip state");
        let all = snapshot(&mut st, self.advertise.port());
        let others = || all.iter().filter(|n| !n.is_self);
        let down = |window: Duration| -> Vec<&Node> {
            others()
                .filter(|n| !n.live && heard_lately(n, window))
                .collect()
        };
        let isolated = !others().any(|n| n.live) && down(stall::GRACE).len() >= 2;
        let kept = if stalled {
            down(SUSPECT_WINDOW)
        } else if isolated {
            down(stall::GRACE)
        } else {
            down(HOLD)
        };
        // And a restarting peer, until its next process is back.
        let restarting = down(RESTART_HOLD)
            .into_iter()
            .filter(|n| n.record.restarting);
        let counted = others().filter(|n| n.live).chain(kept).chain(restarting);
        let listed = listing(&all, newest(counted, &self.node));
        let mut on = on_nets(&st.db, self.me_ip(), &listed);
        listed
            .into_iter()
            .enumerate()
            .filter_map(|(i, l)| {
                let std::net::IpAddr::V4(gossip_ip) = l.gossip_addr.ip() else {
                    return None;
                };
                let mut kv = l.kv;
                let mut ep_versions = BTreeMap::new();
                for vni in l.nets.keys() {
                    if let Some(n) = on.remove(&(i, *vni)) {
                        kv.extend(n.eps);
                        ep_versions.insert(*vni, n.ep_version);
                    }
                }
                Some(PeerState {
                    node: l.node,
                    gossip_ip,
                    kv,
                    ep_versions,
                })
            })
            .collect()
    }

    /// Each peer a draining task waits for: the networks it is on and what
    /// it has applied of this node's endpoint keys on each.
    ///
    /// Not only the live peers: liveness is this node's view, and a node
    /// starved for a moment (or cut off one way) has peers declared down
    /// that still balance to it. Stopping early then sends their new
    /// connections to a closed port, so a peer heard from within
    /// [`SUSPECT_WINDOW`] that has not said goodbye is waited for too (the
    /// drain's own bound caps the wait on one that really died).
    pub async fn acks(&self) -> Vec<PeerAck> {
        crate::heavy::heavy(|| self.acks_now())
    }

    fn acks_now(&self) -> Vec<PeerAck> {
        let mut st = self.rounds.state.lock().expect("gossip state");
        let all = snapshot(&mut st, self.advertise.port());
        let waited = all
            .iter()
            .filter(|n| !n.is_self && (n.live || heard_lately(n, SUSPECT_WINDOW)));
        let listed = listing(&all, newest(waited, &self.node));
        let on = on_nets(&st.db, self.me_ip(), &listed);
        listed
            .into_iter()
            .enumerate()
            .map(|(i, l)| PeerAck {
                applied: l
                    .nets
                    .keys()
                    .filter_map(|v| Some((*v, on.get(&(i, *v))?.applied_me?)))
                    .collect(),
                vnis: l.nets.keys().copied().collect(),
                node: l.node,
            })
            .collect()
    }

    /// Every node membership knows, live or not, with the endpoints this
    /// node holds of it (on the networks it is on itself).
    pub async fn members(&self) -> Vec<Member> {
        crate::heavy::heavy(|| self.members_now())
    }

    fn members_now(&self) -> Vec<Member> {
        let mut st = self.rounds.state.lock().expect("gossip state");
        let all = snapshot(&mut st, self.advertise.port());
        // Each generation on its own (no fallbacks): its entries.
        let each: Vec<Listed> = all.iter().map(listed_one).collect();
        let on = on_nets(&st.db, self.me_ip(), &each);
        let mut counts: HashMap<usize, usize> = HashMap::new();
        for ((i, _), n) in &on {
            *counts.entry(*i).or_default() += n.eps.len();
        }
        let mut out: Vec<Member> = all
            .iter()
            .enumerate()
            .map(|(i, n)| Member {
                node: n.name.clone(),
                generation: n.origin.generation,
                gossip_addr: n.gossip_addr,
                vtep: n.record.vtep,
                heard_ms_ago: n.heard.map(|at| at.elapsed().as_millis() as u64),
                live: n.live,
                is_self: n.is_self,
                endpoints: counts.get(&i).copied().unwrap_or(0),
            })
            .collect();
        out.sort_by(|a, b| (&a.node, a.generation).cmp(&(&b.node, b.generation)));
        out
    }

    /// The networks this node gossips on, with whose entries it holds on
    /// each (the live peers whose records list it, and itself).
    pub async fn networks(&self) -> Vec<NetworkGossip> {
        crate::heavy::heavy(|| self.networks_now())
    }

    fn networks_now(&self) -> Vec<NetworkGossip> {
        let mut st = self.rounds.state.lock().expect("gossip state");
        let all = snapshot(&mut st, self.advertise.port());
        let mut chosen = newest(all.iter().filter(|n| n.live && !n.is_self), &self.node);
        // Itself, to count its own entries.
        if let Some(me) = all.iter().find(|n| n.is_self) {
            chosen.insert(me.name.clone(), me);
        }
        let listed = listing(&all, chosen);
        let on = on_nets(&st.db, self.me_ip(), &listed);
        let mut out: BTreeMap<u32, NetworkGossip> = st
            .db
            .networks()
            .filter(|v| *v != CLUSTER)
            .filter_map(|vni| {
                let me = st.db.me_on(vni)?;
                Some((
                    vni,
                    NetworkGossip {
                        vni,
                        generation: me.generation,
                        members: vec![],
                        endpoints: 0,
                    },
                ))
            })
            .collect();
        for ((i, vni), n) in on {
            if let Some(g) = out.get_mut(&vni) {
                g.members.push(listed[i].node.clone());
                g.endpoints += n.eps.len();
            }
        }
        for g in out.values_mut() {
            g.members.sort();
        }
        out.into_values().collect()
    }
}

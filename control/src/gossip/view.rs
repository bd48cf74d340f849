//! Whose gossip counts, read out of membership and the network tables:
//! the peers whose entries this node programs (`peers`), those a draining
//! task waits for (`acks`), and what `shoal debug gossip` shows.
//!
//! Membership decides who counts and for how long (live, held a moment
//! after a conviction, a restarting node until its next process is back);
//! each network's table (`netdb`) only supplies the entries of the nodes
//! membership lists on that network, from the table generation they list.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use chitchat::{ChitchatId, NodeState};

use super::netdb::{Key, Origin};
use super::networks::parse_net_key;
use super::table::{ep_key, PeerState, LEAVING_KEY, RESTARTING_KEY, VTEP_KEY};
use super::tables::Membership;
use super::{heard_lately, newest_peers, stall, Gossip, HOLD, RESTART_HOLD, SUSPECT_WINDOW};
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

/// A node membership keeps, and where to read its entries.
struct Listed {
    node: String,
    gossip_addr: SocketAddr,
    /// Its membership keys (`vtep`, `net:`...).
    kv: Vec<(String, String)>,
    /// VNI -> the table generations to read its entries from: the one
    /// it lists, then, for a restarted node, the one its previous process
    /// listed, until the new one's state arrives (a restart hands over
    /// without a blink, as it did when one instance carried everything).
    nets: BTreeMap<u32, Vec<u64>>,
}

/// What a listed node has on one network.
struct OnNet {
    eps: Vec<(String, String)>,
    /// The highest version among its `ep:` keys there, deleted ones too.
    ep_version: u64,
    /// Its `applied:ME` there.
    applied_me: Option<u64>,
}

fn nets_of(st: &NodeState) -> BTreeMap<u32, u64> {
    st.key_values()
        .filter_map(|(k, v)| parse_net_key(k, v))
        .collect()
}

/// The chosen nodes (newest generation of each) with their networks; the
/// previous generation of each (in `all`) supplies fallbacks.
fn listing(
    all: &BTreeMap<ChitchatId, NodeState>,
    chosen: BTreeMap<String, (&ChitchatId, &NodeState)>,
) -> Vec<Listed> {
    let mut previous: HashMap<&str, (u64, &NodeState)> = HashMap::new();
    for (id, st) in all {
        let Some((cid, _)) = chosen.get(&*id.node_id) else {
            continue;
        };
        if id.generation_id < cid.generation_id {
            let e = previous
                .entry(&id.node_id)
                .or_insert((id.generation_id, st));
            if id.generation_id > e.0 {
                *e = (id.generation_id, st);
            }
        }
    }
    chosen
        .into_iter()
        .map(|(node, (id, st))| {
            let mut l = listed_one(node, id, st);
            if let Some((_, old)) = previous.get(l.node.as_str()) {
                for (vni, g) in nets_of(old) {
                    if let Some(gs) = l.nets.get_mut(&vni).filter(|gs| !gs.contains(&g)) {
                        gs.push(g);
                    }
                }
            }
            l
        })
        .collect()
}

/// One membership state as it lists itself (no fallback).
fn listed_one(node: String, id: &ChitchatId, st: &NodeState) -> Listed {
    Listed {
        gossip_addr: id.gossip_advertise_addr,
        kv: st
            .key_values()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        nets: nets_of(st).into_iter().map(|(v, g)| (v, vec![g])).collect(),
        node,
    }
}

/// Per network, the nodes whose records the tables keep (every node
/// membership holds that lists the network and has not said goodbye: the
/// views above decide whose entries count, and for how long) and those of
/// them live to gossip with.
pub(super) fn membership(c: &chitchat::Chitchat, me: &str) -> Membership {
    let live: BTreeSet<&ChitchatId> = c.live_nodes().collect();
    let mut out = Membership::new();
    for (id, st) in c.node_states() {
        let std::net::IpAddr::V4(addr) = id.gossip_advertise_addr.ip() else {
            continue;
        };
        if &*id.node_id == me || st.get(LEAVING_KEY).is_some() {
            continue;
        }
        for (vni, generation) in nets_of(st) {
            let e = out.entry(vni).or_default();
            e.0.push(Origin { addr, generation });
            if live.contains(id) {
                e.1.push(addr);
            }
        }
    }
    out
}

impl Gossip {
    /// What each listed node has on each network this node is on, by
    /// (index in `listed`, VNI).
    async fn on_nets(&self, listed: &[Listed]) -> HashMap<(usize, u32), OnNet> {
        let me = match self.advertise.ip() {
            std::net::IpAddr::V4(ip) => ip,
            std::net::IpAddr::V6(_) => return HashMap::new(),
        };
        let db = self.tables.db.lock().expect("tables");
        let mut out = HashMap::new();
        for vni in db.networks() {
            for (i, l) in listed.iter().enumerate() {
                let (Some(gens), std::net::IpAddr::V4(addr)) =
                    (l.nets.get(&vni), l.gossip_addr.ip())
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

    /// The other nodes whose entries count, ready for [`table::merge`]:
    /// live as the failure detector *and* the leaving predicate say, newest
    /// generation of each node only (a restarted node's old self may linger
    /// a moment), with their entries on the networks this node is on.
    ///
    /// Also the peers convicted a moment ago: one is dropped only once it
    /// has been silent for [`HOLD`] (it said goodbye: at once). Liveness is
    /// one node's view; a peer starved for a moment (seen in CI under
    /// emulation: back 0.1-0.7 s after the conviction) would otherwise
    /// blink out of every VIP, and IPVS, which expires a removed
    /// backend's connections at once, resets them.
    ///
    /// Right after this node itself stalled, every peer convicted while it
    /// was not running is kept (`stall.rs`): the silence was its own. And
    /// while it hears from no peer at all although two or more spoke within
    /// `stall::GRACE`: every peer going silent in the same instant is far
    /// likelier this node's trouble (starved, or cut off) than theirs, and
    /// dropping every remote backend then only turns a hiccup into refused
    /// connections.
    pub async fn peers(&self) -> Vec<PeerState> {
        let me = self.handle.chitchat_id().clone();
        let stalled = self.stalled();
        let heartbeats = self.heartbeats.clone();
        let listed = self
            .handle
            .with_chitchat(|c| {
                let mut live = c.live_nodes_watcher().borrow().clone();
                let hb = heartbeats.lock().expect("heartbeat table");
                let others = |live: &BTreeMap<ChitchatId, NodeState>| {
                    live.keys().filter(|id| id.node_id != me.node_id).count()
                };
                let convicted = |window: Duration| -> Vec<(ChitchatId, NodeState)> {
                    c.node_states()
                        .iter()
                        .filter(|(id, st)| {
                            id.node_id != me.node_id
                                && !live.contains_key(*id)
                                && heard_lately(&hb, id, st, window)
                        })
                        .map(|(id, st)| (id.clone(), st.clone()))
                        .collect()
                };
                let isolated = others(&live) == 0 && convicted(stall::GRACE).len() >= 2;
                let kept = if stalled {
                    convicted(SUSPECT_WINDOW)
                } else if isolated {
                    convicted(stall::GRACE)
                } else {
                    convicted(HOLD)
                };
                // And a restarting peer, until its next generation is back.
                let restarting: Vec<_> = convicted(RESTART_HOLD)
                    .into_iter()
                    .filter(|(_, st)| st.get(RESTARTING_KEY).is_some())
                    .collect();
                live.extend(kept);
                live.extend(restarting);
                listing(c.node_states(), newest_peers(live.iter(), &me.node_id))
            })
            .await;
        let mut on = self.on_nets(&listed).await;
        listed
            .into_iter()
            .enumerate()
            .filter_map(|(i, l)| {
                let gossip_ip = match l.gossip_addr.ip() {
                    std::net::IpAddr::V4(ip) => ip,
                    std::net::IpAddr::V6(_) => return None,
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
    /// starved for a moment (or cut off one way) convicts peers that still
    /// balance to it. Stopping early then sends their new connections to a
    /// closed port, so a peer heard from within [`SUSPECT_WINDOW`] that has
    /// not said goodbye is waited for too (the drain's own bound caps the
    /// wait on one that really died).
    pub async fn acks(&self) -> Vec<PeerAck> {
        let me = self.handle.chitchat_id().node_id.clone();
        let heartbeats = self.heartbeats.clone();
        let listed = self
            .handle
            .with_chitchat(|c| {
                let live = c.live_nodes_watcher();
                let live = live.borrow();
                let hb = heartbeats.lock().expect("heartbeat table");
                let heard = |id: &ChitchatId, st: &NodeState| {
                    live.contains_key(id) || heard_lately(&hb, id, st, SUSPECT_WINDOW)
                };
                let waited = c.node_states().iter().filter(|(id, st)| heard(id, st));
                listing(c.node_states(), newest_peers(waited, &me))
            })
            .await;
        let on = self.on_nets(&listed).await;
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
        let me = self.handle.chitchat_id().clone();
        let (mut out, listed) = self
            .handle
            .with_chitchat(|c| {
                let live: Vec<ChitchatId> =
                    c.live_nodes_watcher().borrow().keys().cloned().collect();
                let members: Vec<Member> = c
                    .node_states()
                    .iter()
                    .map(|(id, st)| Member {
                        node: id.node_id.to_string(),
                        generation: id.generation_id,
                        gossip_addr: id.gossip_advertise_addr,
                        vtep: st.get(VTEP_KEY).and_then(|v| v.parse().ok()),
                        heartbeat: st.heartbeat().into(),
                        heartbeat_age_ms: None,
                        live: live.contains(id) || *id == me,
                        is_self: *id == me,
                        endpoints: 0,
                    })
                    .collect();
                // Each generation on its own (no fallbacks): its entries.
                let each: Vec<Listed> = c
                    .node_states()
                    .iter()
                    .map(|(id, st)| listed_one(id.node_id.to_string(), id, st))
                    .collect();
                (members, each)
            })
            .await;
        let on = self.on_nets(&listed).await;
        let mut counts: HashMap<(String, u64), usize> = HashMap::new();
        for ((i, _), n) in &on {
            let m = &out[*i];
            *counts.entry((m.node.clone(), m.generation)).or_default() += n.eps.len();
        }
        let hb = self.heartbeats.lock().expect("heartbeat table");
        for m in &mut out {
            m.endpoints = counts
                .get(&(m.node.clone(), m.generation))
                .copied()
                .unwrap_or(0);
            if !m.is_self {
                m.heartbeat_age_ms = hb
                    .get(&(m.node.clone(), m.generation))
                    .map(|(_, at)| at.elapsed().as_millis() as u64);
            }
        }
        out.sort_by(|a, b| (&a.node, a.generation).cmp(&(&b.node, b.generation)));
        out
    }

    /// The networks this node gossips on, with whose entries it holds on
    /// each (the live peers membership lists there, and itself).
    pub async fn networks(&self) -> Vec<NetworkGossip> {
        let me = self.handle.chitchat_id().clone();
        let listed = self
            .handle
            .with_chitchat(|c| {
                let live = c.live_nodes_watcher().borrow().clone();
                let mut chosen = newest_peers(live.iter(), &me.node_id);
                // Itself, to count its own entries.
                if let Some((id, st)) = c.node_states().get_key_value(&me) {
                    chosen.insert(me.node_id.to_string(), (id, st));
                }
                listing(c.node_states(), chosen)
            })
            .await;
        let on = self.on_nets(&listed).await;
        let mut out: BTreeMap<u32, NetworkGossip> = {
            let db = self.tables.db.lock().expect("tables");
            db.networks()
                .filter_map(|vni| {
                    let me = db.me_on(vni)?;
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
                .collect()
        };
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

//! Gossip of endpoint tables on UDP 7946 with chitchat (scuttlebutt
//! anti-entropy + phi-accrual failure detection).
//!
//! Each node publishes, as its own chitchat state, its VTEP (`vtep`) and one
//! key per local endpoint (`ep:VNI:IP` -> MAC and network), so a change costs
//! one key-version on the wire. A node that leaves gracefully sets `leaving`
//! and is dropped by every peer at once; a node that dies is dropped when
//! the failure detector convicts it.
//!
//! Every datagram is sealed with the cluster's gossip key (`seal.rs`,
//! `sealed.rs`; the keys in `keys.rs`), so only swarm members take part.

pub mod keys;
pub mod seal;
pub mod sealed;
pub mod stall;
pub mod table;
pub mod transport;

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use chitchat::{
    spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, NodeState,
};
use tokio::sync::watch;

use crate::wire::EpRecord;
use crate::wire::Member;
use keys::GossipKeys;
use sealed::SealedTransport;
use table::{ep_key, PeerState, APPLIED_PREFIX, EP_PREFIX, LEAVING_KEY, RESTARTING_KEY, VTEP_KEY};
use transport::WireCounters;

#[derive(Clone, Debug)]
pub struct GossipConfig {
    pub node: String,
    pub generation: u64,
    /// Where peers reach us (advertise address + gossip port).
    pub advertise: SocketAddr,
    pub listen: SocketAddr,
    pub seeds: Vec<String>,
    pub cluster_id: String,
    pub interval: Duration,
    /// Phi-accrual threshold: lower convicts dead nodes sooner, and falsely
    /// more often. With a 200 ms interval, 5 convicts in about 2 s.
    pub phi_threshold: f64,
    /// What datagrams are sealed and opened with.
    pub keys: Arc<GossipKeys>,
}

/// How long a peer the failure detector convicted, but whose heartbeat
/// advanced this recently, is still waited for by a draining task.
pub const SUSPECT_WINDOW: Duration = Duration::from_secs(15);

/// How long a convicted peer that did not say goodbye keeps its entries,
/// counted from the last time it was heard (`Gossip::peers`): a dead node
/// leaves names and VIPs about 2.5 s after it died (the detector convicts
/// in about 0.8 s; the blinks CI saw ended within 1.5 s of silence).
pub const HOLD: Duration = Duration::from_millis(2500);

/// How long a peer that said it restarts (`Gossip::pause`) keeps its
/// entries, counted from the last time it was heard: its next generation
/// takes them over (a daemon start took 3 s on an emulated VM, well under
/// a second on real hosts); one that never comes back is dropped then.
/// The managers give it as long before they call it down (`liveness`).
pub const RESTART_HOLD: Duration = crate::raft::liveness::RESTART_GRACE;

/// (node, generation) -> (last heartbeat seen, when it last advanced).
type HeartbeatTable = Arc<std::sync::Mutex<HashMap<(String, u64), (u64, Instant)>>>;

/// A peer as a draining task sees it.
#[derive(Clone, Debug)]
pub struct PeerAck {
    pub node: String,
    /// What it has applied of this node's endpoint keys (None: it says
    /// nothing of us).
    pub applied: Option<u64>,
    /// The networks it has endpoints on.
    pub vnis: std::collections::BTreeSet<u32>,
}

pub struct Gossip {
    handle: ChitchatHandle,
    pub counters: Arc<WireCounters>,
    pub keys: Arc<GossipKeys>,
    interval: Duration,
    /// (node, generation) -> (last heartbeat seen, when it last advanced):
    /// chitchat keeps no wall-clock age, operators want one.
    heartbeats: HeartbeatTable,
    /// Whether this node itself just stalled (`stall.rs`).
    stall: Arc<std::sync::Mutex<stall::StallClock>>,
}

impl Gossip {
    pub async fn start(cfg: &GossipConfig, initial: Vec<(String, String)>) -> Result<Self> {
        let counters = Arc::new(WireCounters::default());
        let mut kv = vec![(VTEP_KEY.to_string(), cfg.advertise.ip().to_string())];
        kv.extend(initial);
        let config = ChitchatConfig {
            chitchat_id: ChitchatId::new(cfg.node.clone(), cfg.generation, cfg.advertise),
            cluster_id: cfg.cluster_id.clone(),
            gossip_interval: cfg.interval,
            listen_addr: cfg.listen,
            seed_nodes: cfg.seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: cfg.phi_threshold,
                initial_interval: cfg.interval,
                dead_node_grace_period: Duration::from_secs(3600),
                ..Default::default()
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            // A node is live only while it has a VTEP and has not said goodbye.
            extra_liveness_predicate: Some(Box::new(|s: &NodeState| {
                s.get(VTEP_KEY).is_some() && s.get(LEAVING_KEY).is_none()
            })),
            // V1 compresses the digest: with V0 a digest of ~1000+ nodes
            // outgrows a UDP datagram and chitchat panics (found by the
            // 2384-node simulation in bench/).
            protocol_version: chitchat::ProtocolVersion::V1,
        };
        let transport = SealedTransport {
            cluster_id: cfg.cluster_id.clone(),
            counters: counters.clone(),
            keys: cfg.keys.clone(),
        };
        let handle = spawn_chitchat(config, kv, &transport).await?;
        let heartbeats = Arc::new(std::sync::Mutex::new(HashMap::new()));
        let stall = Arc::new(std::sync::Mutex::new(stall::StallClock::new(
            cfg.interval,
            Instant::now(),
        )));
        tokio::spawn(track_heartbeats(
            handle.chitchat(),
            heartbeats.clone(),
            stall.clone(),
            cfg.interval,
        ));
        Ok(Self {
            handle,
            counters,
            keys: cfg.keys.clone(),
            interval: cfg.interval,
            heartbeats,
            stall,
        })
    }

    /// Publishes an endpoint record; returns the version it got (what
    /// another node's `applied:NODE` key must reach to have applied it).
    pub async fn publish(&self, vni: u32, ip: Ipv4Addr, rec: &EpRecord) -> u64 {
        let (k, v) = (
            ep_key(vni, ip),
            serde_json::to_string(rec).expect("record serialises"),
        );
        self.handle
            .with_chitchat(|c| {
                let st = c.self_node_state();
                st.set(k.clone(), v.clone());
                st.get_versioned(&k).map(|v| v.version).unwrap_or(0)
            })
            .await
    }

    pub async fn withdraw(&self, vni: u32, ip: Ipv4Addr) {
        let k = ep_key(vni, ip);
        self.handle
            .with_chitchat(|c| c.self_node_state().delete(&k))
            .await;
    }

    /// Fires whenever the set of live nodes or their states change.
    pub async fn watcher(
        &self,
    ) -> watch::Receiver<std::collections::BTreeMap<ChitchatId, NodeState>> {
        self.handle.with_chitchat(|c| c.live_nodes_watcher()).await
    }

    /// Says what this node's balancers have applied of peers' endpoint
    /// keys (`applied:NODE` keys): sets those in `updates` that moved,
    /// drops those of nodes no longer among the `peers`.
    pub async fn set_applied(
        &self,
        peers: &std::collections::BTreeSet<String>,
        updates: &std::collections::BTreeMap<String, u64>,
    ) {
        self.handle
            .with_chitchat(|c| {
                let st = c.self_node_state();
                let gone: Vec<String> = st
                    .key_values()
                    .filter_map(|(k, _)| k.strip_prefix(APPLIED_PREFIX))
                    .filter(|n| !peers.contains(*n))
                    .map(|n| format!("{APPLIED_PREFIX}{n}"))
                    .collect();
                for k in gone {
                    st.delete(&k);
                }
                for (node, v) in updates {
                    let (k, v) = (format!("{APPLIED_PREFIX}{node}"), v.to_string());
                    if st.get(&k) != Some(v.as_str()) {
                        st.set(k, v);
                    }
                }
            })
            .await;
    }

    /// Each peer a draining task waits for: what it has applied of this
    /// node's endpoint keys, and the networks it balances. Polled while a
    /// task drains, so it reads the states in place instead of copying them
    /// as `peers` does.
    ///
    /// Not only the live peers: liveness is this node's view, and a node
    /// starved for a moment (or cut off one way) convicts peers that still
    /// balance to it. Stopping early then sends their new connections to a
    /// closed port, so a peer heard from within [`SUSPECT_WINDOW`] that has
    /// not said goodbye is waited for too (the drain's own bound caps the
    /// wait on one that really died).
    pub async fn acks(&self) -> Vec<PeerAck> {
        let me = self.handle.chitchat_id().node_id.clone();
        let key = format!("{APPLIED_PREFIX}{me}");
        let heartbeats = self.heartbeats.clone();
        self.handle
            .with_chitchat(|c| {
                let live = c.live_nodes_watcher();
                let live = live.borrow();
                let hb = heartbeats.lock().expect("heartbeat table");
                let heard = |id: &ChitchatId, st: &NodeState| {
                    live.contains_key(id) || heard_lately(&hb, id, st, SUSPECT_WINDOW)
                };
                let waited = c.node_states().iter().filter(|(id, st)| heard(id, st));
                newest_peers(waited, &me)
                    .into_iter()
                    .map(|(node, (_, st))| PeerAck {
                        node,
                        applied: st.get(&key).and_then(|v| v.parse().ok()),
                        vnis: st
                            .iter_prefix(EP_PREFIX)
                            .filter_map(|(k, _)| Some(table::parse_ep_key(k)?.0))
                            .collect(),
                    })
                    .collect()
            })
            .await
    }

    /// Handshakes with `ips` (on this node's gossip port: every node of a
    /// swarm gossips on the same one, 7946 as Docker's) while this node
    /// knows no live peer: a node that joined a swarm with no `--join` seed,
    /// as README's install path leaves it, or one that lost every peer,
    /// finds the cluster through its managers, as Docker's nodes do.
    pub async fn introduce(&self, ips: &[std::net::IpAddr]) {
        let me = self.handle.chitchat_id().clone();
        let alone = self
            .handle
            .with_chitchat(|c| c.live_nodes().all(|id| id.node_id == me.node_id))
            .await;
        if !alone {
            return;
        }
        let port = me.gossip_advertise_addr.port();
        for ip in ips {
            let to = SocketAddr::new(*ip, port);
            if to != me.gossip_advertise_addr {
                let _ = self.handle.gossip(to);
            }
        }
    }

    /// The other live nodes' states, ready for [`table::merge`]: live as the
    /// failure detector *and* the leaving predicate say, newest generation
    /// of each node only (a restarted node's old self may linger a moment).
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
        let live = self
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
                live
            })
            .await;
        newest_peers(live.iter(), &me.node_id)
            .into_iter()
            .filter_map(|(node, (id, st))| {
                let gossip_ip = match id.gossip_advertise_addr.ip() {
                    std::net::IpAddr::V4(ip) => ip,
                    std::net::IpAddr::V6(_) => return None,
                };
                let kv = st
                    .key_values()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                let ep_version = st
                    .key_values_including_deleted()
                    .filter(|(k, _)| k.starts_with(EP_PREFIX))
                    .map(|(_, v)| v.version)
                    .max()
                    .unwrap_or(0);
                Some(PeerState {
                    node,
                    gossip_ip,
                    kv,
                    ep_version,
                })
            })
            .collect()
    }

    /// Every node chitchat knows, live or not.
    pub async fn members(&self) -> Vec<Member> {
        let me = self.handle.chitchat_id().clone();
        let mut out = self
            .handle
            .with_chitchat(|c| {
                let live: Vec<ChitchatId> =
                    c.live_nodes_watcher().borrow().keys().cloned().collect();
                c.node_states()
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
                        endpoints: st
                            .key_values()
                            .filter(|(k, _)| k.starts_with(table::EP_PREFIX))
                            .count(),
                    })
                    .collect::<Vec<_>>()
            })
            .await;
        let hb = self.heartbeats.lock().expect("heartbeat table");
        for m in &mut out {
            if !m.is_self {
                m.heartbeat_age_ms = hb
                    .get(&(m.node.clone(), m.generation))
                    .map(|(_, at)| at.elapsed().as_millis() as u64);
            }
        }
        out.sort_by(|a, b| (&a.node, a.generation).cmp(&(&b.node, b.generation)));
        out
    }

    /// Whether this node stalled just now or within `stall::GRACE`.
    pub fn stalled(&self) -> bool {
        self.stall
            .lock()
            .expect("stall clock")
            .recently(Instant::now())
    }

    /// For tests: as if this node had just stalled.
    #[cfg(test)]
    pub fn note_stall(&self) {
        let mut c = self.stall.lock().expect("stall clock");
        let late = Instant::now();
        *c = stall::StallClock::new(self.interval, late - self.interval * 10);
        c.tick(late);
    }

    /// Datagrams and messages refused on the wire, by reason.
    pub fn wire_refused(&self) -> Vec<(&'static str, u64)> {
        self.counters.refused()
    }

    /// Says "back soon" (a daemon restart): peers keep this node's entries
    /// for `RESTART_HOLD` of silence, not `HOLD`, so a restart slower than
    /// the failure detector (an emulated VM's) blinks no name or backend
    /// out. Gossips for a few rounds, then stops.
    pub async fn pause(&self) {
        self.handle
            .with_chitchat(|c| c.self_node_state().set(RESTARTING_KEY, "1"))
            .await;
        tokio::time::sleep(self.interval * 3).await;
        let _ = self.handle.initiate_shutdown();
    }

    /// Says goodbye: peers drop this node at once instead of waiting for
    /// the failure detector. Gossips for a few rounds, then stops.
    pub async fn leave(&self) {
        self.handle
            .with_chitchat(|c| c.self_node_state().set(LEAVING_KEY, "1"))
            .await;
        tokio::time::sleep(self.interval * 4).await;
        let _ = self.handle.initiate_shutdown();
    }
}

/// A node that has not said goodbye, and whose heartbeat advanced within
/// `window`: if it is not live, it was convicted a moment ago.
fn heard_lately(
    hb: &HashMap<(String, u64), (u64, Instant)>,
    id: &ChitchatId,
    st: &NodeState,
    window: Duration,
) -> bool {
    st.get(VTEP_KEY).is_some()
        && st.get(LEAVING_KEY).is_none()
        && hb
            .get(&(id.node_id.to_string(), id.generation_id))
            .is_some_and(|(_, at)| at.elapsed() < window)
}

/// The other nodes of `live`, the newest generation of each (a restarted
/// node's old self may linger a moment), by name.
fn newest_peers<'a>(
    live: impl Iterator<Item = (&'a ChitchatId, &'a NodeState)>,
    me: &str,
) -> std::collections::BTreeMap<String, (&'a ChitchatId, &'a NodeState)> {
    let mut newest: std::collections::BTreeMap<String, (&ChitchatId, &NodeState)> =
        Default::default();
    for (id, st) in live {
        if &*id.node_id == me {
            continue;
        }
        let e = newest.entry(id.node_id.to_string()).or_insert((id, st));
        if id.generation_id > e.0.generation_id {
            *e = (id, st);
        }
    }
    newest
}

/// Notes, once per round, when each node's heartbeat last advanced.
async fn track_heartbeats(
    chitchat: Arc<tokio::sync::Mutex<chitchat::Chitchat>>,
    table: HeartbeatTable,
    stall: Arc<std::sync::Mutex<stall::StallClock>>,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Some(gap) = stall.lock().expect("stall clock").tick(Instant::now()) {
            tracing::warn!(
                gap_ms = gap.as_millis() as u64,
                "this node did not run for a while: peers convicted meanwhile keep their entries for {}s",
                stall::GRACE.as_secs()
            );
        }
        let now: Vec<((String, u64), u64)> = {
            let c = chitchat.lock().await;
            c.node_states()
                .iter()
                .map(|(id, st)| {
                    (
                        (id.node_id.to_string(), id.generation_id),
                        st.heartbeat().into(),
                    )
                })
                .collect()
        };
        let mut t = table.lock().expect("heartbeat table");
        for (k, hb) in now {
            match t.get(&k) {
                Some((old, _)) if *old == hb => {}
                _ => {
                    t.insert(k, (hb, Instant::now()));
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "liveness_tests.rs"]
mod liveness_tests;

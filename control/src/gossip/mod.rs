//! Gossip on UDP 7946, in two layers:
//!
//! - **membership**, cluster-wide and small, on chitchat (scuttlebutt
//!   anti-entropy + phi-accrual failure detection): each node's VTEP
//!   (`vtep`), the networks it is on (`net:VNI`, `networks.rs`), and
//!   `leaving` / `restarting`. A node that leaves gracefully sets
//!   `leaving` and is dropped by every peer at once; one that dies is
//!   dropped when the failure detector convicts it (`view.rs` says whose
//!   entries count, and for how long). `swim.rs` holds the SWIM
//!   membership built for Swarm2000's size, which only `shoal lab sim`
//!   runs so far.
//! - **the tables of the networks it is on** (`netdb`, driven by
//!   `tables.rs`), among the nodes on each: one record per local endpoint
//!   (MAC, network, service record), and what this node has applied of
//!   each peer's records there (the drain waits on it), spread by rumors
//!   and repaired by bucketed anti-entropy.
//!
//! Every datagram is sealed with the cluster's gossip key (`seal.rs`,
//! `sealed.rs`; the keys in `keys.rs`), so only swarm members take part;
//! both layers share the one socket (`sealed::Hub`).

pub mod keys;
pub mod netdb;
pub mod networks;
pub mod roster;
pub mod seal;
pub mod sealed;
pub mod stall;
pub mod swim;
pub mod table;
mod tables;
pub mod transport;
mod view;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use chitchat::{
    spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, NodeState,
};
use tokio::sync::watch;

use crate::wire::EpRecord;
use keys::GossipKeys;
use netdb::{Key, NetDb, Origin};
use networks::{net_key, next_generation};
use sealed::{Hub, SealedTransport};
use table::{parse_ep_key, LEAVING_KEY, RESTARTING_KEY, VTEP_KEY};
use tables::Tables;
use transport::WireCounters;

pub use view::PeerAck;

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

pub struct Gossip {
    /// Cluster membership: VTEPs, liveness, the networks each node is on.
    handle: ChitchatHandle,
    /// The tables of the networks this node is on (`netdb`).
    tables: Tables,
    node: String,
    advertise: SocketAddr,
    /// Bumped on every change of membership or of a network's table.
    changes: watch::Receiver<u64>,
    /// Who membership counts live (names), as the failure detector says.
    live: watch::Receiver<BTreeMap<ChitchatId, NodeState>>,
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
    /// Starts membership and the table of each network of `initial`
    /// (this node's `ep:` keys, e.g. those a previous run published).
    pub async fn start(cfg: &GossipConfig, initial: Vec<(String, String)>) -> Result<Self> {
        let counters = Arc::new(WireCounters::default());
        let hub = Hub::bind(cfg.listen, cfg.keys.clone(), counters.clone()).await?;
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
                // Heartbeat intervals kept per peer (phi uses their mean):
                // 100 is 20 s of history at 200 ms rounds. chitchat's 1000
                // cost 8 KB per peer, 19 MB at Swarm2000's 2,384 nodes.
                sampling_window_size: 100,
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
            hub: hub.clone(),
            channel: 0,
            cluster_id: cfg.cluster_id.clone(),
        };
        let kv = vec![(VTEP_KEY.to_string(), cfg.advertise.ip().to_string())];
        let handle = spawn_chitchat(config, kv, &transport).await?;
        let live = handle.with_chitchat(|c| c.live_nodes_watcher()).await;
        let (tx, changes) = watch::channel(0u64);
        let tx = Arc::new(tx);
        {
            let (mut w, tx) = (live.clone(), tx.clone());
            tokio::spawn(async move {
                while w.changed().await.is_ok() {
                    tx.send_modify(|n| *n += 1);
                }
            });
        }
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
        let std::net::IpAddr::V4(addr) = cfg.advertise.ip() else {
            anyhow::bail!("gossip needs an IPv4 address, not {}", cfg.advertise);
        };
        let db = NetDb::new(
            Origin {
                addr,
                generation: cfg.generation,
            },
            netdb::Config::default(),
            u64::from_le_bytes(seal::random_bytes::<8>()),
        );
        let tables = Tables::start(tables::Rounds {
            db: Arc::new(std::sync::Mutex::new(db)),
            hub,
            port: cfg.advertise.port(),
            interval: cfg.interval,
            changes: tx,
            chitchat: handle.chitchat(),
            me: cfg.node.clone(),
        });
        let g = Self {
            handle,
            tables,
            node: cfg.node.clone(),
            advertise: cfg.advertise,
            changes,
            live,
            counters,
            keys: cfg.keys.clone(),
            interval: cfg.interval,
            heartbeats,
            stall,
        };
        let mut by_net: BTreeMap<u32, Vec<(String, String)>> = BTreeMap::new();
        for (k, v) in initial {
            if let Some((vni, _)) = parse_ep_key(&k) {
                by_net.entry(vni).or_default().push((k, v));
            }
        }
        for (vni, kv) in by_net {
            g.join(vni).await;
            let mut db = g.tables.db.lock().expect("tables");
            for (k, v) in kv {
                if let Some((_, ip)) = parse_ep_key(&k) {
                    db.set(
                        vni,
                        Key::Ep(ip),
                        Some(Arc::from(v.as_bytes())),
                        crate::clock::now_ms(),
                    );
                }
            }
        }
        Ok(g)
    }

    /// Joins `vni`'s table under a new generation and says so in
    /// membership; the next rounds' syncs bring the table.
    async fn join(&self, vni: u32) {
        let generation = next_generation();
        self.tables
            .db
            .lock()
            .expect("tables")
            .join_as(vni, generation);
        self.handle
            .with_chitchat(|c| {
                c.self_node_state()
                    .set(net_key(vni), generation.to_string())
            })
            .await;
    }

    /// Joins `vni` unless this node is on it already.
    async fn joined(&self, vni: u32) {
        let on = self.tables.db.lock().expect("tables").me_on(vni).is_some();
        if !on {
            self.join(vni).await;
        }
    }

    /// The networks this node is on: its endpoints' and the ingress
    /// network's (every node of the routing mesh balances to its tasks).
    /// Joins the new ones (the next rounds' syncs bring their tables) and
    /// leaves the others.
    pub async fn set_networks(&self, joined: &BTreeSet<u32>) {
        for vni in joined {
            self.joined(*vni).await;
        }
        let gone: Vec<u32> = {
            let db = self.tables.db.lock().expect("tables");
            db.networks()
                .filter(|v| !joined.contains(v))
                // An endpoint published after the caller looked keeps its
                // network (it is withdrawn before its network is left).
                .filter(|&v| {
                    let me = db.me_on(v).expect("on it");
                    !db.view(v, &me)
                        .is_some_and(|o| o.live().any(|r| matches!(r.key, Key::Ep(_))))
                })
                .collect()
        };
        for vni in gone {
            // Off the list first: from then on peers take none of this
            // node's entries on it, whatever its table last said.
            self.handle
                .with_chitchat(|c| c.self_node_state().delete(&net_key(vni)))
                .await;
            self.tables.db.lock().expect("tables").leave(vni);
        }
    }

    /// Publishes an endpoint record on its network (joining it if need
    /// be); returns the version it got there (what another node's
    /// applied record of this node on that network must reach to have
    /// applied it).
    pub async fn publish(&self, vni: u32, ip: Ipv4Addr, rec: &EpRecord) -> u64 {
        let v = serde_json::to_vec(rec).expect("record serialises");
        self.joined(vni).await;
        self.tables
            .db
            .lock()
            .expect("tables")
            .set(vni, Key::Ep(ip), Some(Arc::from(v)), crate::clock::now_ms())
            .unwrap_or(0)
    }

    pub async fn withdraw(&self, vni: u32, ip: Ipv4Addr) {
        self.tables
            .db
            .lock()
            .expect("tables")
            .set(vni, Key::Ep(ip), None, crate::clock::now_ms());
    }

    /// Fires whenever membership or a network's table changes.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// The other nodes the failure detector counts live, by name.
    pub fn live_names(&self) -> BTreeSet<String> {
        self.live
            .borrow()
            .keys()
            .map(|id| id.node_id.to_string())
            .filter(|n| *n != self.node)
            .collect()
    }

    /// Says, on each network, what this node's balancers have applied of
    /// peers' endpoint keys there (`applied:NODE` keys): sets those in
    /// `updates` (VNI -> node -> version) that moved, drops those of nodes
    /// no longer among the `peers`.
    pub async fn set_applied(
        &self,
        peers: &BTreeSet<String>,
        updates: &BTreeMap<u32, BTreeMap<String, u64>>,
    ) {
        // Records name a node by its gossip address.
        let addrs: BTreeMap<String, Ipv4Addr> = self
            .handle
            .with_chitchat(|c| {
                newest_peers(c.node_states().iter(), &self.node)
                    .into_iter()
                    .filter_map(|(n, (id, _))| match id.gossip_advertise_addr.ip() {
                        std::net::IpAddr::V4(ip) => Some((n, ip)),
                        std::net::IpAddr::V6(_) => None,
                    })
                    .collect()
            })
            .await;
        let keep: BTreeSet<Ipv4Addr> = peers.iter().filter_map(|p| addrs.get(p)).copied().collect();
        let none = BTreeMap::new();
        let now = crate::clock::now_ms();
        let mut db = self.tables.db.lock().expect("tables");
        let vnis: Vec<u32> = db.networks().collect();
        for vni in vnis {
            let me = db.me_on(vni).expect("on it");
            let held: BTreeMap<Ipv4Addr, Vec<u8>> = db
                .view(vni, &me)
                .map(|o| {
                    o.live()
                        .filter_map(|r| match r.key {
                            Key::Applied(a) => Some((a, r.value.as_deref()?.to_vec())),
                            Key::Ep(_) | Key::Node => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            for a in held.keys().filter(|a| !keep.contains(a)) {
                db.set(vni, Key::Applied(*a), None, now);
            }
            for (node, v) in updates.get(&vni).unwrap_or(&none) {
                let Some(a) = addrs.get(node) else { continue };
                let v = v.to_string().into_bytes();
                if held.get(a) != Some(&v) {
                    db.set(vni, Key::Applied(*a), Some(Arc::from(v)), now);
                }
            }
        }
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
        self.tables.stop();
    }

    /// Says goodbye: peers drop this node at once instead of waiting for
    /// the failure detector. Gossips for a few rounds, then stops.
    pub async fn leave(&self) {
        self.handle
            .with_chitchat(|c| c.self_node_state().set(LEAVING_KEY, "1"))
            .await;
        tokio::time::sleep(self.interval * 4).await;
        let _ = self.handle.initiate_shutdown();
        self.tables.stop();
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

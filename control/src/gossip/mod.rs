//! Gossip on UDP 7946 with chitchat (scuttlebutt anti-entropy +
//! phi-accrual failure detection), in two layers:
//!
//! - **membership**, cluster-wide and small: each node's VTEP (`vtep`),
//!   the networks it is on (`net:VNI`), and `leaving` / `restarting`. A
//!   node that leaves gracefully sets `leaving` and is dropped by every
//!   peer at once; one that dies is dropped when the failure detector
//!   convicts it (`view.rs` says whose entries count, and for how long).
//! - **one instance per network** (`networks.rs`), among the nodes on it:
//!   one key per local endpoint (`ep:VNI:IP` -> MAC, network, service
//!   record), so a change costs one key-version on the wire, and what this
//!   node has applied of each peer's (`applied:NODE`).
//!
//! Every datagram is sealed with the cluster's gossip key (`seal.rs`,
//! `sealed.rs`; the keys in `keys.rs`), so only swarm members take part;
//! all instances share the one socket (`sealed::Hub`).

pub mod keys;
pub mod networks;
pub mod seal;
pub mod sealed;
pub mod stall;
pub mod table;
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
use tracing::warn;

use crate::wire::EpRecord;
use keys::GossipKeys;
use networks::{net_key, Net, Template};
use sealed::{Hub, SealedTransport};
use table::{
    ep_key, parse_ep_key, APPLIED_PREFIX, EP_PREFIX, LEAVING_KEY, RESTARTING_KEY, VTEP_KEY,
};
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

/// This node's instance of each network it is on, by VNI.
type Nets = Arc<tokio::sync::Mutex<BTreeMap<u32, Net>>>;

/// (node, generation) -> (last heartbeat seen, when it last advanced).
type HeartbeatTable = Arc<std::sync::Mutex<HashMap<(String, u64), (u64, Instant)>>>;

pub struct Gossip {
    /// Cluster membership: VTEPs, liveness, the networks each node is on.
    handle: ChitchatHandle,
    /// This node's instance of each network it is on, by VNI.
    nets: Nets,
    template: Template,
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
    /// Starts membership and an instance for each network of `initial`
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
        let nets: Nets = Default::default();
        tokio::spawn(prod_loop(
            nets.clone(),
            live.clone(),
            cfg.node.clone(),
            cfg.interval,
        ));
        let g = Self {
            handle,
            nets,
            template: Template {
                node: cfg.node.clone(),
                advertise: cfg.advertise,
                listen: cfg.listen,
                cluster_id: cfg.cluster_id.clone(),
                interval: cfg.interval,
                phi_threshold: cfg.phi_threshold,
                hub,
                changes: tx,
            },
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
        {
            let mut nets = g.nets.lock().await;
            for (vni, kv) in by_net {
                g.join(&mut nets, vni, kv).await?;
            }
        }
        Ok(g)
    }

    /// Starts this node's instance for `vni` and says so in membership.
    async fn join(
        &self,
        nets: &mut BTreeMap<u32, Net>,
        vni: u32,
        kv: Vec<(String, String)>,
    ) -> Result<()> {
        let seeds: Vec<SocketAddr> = self.listed_on(vni).into_iter().map(|(_, _, a)| a).collect();
        let net = self.template.spawn(vni, &seeds, kv).await?;
        let generation = net.generation.to_string();
        nets.insert(vni, net);
        self.handle
            .with_chitchat(|c| c.self_node_state().set(net_key(vni), generation.clone()))
            .await;
        Ok(())
    }

    /// This node's instance for `vni`, started if need be (None: it could
    /// not be, logged).
    async fn joined<'a>(&self, nets: &'a mut BTreeMap<u32, Net>, vni: u32) -> Option<&'a Net> {
        if !nets.contains_key(&vni) {
            if let Err(e) = self.join(nets, vni, vec![]).await {
                warn!(vni, "cannot join the network's gossip: {e:#}");
                return None;
            }
        }
        nets.get(&vni)
    }

    /// The networks this node is on: its endpoints' and the ingress
    /// network's (every node of the routing mesh balances to its tasks).
    /// Joins the new ones (seeded with the nodes membership lists there;
    /// `prod_loop` asks them for their state every round) and leaves the
    /// others.
    pub async fn set_networks(&self, joined: &BTreeSet<u32>) {
        let mut nets = self.nets.lock().await;
        for vni in joined {
            self.joined(&mut nets, *vni).await;
        }
        let mut gone = vec![];
        for (vni, net) in nets.iter().filter(|(v, _)| !joined.contains(v)) {
            // An endpoint published after the caller looked keeps its
            // network (it is withdrawn before its network is left).
            let mine = net
                .handle
                .with_chitchat(|c| {
                    c.self_node_state()
                        .key_values()
                        .any(|(k, _)| k.starts_with(EP_PREFIX))
                })
                .await;
            if !mine {
                gone.push(*vni);
            }
        }
        for vni in gone {
            // Off the list first: from then on peers take none of this
            // node's entries on it, whatever its instance last said.
            self.handle
                .with_chitchat(|c| c.self_node_state().delete(&net_key(vni)))
                .await;
            nets.remove(&vni);
        }
    }

    /// Publishes an endpoint record on its network (joining it if need
    /// be); returns the version it got there (what another node's
    /// `applied:NODE` key on that network must reach to have applied it).
    pub async fn publish(&self, vni: u32, ip: Ipv4Addr, rec: &EpRecord) -> u64 {
        let (k, v) = (
            ep_key(vni, ip),
            serde_json::to_string(rec).expect("record serialises"),
        );
        let mut nets = self.nets.lock().await;
        let Some(net) = self.joined(&mut nets, vni).await else {
            return 0;
        };
        net.handle
            .with_chitchat(|c| {
                let st = c.self_node_state();
                st.set(k.clone(), v.clone());
                st.get_versioned(&k).map(|v| v.version).unwrap_or(0)
            })
            .await
    }

    pub async fn withdraw(&self, vni: u32, ip: Ipv4Addr) {
        let k = ep_key(vni, ip);
        if let Some(net) = self.nets.lock().await.get(&vni) {
            net.handle
                .with_chitchat(|c| c.self_node_state().delete(&k))
                .await;
        }
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
            .filter(|n| *n != self.template.node)
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
        let none = BTreeMap::new();
        for (vni, net) in self.nets.lock().await.iter() {
            let updates = updates.get(vni).unwrap_or(&none);
            net.handle
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
        self.nets.lock().await.clear();
    }

    /// Says goodbye: peers drop this node at once instead of waiting for
    /// the failure detector. Gossips for a few rounds, then stops.
    pub async fn leave(&self) {
        self.handle
            .with_chitchat(|c| c.self_node_state().set(LEAVING_KEY, "1"))
            .await;
        tokio::time::sleep(self.interval * 4).await;
        let _ = self.handle.initiate_shutdown();
        self.nets.lock().await.clear();
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

/// Asks, every round and whenever membership changes, the nodes listed on
/// each network for the state this node does not hold yet: a node that
/// joins a network, or one another node just joined, has that table in
/// a round or two instead of waiting to be picked at random.
async fn prod_loop(
    nets: Nets,
    mut live: watch::Receiver<BTreeMap<ChitchatId, NodeState>>,
    me: String,
    interval: Duration,
) {
    loop {
        tokio::select! {
            r = live.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(interval) => {}
        }
        let mut nets = nets.lock().await;
        for (vni, net) in nets.iter_mut() {
            let listed = view::listed_on(&live, &me, *vni);
            net.prod(&listed).await;
        }
    }
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

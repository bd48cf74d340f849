//! Gossip on UDP 7946, in two layers:
//!
//! - **membership**, cluster-wide and small (`roster.rs`): SWIM from the
//!   foca crate for liveness (probes, indirect probes, suspicion; a node's
//!   steady cost does not grow with the swarm), and each node's record
//!   (name, VTEP, the networks it is on, `leaving` / `restarting`) in a
//!   cluster table gossiped like a network's. A node that leaves
//!   gracefully says so and is dropped by every peer at once; one that
//!   dies is dropped once SWIM declares it down (`view.rs` says whose
//!   entries count, and for how long).
//! - **the tables of the networks it is on** (`netdb`), among the nodes
//!   on each: one record per local endpoint (MAC, network, service
//!   record), and what this node has applied of each peer's records there
//!   (the drain waits on it), spread by rumors and repaired by bucketed
//!   anti-entropy.
//!
//! `rounds.rs` drives both. Every datagram is sealed with the cluster's
//! gossip key (`seal.rs`, `sealed.rs`; the keys in `keys.rs`), so only
//! swarm members take part; both layers share the one socket
//! (`sealed::Hub`).

pub mod keys;
pub mod netdb;
pub mod networks;
mod remembered;
pub mod roster;
mod rounds;
pub mod seal;
pub mod sealed;
pub mod stall;
pub mod swim;
pub mod table;
pub mod transport;
mod view;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::sync::watch;

use crate::wire::EpRecord;
use keys::GossipKeys;
use netdb::{Key, NetDb, Origin};
use networks::next_generation;
use remembered::Remembered;
use roster::{NodeRecord, Roster};
use rounds::{Rounds, Setup, Shared};
use sealed::Hub;
use table::parse_ep_key;
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
    /// What datagrams are sealed and opened with.
    pub keys: Arc<GossipKeys>,
    /// Where the members last gossiped with are kept (`remembered.rs`):
    /// a restart asks them in when it has no seed.
    pub peers_file: Option<std::path::PathBuf>,
}

/// How long a peer SWIM declared down, but heard from this recently, is
/// still waited for by a draining task.
pub const SUSPECT_WINDOW: Duration = Duration::from_secs(15);

/// How long a peer declared down that did not say goodbye keeps its
/// entries, counted from the last time it was heard (`Gossip::peers`): a
/// dead node leaves names and VIPs about 2.5 s after it died (SWIM declares
/// it down in about 1.2 s; the blinks CI saw ended within 1.5 s of
/// silence).
pub const HOLD: Duration = Duration::from_millis(2500);

/// How long a peer that said it restarts (`Gossip::pause`) keeps its
/// entries, counted from the last time it was heard: its next process
/// takes them over (a daemon start took 3 s on an emulated VM, well under
/// a second on real hosts); one that never comes back is dropped then.
/// The managers give it as long before they call it down (`liveness`).
pub const RESTART_HOLD: Duration = crate::raft::liveness::RESTART_GRACE;

pub struct Gossip {
    /// Membership and the tables of the networks this node is on.
    rounds: Rounds,
    node: String,
    advertise: SocketAddr,
    /// Bumped on every change of membership or of a network's table.
    changes: watch::Receiver<u64>,
    pub counters: Arc<WireCounters>,
    pub keys: Arc<GossipKeys>,
    interval: Duration,
    /// Whether this node itself just stalled (`stall.rs`).
    stall: Arc<std::sync::Mutex<stall::StallClock>>,
}

/// The IPv4 addresses of `seeds` (`host:port` or an address).
fn seed_ips(seeds: &[String]) -> Vec<Ipv4Addr> {
    use std::net::ToSocketAddrs;
    seeds
        .iter()
        .flat_map(|s| {
            let with_port = if s.contains(':') {
                s.clone()
            } else {
                format!("{s}:7946")
            };
            with_port.to_socket_addrs().into_iter().flatten()
        })
        .filter_map(|a| match a.ip() {
            std::net::IpAddr::V4(ip) => Some(ip),
            std::net::IpAddr::V6(_) => None,
        })
        .collect()
}

impl Gossip {
    /// Starts membership and the table of each network of `initial`
    /// (this node's `ep:` keys, e.g. those a previous run published).
    pub async fn start(cfg: &GossipConfig, initial: Vec<(String, String)>) -> Result<Self> {
        let std::net::IpAddr::V4(addr) = cfg.advertise.ip() else {
            anyhow::bail!("gossip needs an IPv4 address, not {}", cfg.advertise);
        };
        let counters = Arc::new(WireCounters::default());
        let hub = Hub::bind(
            cfg.listen,
            &cfg.cluster_id,
            cfg.keys.clone(),
            counters.clone(),
        )
        .await?;
        let me = Origin {
            addr,
            generation: cfg.generation,
        };
        let seed = u64::from_le_bytes(seal::random_bytes::<8>());
        let mut db = NetDb::new(me, netdb::Config::default(), seed);
        let record = NodeRecord {
            name: cfg.node.clone(),
            vtep: Some(addr),
            ..NodeRecord::default()
        };
        let roster = Roster::new(me, record, &mut db, crate::clock::now_ms(), seed ^ 1);
        let state = Arc::new(std::sync::Mutex::new(Shared {
            roster,
            db,
            heard: HashMap::new(),
        }));
        let (tx, changes) = watch::channel(0u64);
        let stall = Arc::new(std::sync::Mutex::new(stall::StallClock::new(
            cfg.interval,
            Instant::now(),
        )));
        let seeds = seed_ips(&cfg.seeds);
        let remembered = Remembered::load(cfg.peers_file.clone());
        let asked: Vec<Ipv4Addr> = seeds.iter().copied().chain(remembered.sample()).collect();
        let rounds = Rounds::start(Setup {
            state,
            hub,
            port: cfg.advertise.port(),
            interval: cfg.interval,
            changes: Arc::new(tx),
            seeds,
            remembered,
            stall: stall.clone(),
        });
        let g = Self {
            rounds,
            node: cfg.node.clone(),
            advertise: cfg.advertise,
            changes,
            counters,
            keys: cfg.keys.clone(),
            interval: cfg.interval,
            stall,
        };
        let mut by_net: BTreeMap<u32, Vec<(String, String)>> = BTreeMap::new();
        for (k, v) in initial {
            if let Some((vni, _)) = parse_ep_key(&k) {
                by_net.entry(vni).or_default().push((k, v));
            }
        }
        for (vni, kv) in by_net {
            g.join(vni);
            let mut st = g.rounds.state.lock().expect("gossip state");
            for (k, v) in kv {
                if let Some((_, ip)) = parse_ep_key(&k) {
                    st.db.set(
                        vni,
                        Key::Ep(ip),
                        Some(Arc::from(v.as_bytes())),
                        crate::clock::now_ms(),
                    );
                }
            }
        }
        // The seeds and some remembered members: the task asks them again
        // while this node is alone.
        g.rounds.swim(|r, io| {
            for s in &asked {
                r.announce(*s, io);
            }
        });
        Ok(g)
    }

    /// Joins `vni`'s table under a new generation and says so in this
    /// node's record; the next rounds' syncs bring the table.
    fn join(&self, vni: u32) {
        let generation = next_generation();
        let mut st = self.rounds.state.lock().expect("gossip state");
        let Shared { roster, db, .. } = &mut *st;
        db.join_as(vni, generation);
        roster.update(db, crate::clock::now_ms(), |r| {
            r.nets.insert(vni, generation);
        });
    }

    /// Joins `vni` unless this node is on it already.
    fn joined(&self, vni: u32) {
        let on = self
            .rounds
            .state
            .lock()
            .expect("gossip state")
            .db
            .me_on(vni)
            .is_some();
        if !on {
            self.join(vni);
        }
    }

    /// The networks this node is on: its endpoints' and the ingress
    /// network's (every node of the routing mesh balances to its tasks).
    /// Joins the new ones (the next rounds' syncs bring their tables) and
    /// leaves the others.
    pub async fn set_networks(&self, joined: &BTreeSet<u32>) {
        for vni in joined {
            self.joined(*vni);
        }
        let mut st = self.rounds.state.lock().expect("gossip state");
        let Shared { roster, db, .. } = &mut *st;
        let gone: Vec<u32> = db
            .networks()
            .filter(|v| *v != roster::CLUSTER && !joined.contains(v))
            // An endpoint published after the caller looked keeps its
            // network (it is withdrawn before its network is left).
            .filter(|&v| {
                let me = db.me_on(v).expect("on it");
                !db.view(v, &me)
                    .is_some_and(|o| o.live().any(|r| matches!(r.key, Key::Ep(_))))
            })
            .collect();
        if gone.is_empty() {
            return;
        }
        // Off the record first: from then on peers take none of this
        // node's entries on it, whatever its table last said.
        roster.update(db, crate::clock::now_ms(), |r| {
            for vni in &gone {
                r.nets.remove(vni);
            }
        });
        for vni in gone {
            db.leave(vni);
        }
    }

    /// Publishes an endpoint record on its network (joining it if need
    /// be); returns the version it got there (what another node's
    /// applied record of this node on that network must reach to have
    /// applied it).
    pub async fn publish(&self, vni: u32, ip: Ipv4Addr, rec: &EpRecord) -> u64 {
        let v = serde_json::to_vec(rec).expect("record serialises");
        self.joined(vni);
        self.rounds
            .state
            .lock()
            .expect("gossip state")
            .db
            .set(vni, Key::Ep(ip), Some(Arc::from(v)), crate::clock::now_ms())
            .unwrap_or(0)
    }

    pub async fn withdraw(&self, vni: u32, ip: Ipv4Addr) {
        self.rounds.state.lock().expect("gossip state").db.set(
            vni,
            Key::Ep(ip),
            None,
            crate::clock::now_ms(),
        );
    }

    /// Fires whenever membership or a network's table changes.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// The other nodes SWIM counts alive, by name.
    pub fn live_names(&self) -> BTreeSet<String> {
        let mut st = self.rounds.state.lock().expect("gossip state");
        view::snapshot(&mut st, self.advertise.port())
            .into_iter()
            .filter(|n| n.live && n.name != self.node)
            .map(|n| n.name)
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
        let mut st = self.rounds.state.lock().expect("gossip state");
        // Records name a node by its gossip address.
        let snap = view::snapshot(&mut st, self.advertise.port());
        let addrs: BTreeMap<String, Ipv4Addr> = view::newest(snap.iter(), &self.node)
            .into_iter()
            .map(|(n, s)| (n, s.origin.addr))
            .collect();
        let keep: BTreeSet<Ipv4Addr> = peers.iter().filter_map(|p| addrs.get(p)).copied().collect();
        let none = BTreeMap::new();
        let now = crate::clock::now_ms();
        let db = &mut st.db;
        let vnis: Vec<u32> = db.networks().filter(|v| *v != roster::CLUSTER).collect();
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

    /// Asks `ips` (on this node's gossip port: every node of a swarm
    /// gossips on the same one, 7946 as Docker's) to let this node in
    /// while it knows no live peer: a node that joined a swarm with no
    /// `--join` seed, as README's install path leaves it, or one that lost
    /// every peer, finds the cluster through its managers (and the nodes
    /// they name), as Docker's nodes do.
    pub async fn introduce(&self, ips: &[std::net::IpAddr]) {
        let v4: Vec<Ipv4Addr> = ips
            .iter()
            .filter_map(|ip| match ip {
                std::net::IpAddr::V4(a) => Some(*a),
                std::net::IpAddr::V6(_) => None,
            })
            .collect();
        self.rounds.swim(|r, io| {
            if r.alive().next().is_none() {
                for ip in &v4 {
                    r.announce(*ip, io);
                }
            }
        });
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

    /// For tests: falls silent at once, as a starved or cut-off node.
    #[cfg(test)]
    pub fn silence(&self) {
        self.rounds.stop();
    }

    /// Datagrams and messages refused on the wire, by reason.
    pub fn wire_refused(&self) -> Vec<(&'static str, u64)> {
        self.counters.refused()
    }

    /// Says "back soon" (a daemon restart): peers keep this node's entries
    /// for `RESTART_HOLD` of silence, not `HOLD`, so a restart slower than
    /// SWIM's detection (an emulated VM's) blinks no name or backend out.
    /// Gossips for a few rounds, then stops.
    pub async fn pause(&self) {
        self.update_record(|r| r.restarting = true);
        tokio::time::sleep(self.interval * 3).await;
        self.rounds.stop();
    }

    /// Says goodbye: peers drop this node at once instead of waiting for
    /// SWIM. Gossips for a few rounds, then stops.
    pub async fn leave(&self) {
        self.update_record(|r| r.leaving = true);
        tokio::time::sleep(self.interval * 3).await;
        self.rounds.swim(|r, io| r.leave(io));
        tokio::time::sleep(self.interval).await;
        self.rounds.stop();
    }

    fn update_record(&self, f: impl FnOnce(&mut NodeRecord)) {
        let mut st = self.rounds.state.lock().expect("gossip state");
        let Shared { roster, db, .. } = &mut *st;
        roster.update(db, crate::clock::now_ms(), f);
    }
}

#[cfg(test)]
#[path = "liveness_tests.rs"]
mod liveness_tests;

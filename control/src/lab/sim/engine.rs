//! A discrete-event network of simulated nodes, each running the real
//! membership (`gossip::roster`: foca's SWIM and the cluster table of node
//! records) and the real table gossip (`gossip::netdb`): every message is
//! encoded, counted with the sealed transport's overhead, delivered after
//! a LAN's latency and decoded. Time is simulated, so 2,384 nodes keep
//! 200 ms rounds on two cores.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use foca::Timer;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::shape::NetSpec;
use crate::gossip::netdb::{
    self, Key, Msg, NetDb, Origin, OriginDelta, Outgoing, Value, Values, WireRec,
};
use crate::gossip::roster::{Io, Liveness, NodeRecord, Roster, CLUSTER};
use crate::gossip::seal::{MAX_FRAGMENT_PLAINTEXT, OVERHEAD};

pub const MEMBERSHIP: usize = 0;
pub const TABLES: usize = 1;

pub fn addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + 10 + i as u32)
}

pub fn index(a: Ipv4Addr) -> usize {
    (u32::from(a) - u32::from(Ipv4Addr::new(198, 18, 0, 0)) - 10) as usize
}

pub fn origin(i: usize) -> Origin {
    Origin {
        addr: addr(i),
        generation: 1,
    }
}

/// One copy of each value for every simulated node (the daemon keeps its
/// own; here 2,384 copies of the table would not fit).
#[derive(Default)]
pub struct Interner(HashSet<Value>);

impl Values for Interner {
    fn value(&mut self, bytes: Vec<u8>) -> Value {
        if let Some(v) = self.0.get(bytes.as_slice()) {
            return v.clone();
        }
        let v: Value = Arc::from(bytes);
        self.0.insert(v.clone());
        v
    }
}

enum Ev {
    Timer(usize, Timer<Origin>),
    Tick(usize),
    Swim {
        to: usize,
        data: Vec<u8>,
    },
    Table {
        to: usize,
        from: Ipv4Addr,
        data: Vec<u8>,
    },
}

struct Item {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Item {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Item {
    // Reversed: BinaryHeap pops the earliest.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

pub struct Node {
    pub roster: Roster,
    pub db: NetDb,
    pub alive: bool,
    /// Networks (indexes into the specs) this node is on.
    pub nets: Vec<usize>,
    /// (roster changes, cluster table changes) when the networks' members
    /// were last read from the records.
    read_at: (u64, u64),
}

pub struct Sim {
    /// Simulated time, µs.
    pub now: u64,
    seq: u64,
    heap: BinaryHeap<Item>,
    pub nodes: Vec<Node>,
    pub specs: Vec<NetSpec>,
    values: Interner,
    rng: SmallRng,
    interval_us: u64,
    /// Bytes and datagrams sent per node, per layer.
    pub bytes: Vec<[u64; 2]>,
    pub datagrams: Vec<[u64; 2]>,
    /// (observer, member, when µs) for every member declared down.
    pub downs: Vec<(usize, usize, u64)>,
    pub decode_errors: u64,
}

fn datagrams(len: usize) -> usize {
    len.div_ceil(MAX_FRAGMENT_PLAINTEXT).max(1)
}

impl Sim {
    pub fn new(specs: Vec<NetSpec>, n: usize, interval: Duration, seed: u64) -> Sim {
        let mut on: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (s, spec) in specs.iter().enumerate() {
            for &i in &spec.nodes {
                on[i].push(s);
            }
        }
        let mut nodes: Vec<Node> = on
            .into_iter()
            .enumerate()
            .map(|(i, nets)| {
                let mut db =
                    NetDb::new(origin(i), netdb::Config::default(), seed ^ (i as u64) << 2);
                for &s in &nets {
                    db.join(specs[s].vni);
                }
                let record = NodeRecord {
                    name: format!("node-{i:04}"),
                    vtep: Some(addr(i)),
                    nets: nets.iter().map(|&s| (specs[s].vni, 1)).collect(),
                    ..NodeRecord::default()
                };
                let roster = Roster::new(origin(i), record, &mut db, 0, seed ^ (i as u64) << 1);
                Node {
                    roster,
                    db,
                    alive: true,
                    nets,
                    read_at: (u64::MAX, u64::MAX),
                }
            })
            .collect();
        // Every node's record, as a cluster up a while holds them all
        // (through the real merge: one delta per node).
        let recs: Vec<(Origin, WireRec)> = nodes
            .iter_mut()
            .enumerate()
            .map(|(i, node)| {
                let o = origin(i);
                let r = node
                    .db
                    .view(CLUSTER, &o)
                    .and_then(|v| v.get(&Key::Node))
                    .expect("its own record");
                (o, WireRec::from_rec(r))
            })
            .collect();
        let mut sim = Sim {
            now: 0,
            seq: 0,
            heap: BinaryHeap::new(),
            nodes,
            specs,
            values: Interner::default(),
            rng: SmallRng::seed_from_u64(seed),
            interval_us: interval.as_micros() as u64,
            bytes: vec![[0; 2]; n],
            datagrams: vec![[0; 2]; n],
            downs: Vec::new(),
            decode_errors: 0,
        };
        // Membership as a cluster that has been up a while: every node
        // knows every other alive and holds its record (cold membership
        // is not what is measured here; the tables are).
        for i in 0..n {
            let mut io = Io::default();
            let node = &mut sim.nodes[i];
            node.roster.assume_alive((0..n).map(origin), 0, &mut io);
            node.roster.round(&mut node.db, 0, &mut io);
            let origins = recs
                .iter()
                .filter(|(o, _)| o.addr != addr(i))
                .map(|(o, r)| OriginDelta {
                    origin: *o,
                    reset: false,
                    gc_floor: 0,
                    upto: r.version,
                    recs: vec![r.clone()],
                })
                .collect();
            let from = addr((i + 1) % n);
            let mut out = Vec::new();
            let msg = Msg::Delta {
                vni: CLUSTER,
                origins,
            };
            node.db.handle(from, msg, &mut sim.values, &mut out);
            sim.drain(i, io);
            let first = sim.rng.random_range(0..sim.interval_us);
            sim.push(first, Ev::Tick(i));
        }
        sim
    }

    fn push(&mut self, after: u64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Item {
            at: self.now + after,
            seq: self.seq,
            ev,
        });
    }

    fn latency(&mut self) -> u64 {
        self.rng.random_range(500..1500)
    }

    fn drain(&mut self, i: usize, io: Io) {
        for (to, data) in io.send {
            self.bytes[i][MEMBERSHIP] += (data.len() + OVERHEAD) as u64;
            self.datagrams[i][MEMBERSHIP] += 1;
            let l = self.latency();
            self.push(
                l,
                Ev::Swim {
                    to: index(to),
                    data,
                },
            );
        }
        for (t, after) in io.timers {
            self.push(after.as_micros() as u64, Ev::Timer(i, t));
        }
        for (m, liveness) in self.nodes[i].roster.take_events() {
            if liveness == Liveness::Down {
                self.downs.push((i, index(m.addr), self.now));
            }
        }
    }

    /// The networks' members, read from the node records whenever
    /// membership or the cluster table moved. The daemon keeps a member
    /// declared down a moment (`Gossip::peers` decides); here it leaves
    /// every network's table at once, which is what is measured.
    fn read_members(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let now = (
            node.roster.changes,
            node.db.table_changes(CLUSTER).unwrap_or(0),
        );
        if now == node.read_at {
            return;
        }
        node.read_at = now;
        let mut nets = node.roster.networks(&node.db);
        for &s in &node.nets {
            let vni = self.specs[s].vni;
            let (members, live) = nets.remove(&vni).unwrap_or_default();
            let alive: HashSet<Ipv4Addr> = live.iter().copied().collect();
            node.db
                .set_members(vni, members.into_iter().filter(|o| alive.contains(&o.addr)));
        }
    }

    fn send_tables(&mut self, i: usize, out: Vec<Outgoing>) {
        let from = addr(i);
        for o in out {
            let data = o.msg.encode();
            // The cluster table is membership's.
            let layer = if o.msg.vni() == CLUSTER {
                MEMBERSHIP
            } else {
                TABLES
            };
            self.bytes[i][layer] += (data.len() + OVERHEAD * datagrams(data.len())) as u64;
            self.datagrams[i][layer] += datagrams(data.len()) as u64;
            let l = self.latency();
            self.push(
                l,
                Ev::Table {
                    to: index(o.to),
                    from,
                    data,
                },
            );
        }
    }

    /// Runs until simulated time `until` (µs).
    pub fn run_to(&mut self, until: u64) {
        while let Some(top) = self.heap.peek() {
            if top.at > until {
                break;
            }
            let item = self.heap.pop().expect("peeked");
            self.now = item.at;
            match item.ev {
                Ev::Timer(i, t) => {
                    if !self.nodes[i].alive {
                        continue;
                    }
                    let mut io = Io::default();
                    let now_ms = self.now / 1000;
                    let node = &mut self.nodes[i];
                    node.roster.handle_timer(t, &mut node.db, now_ms, &mut io);
                    self.drain(i, io);
                }
                Ev::Tick(i) => {
                    if !self.nodes[i].alive {
                        continue;
                    }
                    let now_ms = self.now / 1000;
                    let node = &mut self.nodes[i];
                    let mut io = Io::default();
                    node.roster.round(&mut node.db, now_ms, &mut io);
                    self.drain(i, io);
                    self.read_members(i);
                    let mut out = Vec::new();
                    self.nodes[i].db.tick(&mut out);
                    self.nodes[i].db.collect(now_ms);
                    self.send_tables(i, out);
                    let iv = self.interval_us;
                    self.push(iv, Ev::Tick(i));
                }
                Ev::Swim { to, data } => {
                    if !self.nodes[to].alive {
                        continue;
                    }
                    let mut io = Io::default();
                    let now_ms = self.now / 1000;
                    let node = &mut self.nodes[to];
                    if node
                        .roster
                        .handle_data(&data, &mut node.db, now_ms, &mut io)
                        .is_err()
                    {
                        self.decode_errors += 1;
                    }
                    self.drain(to, io);
                }
                Ev::Table { to, from, data } => {
                    if !self.nodes[to].alive {
                        continue;
                    }
                    let Ok(msg) = Msg::decode(&data) else {
                        self.decode_errors += 1;
                        continue;
                    };
                    let mut out = Vec::new();
                    self.nodes[to]
                        .db
                        .handle(from, msg, &mut self.values, &mut out);
                    self.send_tables(to, out);
                }
            }
        }
        self.now = until;
    }

    pub fn interval_us(&self) -> u64 {
        self.interval_us
    }

    /// Sets one of node `i`'s records, as its daemon would.
    pub fn set(&mut self, i: usize, vni: u32, key: netdb::Key, value: Vec<u8>) -> Option<u64> {
        let v = self.values.value(value);
        let now_ms = self.now / 1000;
        self.nodes[i].db.set(vni, key, Some(v), now_ms)
    }

    /// Node `i` says goodbye, as `Gossip::leave` does: its record says
    /// `leaving` (the tables drop it at once), and SWIM hears it left.
    pub fn goodbye(&mut self, i: usize) {
        let now_ms = self.now / 1000;
        let mut io = Io::default();
        let node = &mut self.nodes[i];
        node.roster
            .update(&mut node.db, now_ms, |r| r.leaving = true);
        node.roster.leave(&mut io);
        self.drain(i, io);
    }

    /// Node `i` restarts: a new process (the next generation) that knows
    /// nobody, holds only its own records (republished on the same
    /// networks) and announces itself to node `seed`, as a daemon started
    /// with `--join` does.
    pub fn restart(&mut self, i: usize, seed: usize, seed_rng: u64) -> Origin {
        let now_ms = self.now / 1000;
        let old = &self.nodes[i];
        let me = Origin {
            addr: addr(i),
            generation: old.roster.me().generation + 1,
        };
        let mine: Vec<(u32, Vec<(Key, Value)>)> = old
            .nets
            .iter()
            .map(|&s| {
                let vni = self.specs[s].vni;
                let own = old.db.me_on(vni).expect("on its networks");
                let recs = old
                    .db
                    .view(vni, &own)
                    .map(|v| {
                        v.live()
                            .filter_map(|r| Some((r.key, r.value.clone()?)))
                            .collect()
                    })
                    .unwrap_or_default();
                (vni, recs)
            })
            .collect();
        let mut db = NetDb::new(me, netdb::Config::default(), seed_rng);
        for (vni, recs) in &mine {
            db.join(*vni);
            for (k, v) in recs {
                db.set(*vni, *k, Some(v.clone()), now_ms);
            }
        }
        let mut record = old.roster.record().clone();
        record.nets = mine.iter().map(|(v, _)| (*v, me.generation)).collect();
        let roster = Roster::new(me, record, &mut db, now_ms, seed_rng);
        let nets = old.nets.clone();
        self.nodes[i] = Node {
            roster,
            db,
            alive: true,
            nets,
            read_at: (u64::MAX, u64::MAX),
        };
        let mut io = Io::default();
        self.nodes[i].roster.announce(addr(seed), &mut io);
        self.drain(i, io);
        me
    }

    pub fn rng(&mut self) -> &mut SmallRng {
        &mut self.rng
    }
}

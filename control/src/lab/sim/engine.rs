//! A discrete-event network of simulated nodes, each running the real
//! membership (foca, `gossip::swim`) and the real table gossip
//! (`gossip::netdb`): every message is encoded, counted with the sealed
//! transport's overhead, delivered after a LAN's latency and decoded.
//! Time is simulated, so 2,384 nodes keep 200 ms rounds on two cores.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use foca::{Foca, Member, NoCustomBroadcast, OwnedNotification, PostcardCodec, State, Timer};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::shape::NetSpec;
use crate::gossip::netdb::{self, Msg, NetDb, Origin, Outgoing, Value, Values};
use crate::gossip::seal::{MAX_FRAGMENT_PLAINTEXT, OVERHEAD};
use crate::gossip::swim;

pub type Swim = Foca<Origin, PostcardCodec, SmallRng, NoCustomBroadcast>;

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

#[derive(Default)]
struct Rt {
    out: Vec<(Origin, Vec<u8>)>,
    timers: Vec<(Timer<Origin>, Duration)>,
    notes: Vec<OwnedNotification<Origin>>,
}

impl foca::Runtime<Origin> for Rt {
    fn notify(&mut self, n: foca::Notification<'_, Origin>) {
        self.notes.push(n.to_owned());
    }
    fn send_to(&mut self, to: Origin, data: &[u8]) {
        self.out.push((to, data.to_vec()));
    }
    fn submit_after(&mut self, ev: Timer<Origin>, after: Duration) {
        self.timers.push((ev, after));
    }
}

pub struct Node {
    pub swim: Swim,
    pub db: NetDb,
    pub alive: bool,
    /// Networks (indexes into the specs) this node is on.
    pub nets: Vec<usize>,
    /// Members its SWIM has declared down.
    pub down: HashSet<Origin>,
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
        let mut nodes: Vec<Node> = (0..n)
            .map(|i| Node {
                swim: Foca::new(
                    origin(i),
                    swim::config(n),
                    SmallRng::seed_from_u64(seed ^ (i as u64) << 1),
                    PostcardCodec,
                ),
                db: NetDb::new(origin(i), netdb::Config::default(), seed ^ (i as u64) << 2),
                alive: true,
                nets: Vec::new(),
                down: HashSet::new(),
            })
            .collect();
        for (s, spec) in specs.iter().enumerate() {
            for &i in &spec.nodes {
                nodes[i].nets.push(s);
                nodes[i].db.join(spec.vni);
                nodes[i]
                    .db
                    .set_members(spec.vni, spec.nodes.iter().map(|&j| origin(j)));
            }
        }
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
        // knows every other alive (cold membership is not what is
        // measured here; the tables are).
        for i in 0..n {
            let mut rt = Rt::default();
            let members = (0..n)
                .filter(|&j| j != i)
                .map(|j| Member::new(origin(j), 0, State::Alive));
            sim.nodes[i]
                .swim
                .apply_many(members, false, &mut rt)
                .expect("preloading membership");
            rt.notes.clear();
            sim.drain(i, rt);
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

    fn drain(&mut self, i: usize, rt: Rt) {
        for (to, data) in rt.out {
            self.bytes[i][MEMBERSHIP] += (data.len() + OVERHEAD) as u64;
            self.datagrams[i][MEMBERSHIP] += 1;
            let l = self.latency();
            self.push(
                l,
                Ev::Swim {
                    to: index(to.addr),
                    data,
                },
            );
        }
        for (t, after) in rt.timers {
            self.push(after.as_micros() as u64, Ev::Timer(i, t));
        }
        for note in rt.notes {
            match note {
                OwnedNotification::MemberDown(m) => {
                    self.downs.push((i, index(m.addr), self.now));
                    self.nodes[i].down.insert(m);
                    self.refresh_members(i);
                }
                OwnedNotification::MemberUp(m) if self.nodes[i].down.remove(&m) => {
                    self.refresh_members(i);
                }
                _ => {}
            }
        }
    }

    /// Membership decides whose records count: a member declared down
    /// leaves every network's table at once.
    fn refresh_members(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        for &s in &node.nets {
            let spec = &self.specs[s];
            let members = spec
                .nodes
                .iter()
                .map(|&j| origin(j))
                .filter(|o| !node.down.contains(o));
            node.db.set_members(spec.vni, members);
        }
    }

    fn send_tables(&mut self, i: usize, out: Vec<Outgoing>) {
        let from = addr(i);
        for o in out {
            let data = o.msg.encode();
            self.bytes[i][TABLES] += (data.len() + OVERHEAD * datagrams(data.len())) as u64;
            self.datagrams[i][TABLES] += datagrams(data.len()) as u64;
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
                    let mut rt = Rt::default();
                    // An error is a timer of an identity since renewed.
                    let _ = self.nodes[i].swim.handle_timer(t, &mut rt);
                    self.drain(i, rt);
                }
                Ev::Tick(i) => {
                    if !self.nodes[i].alive {
                        continue;
                    }
                    let mut out = Vec::new();
                    self.nodes[i].db.tick(&mut out);
                    self.nodes[i].db.collect(self.now / 1000);
                    self.send_tables(i, out);
                    let iv = self.interval_us;
                    self.push(iv, Ev::Tick(i));
                }
                Ev::Swim { to, data } => {
                    if !self.nodes[to].alive {
                        continue;
                    }
                    let mut rt = Rt::default();
                    if self.nodes[to].swim.handle_data(&data, &mut rt).is_err() {
                        self.decode_errors += 1;
                    }
                    self.drain(to, rt);
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

    pub fn rng(&mut self) -> &mut SmallRng {
        &mut self.rng
    }
}

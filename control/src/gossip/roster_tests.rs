//! Rosters and their tables on a simulated LAN (1 ms latency, 200 ms
//! rounds): joining through one seed, records spreading, networks' members
//! read from them, a killed node, a goodbye, a restart.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use super::*;
use crate::gossip::netdb::{self, Msg, Plain};

const ROUND_MS: u64 = 200;
const NET: u32 = 4097;

enum Ev {
    Timer(usize, Timer<Origin>),
    Round(usize),
    Swim(usize, Vec<u8>),
    Table(usize, Ipv4Addr, Vec<u8>),
}

struct Node {
    roster: Roster,
    db: NetDb,
    up: bool,
    /// Stalled (not running) until then: its events wait, as a stopped
    /// process's datagrams and timers do.
    stalled_until: u64,
}

struct World {
    now: u64,
    seq: u64,
    q: BTreeMap<(u64, u64), Ev>,
    nodes: Vec<Node>,
}

fn addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, 10 + i as u8)
}

fn index(a: Ipv4Addr) -> usize {
    a.octets()[3] as usize - 10
}

fn node(i: usize, generation: u64, now: u64) -> Node {
    let me = Origin {
        addr: addr(i),
        generation,
    };
    let mut db = NetDb::new(me, netdb::Config::default(), 7 + i as u64);
    let record = NodeRecord {
        name: format!("n{i}"),
        vtep: Some(addr(i)),
        ..NodeRecord::default()
    };
    let roster = Roster::new(me, record, &mut db, now, 11 + generation + i as u64);
    Node {
        roster,
        db,
        up: true,
        stalled_until: 0,
    }
}

impl World {
    /// `n` nodes, each announcing itself to node 0.
    fn new(n: usize) -> World {
        let mut w = World {
            now: 0,
            seq: 0,
            q: BTreeMap::new(),
            nodes: (0..n).map(|i| node(i, 1, 0)).collect(),
        };
        for i in 0..n {
            w.push(1 + i as u64 * 7 % ROUND_MS, Ev::Round(i));
            w.announce(i, 0);
        }
        w
    }

    fn push(&mut self, after: u64, ev: Ev) {
        self.seq += 1;
        self.q.insert((self.now + after, self.seq), ev);
    }

    fn announce(&mut self, i: usize, to: usize) {
        let mut io = Io::default();
        self.nodes[i].roster.announce(addr(to), &mut io);
        self.drain(i, io);
    }

    fn drain(&mut self, i: usize, io: Io) {
        for (to, data) in io.send {
            self.push(1, Ev::Swim(index(to), data));
        }
        for (t, after) in io.timers {
            self.push(after.as_millis() as u64, Ev::Timer(i, t));
        }
    }

    fn send_tables(&mut self, i: usize, out: Vec<netdb::Outgoing>) {
        for o in out {
            self.push(1, Ev::Table(index(o.to), addr(i), o.msg.encode()));
        }
    }

    fn run_for(&mut self, ms: u64) {
        let until = self.now + ms;
        while let Some(e) = self.q.first_entry() {
            if e.key().0 > until {
                break;
            }
            let ((at, _), ev) = e.remove_entry();
            self.now = at;
            let now = self.now;
            let (Ev::Timer(i, _) | Ev::Round(i) | Ev::Swim(i, _) | Ev::Table(i, _, _)) = &ev;
            let until = self.nodes[*i].stalled_until;
            if until > now {
                self.push(until - now, ev);
                continue;
            }
            match ev {
                Ev::Timer(i, t) if self.nodes[i].up => {
                    let mut io = Io::default();
                    let n = &mut self.nodes[i];
                    n.roster.handle_timer(t, &mut n.db, now, &mut io);
                    self.drain(i, io);
                }
                Ev::Swim(i, data) if self.nodes[i].up => {
                    let mut io = Io::default();
                    let n = &mut self.nodes[i];
                    let _ = n.roster.handle_data(&data, &mut n.db, now, &mut io);
                    self.drain(i, io);
                }
                Ev::Table(i, from, data) if self.nodes[i].up => {
                    let mut out = Vec::new();
                    let msg = Msg::decode(&data).expect("decodes");
                    self.nodes[i].db.handle(from, msg, &mut Plain, &mut out);
                    self.send_tables(i, out);
                }
                Ev::Round(i) if self.nodes[i].up => {
                    let mut io = Io::default();
                    let n = &mut self.nodes[i];
                    n.roster.round(&mut n.db, now, &mut io);
                    self.drain(i, io);
                    let n = &mut self.nodes[i];
                    let nets = n.roster.networks(&n.db);
                    let joined: Vec<u32> = n.db.networks().filter(|v| *v != CLUSTER).collect();
                    for vni in joined {
                        let (m, live) = nets.get(&vni).cloned().unwrap_or_default();
                        n.db.set_members(vni, m);
                        n.db.set_live(vni, live);
                    }
                    let mut out = Vec::new();
                    n.db.tick(&mut out);
                    n.db.collect(now);
                    self.send_tables(i, out);
                    self.push(ROUND_MS, Ev::Round(i));
                }
                _ => {}
            }
        }
        self.now = until;
    }

    /// Runs until `f` holds, at most `ms`; how long it took.
    fn until(&mut self, ms: u64, mut f: impl FnMut(&mut World) -> bool) -> Option<u64> {
        let t0 = self.now;
        while self.now - t0 <= ms {
            if f(self) {
                return Some(self.now - t0);
            }
            self.run_for(10);
        }
        None
    }

    /// `n` nodes that found each other, each then on NET with one
    /// endpoint, every record everywhere.
    fn on_net(n: usize) -> World {
        let mut w = World::new(n);
        w.run_for(3_000);
        for i in 0..n {
            w.join_net(i);
        }
        w.run_for(3_000);
        assert!((0..n).all(|i| w.eps(i) == n));
        w
    }

    /// Node `i` joins NET and publishes an endpoint there.
    fn join_net(&mut self, i: usize) {
        let now = self.now;
        let n = &mut self.nodes[i];
        let generation = 100 + i as u64;
        n.db.join_as(NET, generation);
        n.roster.update(&mut n.db, now, |r| {
            r.nets.insert(NET, generation);
        });
        n.db.set(
            NET,
            Key::Ep(Ipv4Addr::new(10, 9, 0, i as u8)),
            Some(Arc::from(&b"ep"[..])),
            now,
        );
    }

    /// The endpoints node `i` holds on NET (its own included).
    fn eps(&self, i: usize) -> usize {
        let db = &self.nodes[i].db;
        let mut origins: Vec<Origin> = (0..self.nodes.len())
            .map(|j| Origin {
                addr: addr(j),
                generation: 100 + j as u64,
            })
            .collect();
        origins.dedup();
        origins
            .iter()
            .filter_map(|o| db.view(NET, o))
            .map(|v| v.live().filter(|r| matches!(r.key, Key::Ep(_))).count())
            .sum()
    }

    fn names(&mut self, i: usize) -> Vec<String> {
        let n = &mut self.nodes[i];
        let alive: Vec<Origin> = n.roster.alive().copied().collect();
        let mut out: Vec<String> = alive
            .iter()
            .filter_map(|o| n.roster.record_of(&n.db, o).map(|r| r.name.clone()))
            .collect();
        out.sort();
        out
    }
}

#[test]
fn members_find_each_other_through_one_seed_and_learn_every_record() {
    let mut w = World::new(12);
    let took = w.until(5_000, |w| (0..12).all(|i| w.names(i).len() == 11));
    eprintln!("every record everywhere after {took:?} ms");
    assert!(took.is_some(), "node 5 knows {:?}", w.names(5));
    let mut want: Vec<String> = (0..12)
        .filter(|&j| j != 3)
        .map(|j| format!("n{j}"))
        .collect();
    want.sort();
    assert_eq!(w.names(3), want);
    assert_eq!(w.nodes[3].roster.bad_records, 0);
}

#[test]
fn a_network_s_members_are_read_from_the_records_and_only_they_hold_its_table() {
    let mut w = World::new(10);
    w.run_for(3_000);
    for i in 0..6 {
        w.join_net(i);
    }
    let took = w.until(3_000, |w| (0..6).all(|i| w.eps(i) == 6));
    assert!(
        took.is_some(),
        "endpoints held: {:?}",
        (0..6).map(|i| w.eps(i)).collect::<Vec<_>>()
    );
    for i in 6..10 {
        assert!(
            !w.nodes[i].db.networks().any(|v| v == NET),
            "n{i} holds NET"
        );
    }
    let n0 = &mut w.nodes[0];
    let nets = n0.roster.networks(&n0.db);
    let (members, live) = &nets[&NET];
    assert_eq!(members.len(), 5);
    assert_eq!(live.len(), 5);
}

#[test]
fn a_killed_node_is_down_everywhere_within_3_s_and_forgotten_later() {
    let mut w = World::on_net(10);
    for i in 0..10 {
        w.nodes[i].roster.forget_after(Duration::from_secs(20));
    }
    w.nodes[4].up = false;
    let victim = w.nodes[4].roster.me();
    let took = w.until(3_000, |w| {
        (0..10)
            .filter(|&i| i != 4)
            .all(|i| w.nodes[i].roster.liveness(&victim) == Some(Liveness::Down))
    });
    eprintln!("n4 down everywhere after {took:?} ms");
    assert!(took.is_some(), "n4 not down everywhere within 3 s");
    // Not gossiped with any more; its records stay until it is forgotten.
    let n0 = &mut w.nodes[0];
    let nets = n0.roster.networks(&n0.db);
    assert!(!nets[&NET].1.contains(&addr(4)));
    assert_eq!(w.eps(0), 10);
    w.run_for(21_000);
    assert_eq!(w.nodes[0].roster.liveness(&victim), None);
    assert_eq!(w.eps(0), 9);
}

#[test]
fn a_goodbye_takes_the_node_off_every_network_at_once() {
    let mut w = World::on_net(8);
    let now = w.now;
    let n = &mut w.nodes[2];
    n.roster.update(&mut n.db, now, |r| r.leaving = true);
    let took = w.until(2_000, |w| {
        (0..8).filter(|&i| i != 2).all(|i| {
            let n = &mut w.nodes[i];
            !n.roster.networks(&n.db)[&NET]
                .0
                .iter()
                .any(|o| o.addr == addr(2))
        })
    });
    assert!(took.is_some(), "n2 still on NET somewhere");
}

#[test]
fn a_restarted_node_is_a_new_member_and_its_previous_process_goes_down() {
    let mut w = World::new(6);
    w.run_for(3_000);
    let old = w.nodes[3].roster.me();
    let now = w.now;
    w.nodes[3] = node(3, 2, now);
    w.announce(3, 0);
    let new = w.nodes[3].roster.me();
    let took = w.until(3_000, |w| {
        (0..6).filter(|&i| i != 3).all(|i| {
            let r = &w.nodes[i].roster;
            r.alive().any(|o| *o == new) && !r.alive().any(|o| *o == old)
        })
    });
    assert!(took.is_some(), "the restart is not known everywhere");
    let n = &mut w.nodes[0];
    assert_eq!(
        n.roster.record_of(&n.db, &new).map(|r| r.name.clone()),
        Some("n3".into())
    );
}

#[test]
fn a_node_that_stalled_and_was_declared_down_keeps_its_peers_and_their_tables() {
    let mut w = World::on_net(8);
    let old = w.nodes[5].roster.me();
    // Not running for 3 s: its peers declare it down meanwhile.
    w.nodes[5].stalled_until = w.now + 3_000;
    let took = w.until(3_000, |w| {
        (0..8)
            .filter(|&i| i != 5)
            .all(|i| w.nodes[i].roster.liveness(&old) == Some(Liveness::Down))
    });
    assert!(took.is_some(), "n5 was not declared down");
    w.run_for(3_000 - took.unwrap_or(0));
    // Back: SWIM renews its identity; its peers' records, and their
    // tables, stay with it throughout (it once dropped the membership
    // table there: every peer vanished until the table was pulled again,
    // and a programming pass meanwhile dropped all their endpoints).
    let (mut fewest, mut fewest_names) = (usize::MAX, usize::MAX);
    let took = w.until(5_000, |w| {
        fewest = fewest.min(w.eps(5));
        fewest_names = fewest_names.min(w.names(5).len());
        let me = w.nodes[5].roster.me();
        me != old
            && (0..8)
                .filter(|&i| i != 5)
                .all(|i| w.nodes[i].roster.alive().any(|o| *o == me))
    });
    assert!(took.is_some(), "n5 is not back everywhere");
    assert_eq!(fewest, 8, "n5 lost endpoints while it came back");
    assert_eq!(fewest_names, 7, "n5 lost members while it came back");
}

#[test]
fn records_that_are_not_records_are_refused() {
    let good = NodeRecord {
        name: "a".into(),
        vtep: Some(Ipv4Addr::new(1, 2, 3, 4)),
        nets: [(4097, 9)].into(),
        ..NodeRecord::default()
    };
    assert_eq!(NodeRecord::decode(&good.encode()), Some(good));
    let bad = NodeRecord {
        nets: [(CLUSTER, 1)].into(),
        ..NodeRecord::default()
    };
    assert_eq!(NodeRecord::decode(&bad.encode()), None);
    assert_eq!(NodeRecord::decode(b"\xff\xff\xff"), None);
    assert_eq!(NodeRecord::decode(&[]), None);
}

//! The table gossip among in-memory nodes: every message really encoded
//! and decoded, delivered at the end of the round it was sent in.

use super::*;

const VNI: u32 = 4097;

fn origin(i: usize) -> Origin {
    Origin {
        addr: Ipv4Addr::new(198, 18, (i / 250) as u8, (i % 250) as u8 + 1),
        generation: 7,
    }
}

fn ep(i: usize, k: usize) -> Key {
    Key::Ep(Ipv4Addr::new(10, 1, i as u8, k as u8 + 2))
}

fn val(s: &str) -> Option<Value> {
    Some(Arc::from(s.as_bytes()))
}

struct Net {
    nodes: Vec<NetDb>,
    /// Drop messages for which this returns true.
    lose: fn(&Msg) -> bool,
    bytes: usize,
}

impl Net {
    fn new(n: usize, cfg: Config) -> Net {
        let nodes = (0..n)
            .map(|i| {
                let mut d = NetDb::new(origin(i), cfg.clone(), i as u64);
                d.join(VNI);
                d.set_members(VNI, (0..n).map(origin));
                d
            })
            .collect();
        Net {
            nodes,
            lose: |_| false,
            bytes: 0,
        }
    }

    fn index(&self, addr: Ipv4Addr) -> usize {
        self.nodes.iter().position(|d| d.me().addr == addr).unwrap()
    }

    /// One round: every node ticks, then messages (and their answers) are
    /// delivered until none is left.
    fn round(&mut self) {
        let mut queue: Vec<(Ipv4Addr, Outgoing)> = Vec::new();
        for d in &mut self.nodes {
            let mut out = Vec::new();
            d.tick(&mut out);
            let from = d.me().addr;
            queue.extend(out.into_iter().map(|o| (from, o)));
        }
        while !queue.is_empty() {
            let mut next = Vec::new();
            for (from, o) in queue.drain(..) {
                if (self.lose)(&o.msg) {
                    continue;
                }
                let bytes = o.msg.encode();
                self.bytes += bytes.len();
                let msg = Msg::decode(&bytes).unwrap();
                let to = self.index(o.to);
                let mut out = Vec::new();
                self.nodes[to].handle(from, msg, &mut Plain, &mut out);
                next.extend(out.into_iter().map(|r| (o.to, r)));
            }
            queue = next;
        }
    }

    fn converged(&self) -> bool {
        let want: Vec<(Origin, u64)> = self
            .nodes
            .iter()
            .map(|d| (d.me(), d.view(VNI, &d.me()).map_or(0, |v| v.watermark)))
            .collect();
        self.nodes.iter().all(|d| {
            want.iter().all(|(o, w)| {
                let v = d.view(VNI, o);
                v.map_or(0, |v| v.watermark) == *w
                    && v.is_none_or(|v| {
                        let src = self.nodes[self.index(o.addr)].view(VNI, o).unwrap();
                        v.live().count() == src.live().count()
                    })
            })
        })
    }

    fn rounds_to_converge(&mut self, max: usize) -> usize {
        for r in 1..=max {
            self.round();
            if self.converged() {
                return r;
            }
        }
        panic!("not converged in {max} rounds");
    }
}

fn seed(net: &mut Net, per_node: usize) {
    for i in 0..net.nodes.len() {
        for k in 0..per_node {
            net.nodes[i].set(VNI, ep(i, k), val(&format!("rec {i} {k}")), 0);
        }
    }
}

#[test]
fn a_cold_network_converges_and_a_change_spreads_by_rumor() {
    let mut net = Net::new(40, Config::default());
    seed(&mut net, 5);
    let r = net.rounds_to_converge(30);
    assert!(r <= 12, "cold convergence took {r} rounds");
    // Quiet, once the last rumors aged out: only the syncs' bucket hashes.
    for _ in 0..30 {
        net.round();
    }
    let before = net.bytes;
    net.round();
    let quiet = net.bytes - before;
    assert!(quiet < 40 * 40, "a quiet round cost {quiet} bytes");
    net.nodes[3].set(VNI, ep(3, 9), val("new"), 1);
    let r = net.rounds_to_converge(20);
    assert!(r <= 8, "one change took {r} rounds");
    assert!(net.nodes.iter().all(|d| d.counters.rumors_new <= 210));
}

#[test]
fn lost_rumors_are_repaired_by_anti_entropy() {
    let mut net = Net::new(25, Config::default());
    net.lose = |m| matches!(m, Msg::Rumors { .. });
    seed(&mut net, 3);
    net.rounds_to_converge(30);
    net.nodes[0].set(VNI, ep(0, 0), None, 1);
    net.rounds_to_converge(30);
    for d in &net.nodes {
        let v = d.view(VNI, &origin(0)).unwrap();
        assert_eq!(
            v.live().count(),
            2,
            "{:?} still has the deleted record",
            d.me()
        );
    }
}

#[test]
fn small_delta_budgets_still_converge_with_correct_watermarks() {
    let cfg = Config {
        delta_budget: 300,
        delta_messages: 1,
        ..Config::default()
    };
    let mut net = Net::new(12, cfg);
    net.lose = |m| matches!(m, Msg::Rumors { .. });
    seed(&mut net, 30);
    net.rounds_to_converge(200);
}

#[test]
fn a_peer_behind_collected_tombstones_gets_the_whole_live_set() {
    let cfg = Config {
        tombstone_ttl_ms: 10,
        ..Config::default()
    };
    let mut net = Net::new(6, cfg);
    net.lose = |m| matches!(m, Msg::Rumors { .. });
    seed(&mut net, 4);
    net.rounds_to_converge(30);
    // Node 5 is cut off while node 0 deletes and collects.
    let cut = net.nodes.pop().unwrap();
    for d in &mut net.nodes {
        d.set_members(VNI, (0..5).map(origin));
    }
    net.nodes[0].set(VNI, ep(0, 1), None, 0);
    net.nodes[0].set(VNI, ep(0, 2), val("changed"), 0);
    net.nodes[0].collect(100);
    assert!(net.nodes[0].view(VNI, &origin(0)).unwrap().gc_floor > 0);
    net.nodes.push(cut);
    for d in &mut net.nodes {
        d.set_members(VNI, (0..6).map(origin));
    }
    net.rounds_to_converge(30);
    let v = net.nodes[5].view(VNI, &origin(0)).unwrap();
    assert_eq!(v.live().count(), 3);
    assert!(v.get(&ep(0, 1)).is_none(), "the collected record is gone");
    assert!(net.nodes[5].counters.resets >= 1);
}

#[test]
fn strangers_and_claims_about_oneself_are_refused() {
    let mut net = Net::new(3, Config::default());
    seed(&mut net, 1);
    let stranger = Ipv4Addr::new(198, 19, 9, 9);
    let me = origin(0);
    let d = &mut net.nodes[0];
    let mut out = Vec::new();
    let forged = |o: Origin| Msg::Rumors {
        vni: VNI,
        updates: vec![Update {
            origin: o,
            rec: WireRec {
                key: ep(0, 0),
                version: 99,
                value: Some(b"forged".to_vec()),
            },
        }],
    };
    d.handle(stranger, forged(origin(1)), &mut Plain, &mut out);
    assert_eq!(d.counters.not_member, 1);
    // Its own rumor passed back is normal; a delta about itself is not.
    d.handle(origin(1).addr, forged(me), &mut Plain, &mut out);
    assert_eq!(d.counters.about_self, 0);
    let about_me = Msg::Delta {
        vni: VNI,
        origins: vec![OriginDelta {
            origin: me,
            reset: true,
            gc_floor: 0,
            upto: 99,
            recs: vec![],
        }],
    };
    d.handle(origin(1).addr, about_me, &mut Plain, &mut out);
    assert_eq!(d.counters.about_self, 1);
    let old_gen = Origin {
        generation: 6,
        ..origin(2)
    };
    d.handle(origin(1).addr, forged(old_gen), &mut Plain, &mut out);
    assert_eq!(d.counters.unknown_origin, 1);
    d.handle(
        origin(1).addr,
        Msg::Sync {
            vni: 1,
            buckets: vec![0],
        },
        &mut Plain,
        &mut out,
    );
    assert_eq!(d.counters.not_joined, 1);
    for buckets in [vec![], vec![0; 3], vec![0; 128]] {
        d.handle(
            origin(1).addr,
            Msg::Sync { vni: VNI, buckets },
            &mut Plain,
            &mut out,
        );
    }
    d.handle(
        origin(1).addr,
        Msg::Digest {
            vni: VNI,
            reply: false,
            nb: 1,
            buckets: vec![5],
            entries: vec![],
        },
        &mut Plain,
        &mut out,
    );
    assert_eq!(d.counters.bad_buckets, 4);
    assert!(out.is_empty());
    assert_eq!(d.view(VNI, &me).unwrap().get(&ep(0, 0)).unwrap().version, 1);
    // Bytes that are not a message are an error, never a panic.
    for junk in [&b""[..], &[0xff; 40][..], &[2, 0xc1, 0x20, 9][..]] {
        assert!(Msg::decode(junk).is_err());
    }
    assert!(matches!(
        Msg::decode(&vec![0u8; MAX_MESSAGE + 1]),
        Err(WireError::TooLarge(_))
    ));
}

#[test]
fn leaving_membership_drops_the_origin_s_records() {
    let mut net = Net::new(5, Config::default());
    seed(&mut net, 2);
    net.rounds_to_converge(20);
    let d = &mut net.nodes[0];
    d.set_members(VNI, [1, 2, 3].map(origin));
    assert!(d.view(VNI, &origin(4)).is_none());
    assert_eq!(d.views(VNI).count(), 4);
    assert!(d.heap_bytes() > 0);
}

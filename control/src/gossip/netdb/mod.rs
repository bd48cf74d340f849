//! Per-network table gossip built for Swarm2000's size (2,384 nodes, 96,287
//! endpoints): each network's records travel only among the nodes on it,
//! as in Docker's NetworkDB, and a quiet network costs almost nothing.
//!
//! Two mechanisms, both per network:
//! - **rumors**: a change is pushed to `fanout` random members each round
//!   and passed on by every member that had not seen it, each copy a
//!   limited number of times (memberlist's transmit limit), so it reaches
//!   every member in O(log n) rounds, and costs only its own bytes;
//! - **anti-entropy**: each round, one random member is sent hashes of
//!   (origin, watermark) over buckets of origins; equal hashes end it
//!   (about 0.5 KB at 2,384 members), and unequal buckets exchange their
//!   watermarks and then only the records above them (scuttlebutt's
//!   deltas). It repairs lost rumors, brings a joining node the table,
//!   and a node out of date for long the whole live set.
//!
//! chitchat, which this replaces at scale, sends every member's digest
//! every round: about 190 bytes/s per member per node, 450 KB/s at 2,384
//! members (docs/gossip.md). No crate does scoped, bucketed anti-entropy
//! with rumor push, hence this module; membership and failure detection
//! are SWIM, from the foca crate (`swim.rs`).
//!
//! Sans-IO: the caller feeds messages and ticks, and sends what comes out,
//! so the daemon and `shoal lab sim` drive the very same code.

mod origin;
mod wire;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::Ipv4Addr;
use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use xxhash_rust::xxh3::xxh3_64;

pub use origin::{Key, Origin, OriginView, Rec, Value, WireRec};
#[cfg(test)]
use wire::WireError;
pub use wire::{Msg, OriginDelta, Update, MAX_MESSAGE};

#[derive(Clone, Debug)]
pub struct Config {
    /// Members each round's rumors go to.
    pub fanout: usize,
    /// A rumor is sent at most `rumor_mult * log10(members + 1)` times by
    /// each node (memberlist's retransmit multiplier).
    pub rumor_mult: f64,
    /// Rumors queued per network; beyond it the most-sent are dropped and
    /// anti-entropy carries the rest (a cold start is thousands at once).
    pub max_rumors: usize,
    /// Bytes of rumors per datagram.
    pub packet_budget: usize,
    /// Bytes of records per delta message, and messages per exchange.
    pub delta_budget: usize,
    pub delta_messages: usize,
    /// How long this node keeps its own tombstones before collecting them.
    pub tombstone_ttl_ms: u64,
    /// A network whose table has not changed for this many rounds is
    /// quiet: it syncs every `quiet_sync_every` rounds, not every round
    /// (rumors carry changes; anti-entropy is the repair, and a change
    /// makes every node that learns it busy again).
    pub quiet_after: u32,
    pub quiet_sync_every: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            fanout: 3,
            rumor_mult: 4.0,
            max_rumors: 4096,
            packet_budget: 1200,
            delta_budget: 240_000,
            delta_messages: 4,
            tombstone_ttl_ms: 60_000,
            quiet_after: 50,
            quiet_sync_every: 5,
        }
    }
}

/// A message for the node at `to`.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub to: Ipv4Addr,
    pub msg: Msg,
}

/// Turns received bytes into a stored value. The daemon copies them; the
/// simulation shares one copy among all its nodes, which is what lets
/// 2,384 tables of 96,287 records fit one machine.
pub trait Values {
    fn value(&mut self, bytes: Vec<u8>) -> Value;
}

pub struct Plain;

impl Values for Plain {
    fn value(&mut self, bytes: Vec<u8>) -> Value {
        Arc::from(bytes)
    }
}

/// What was refused or dropped, for `debug gossip` and the tests.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Counters {
    pub not_joined: u64,
    pub not_member: u64,
    /// Deltas about this node's own origin sent by someone else (a rumor
    /// of its own passed back is normal, not counted here).
    pub about_self: u64,
    /// Records of an origin that is not on the network (or not any more).
    pub unknown_origin: u64,
    pub bad_buckets: u64,
    pub rumors_new: u64,
    pub rumors_old: u64,
    pub rumors_dropped: u64,
    pub delta_records: u64,
    pub resets: u64,
    /// Origins whose whole live set exceeds one message (never sent).
    pub too_large: u64,
}

#[derive(Clone, Debug)]
struct Rumor {
    origin: Origin,
    rec: Rec,
    sent: u32,
    /// Rounds queued: a rumor the packet budget kept back this long (a
    /// cold start queues thousands) is left to anti-entropy.
    age: u32,
}

#[derive(Debug, Default)]
struct Table {
    /// This node on the network: its generation is the network's own, new
    /// at every join, so a node that leaves and comes back starts its
    /// versions afresh and nobody takes them for the old ones.
    me: Origin,
    /// The other nodes on the network, as membership lists them: whose
    /// records count.
    members: Vec<Origin>,
    /// Those of them to gossip with (None: all). The daemon keeps a
    /// convicted node's records a moment (`Gossip::peers`) but sends it
    /// nothing.
    live: Option<HashSet<Ipv4Addr>>,
    views: HashMap<Origin, OriginView>,
    rumors: Vec<Rumor>,
    /// This node's deletions, oldest first: (version, when, ms).
    deaths: VecDeque<(u64, u64)>,
    /// Rounds since the table last changed here.
    quiet: u32,
    /// Changes to what this table holds, ever.
    changed: u64,
    /// Takes records of any origin a member sends, not only of members
    /// (the cluster table: a joining node learns the members from it);
    /// origins leave only when the caller forgets them.
    open: bool,
}

pub struct NetDb {
    me: Origin,
    cfg: Config,
    nets: BTreeMap<u32, Table>,
    rng: SmallRng,
    pub counters: Counters,
    /// Moves whenever a record held here changes (set, learned, dropped):
    /// the daemon reprograms when it does.
    pub changes: u64,
    /// Ticks so far.
    round: u64,
}

/// Buckets for a network of `n` nodes: one per 32, a power of two, at most
/// 64 (512 bytes of hashes per round however large the network).
pub fn bucket_count(n: usize) -> usize {
    n.div_ceil(32).next_power_of_two().min(64)
}

fn origin_hash(o: &Origin) -> u64 {
    let mut b = [0u8; 12];
    b[..4].copy_from_slice(&o.addr.octets());
    b[4..].copy_from_slice(&o.generation.to_le_bytes());
    xxh3_64(&b)
}

fn entry_hash(o: &Origin, watermark: u64) -> u64 {
    let mut b = [0u8; 20];
    b[..4].copy_from_slice(&o.addr.octets());
    b[4..12].copy_from_slice(&o.generation.to_le_bytes());
    b[12..].copy_from_slice(&watermark.to_le_bytes());
    xxh3_64(&b)
}

impl Table {
    /// What it holds changed: busy again (not quiet), and counted.
    fn touched(&mut self) {
        self.quiet = 0;
        self.changed += 1;
    }

    fn is_member(&self, o: &Origin) -> bool {
        self.members.binary_search(o).is_ok()
    }

    /// Whether records of `o` may be taken: not this node's own (a rumor
    /// of its own passed back is normal, `own_is_normal`; anything else
    /// about itself is refused) and of an origin on the network.
    fn admits(&self, o: &Origin, own_is_normal: bool, c: &mut Counters) -> bool {
        if o.addr == self.me.addr {
            match own_is_normal {
                true => c.rumors_old += 1,
                false => c.about_self += 1,
            }
            return false;
        }
        if !self.open && !self.is_member(o) {
            c.unknown_origin += 1;
            return false;
        }
        true
    }

    /// Entries a peer's digest may list: one per member and itself, or,
    /// in an open table, whatever fits a message.
    fn entries_cap(&self) -> usize {
        match self.open {
            false => self.members.len() + 1,
            true => MAX_MESSAGE / 16,
        }
    }

    fn targets(&self) -> Vec<Origin> {
        match &self.live {
            None => self.members.clone(),
            Some(l) => self
                .members
                .iter()
                .filter(|m| l.contains(&m.addr))
                .copied()
                .collect(),
        }
    }

    fn watermark(&self, o: &Origin) -> u64 {
        self.views.get(o).map_or(0, |v| v.watermark)
    }

    fn origins(&self) -> Box<dyn Iterator<Item = &Origin> + '_> {
        let listed = std::iter::once(&self.me).chain(self.members.iter());
        match self.open {
            false => Box::new(listed),
            // Members and whoever else has records here.
            true => Box::new(
                listed.chain(
                    self.views
                        .keys()
                        .filter(|o| **o != self.me && !self.is_member(o)),
                ),
            ),
        }
    }

    fn buckets(&self, nb: usize) -> Vec<u64> {
        let mut b = vec![0u64; nb];
        for o in self.origins() {
            let i = (origin_hash(o) % nb as u64) as usize;
            b[i] = b[i].wrapping_add(entry_hash(o, self.watermark(o)));
        }
        b
    }
}

fn valid_nb(nb: usize) -> bool {
    (1..=64).contains(&nb) && nb.is_power_of_two()
}

impl NetDb {
    pub fn new(me: Origin, cfg: Config, seed: u64) -> Self {
        NetDb {
            me,
            cfg,
            nets: BTreeMap::new(),
            rng: SmallRng::seed_from_u64(seed),
            counters: Counters::default(),
            changes: 0,
            round: 0,
        }
    }

    #[cfg(test)]
    pub fn me(&self) -> Origin {
        self.me
    }

    pub fn networks(&self) -> impl Iterator<Item = u32> + '_ {
        self.nets.keys().copied()
    }

    /// Joins `vni` as this node's default origin (the simulation's way).
    pub fn join(&mut self, vni: u32) {
        self.join_as(vni, self.me.generation);
    }

    /// Joins `vni` under `generation` (the daemon's: new at every join).
    /// Already on it: nothing changes.
    pub fn join_as(&mut self, vni: u32, generation: u64) {
        let me = Origin {
            addr: self.me.addr,
            generation,
        };
        let t = self.nets.entry(vni).or_insert_with(|| Table {
            me,
            ..Table::default()
        });
        let me = t.me;
        t.views.entry(me).or_default();
    }

    /// Joins `vni` again under `generation`, keeping the other origins'
    /// records: this node's own start afresh (the membership table after
    /// SWIM renewed this node's identity; dropping the whole table there
    /// dropped every peer with it, and every network's table with them).
    pub fn rejoin_as(&mut self, vni: u32, generation: u64) {
        let Some(t) = self.nets.get_mut(&vni) else {
            return self.join_as(vni, generation);
        };
        let old = t.me;
        if old.generation == generation {
            return;
        }
        t.me = Origin {
            addr: old.addr,
            generation,
        };
        t.views.remove(&old);
        t.rumors.retain(|r| r.origin != old);
        t.deaths.clear();
        t.views.entry(t.me).or_default();
        self.changes += 1;
        t.touched();
    }

    /// Moves whenever what `vni`'s table holds changes (None: not on it).
    pub fn table_changes(&self, vni: u32) -> Option<u64> {
        self.nets.get(&vni).map(|t| t.changed)
    }

    /// This node's origin on `vni`.
    pub fn me_on(&self, vni: u32) -> Option<Origin> {
        self.nets.get(&vni).map(|t| t.me)
    }

    pub fn leave(&mut self, vni: u32) {
        if self.nets.remove(&vni).is_some() {
            self.changes += 1;
        }
    }

    /// The other nodes on `vni`, from membership. Records of origins no
    /// longer listed are dropped at once: membership alone decides.
    pub fn set_members(&mut self, vni: u32, members: impl IntoIterator<Item = Origin>) {
        let Some(t) = self.nets.get_mut(&vni) else {
            return;
        };
        let me = t.me;
        let mut m: Vec<Origin> = members.into_iter().filter(|o| o.addr != me.addr).collect();
        m.sort();
        m.dedup();
        t.members = m;
        if t.open {
            return;
        }
        let keep: HashSet<Origin> = t.members.iter().copied().chain([me]).collect();
        let before = t.views.len();
        t.views.retain(|o, _| keep.contains(o));
        if t.views.len() != before {
            self.changes += 1;
            t.touched();
        }
        t.rumors.retain(|r| keep.contains(&r.origin));
    }

    /// Makes `vni`'s table open (see `Table::open`).
    pub fn set_open(&mut self, vni: u32) {
        if let Some(t) = self.nets.get_mut(&vni) {
            t.open = true;
        }
    }

    /// Drops `origin`'s records from `vni`'s table (an open table's way
    /// to let an origin go).
    pub fn forget(&mut self, vni: u32, origin: &Origin) {
        if let Some(t) = self.nets.get_mut(&vni) {
            if t.views.remove(origin).is_some() {
                self.changes += 1;
                t.touched();
            }
            t.rumors.retain(|r| r.origin != *origin);
        }
    }

    /// The origins `vni`'s table holds records of.
    pub fn origins_of(&self, vni: u32) -> impl Iterator<Item = &Origin> {
        self.nets.get(&vni).into_iter().flat_map(|t| t.views.keys())
    }

    /// Of the members of `vni`, those to gossip with.
    pub fn set_live(&mut self, vni: u32, live: impl IntoIterator<Item = Ipv4Addr>) {
        if let Some(t) = self.nets.get_mut(&vni) {
            t.live = Some(live.into_iter().collect());
        }
    }

    pub fn view(&self, vni: u32, origin: &Origin) -> Option<&OriginView> {
        self.nets.get(&vni)?.views.get(origin)
    }

    #[cfg(test)]
    pub fn views(&self, vni: u32) -> impl Iterator<Item = (&Origin, &OriginView)> {
        self.nets.get(&vni).into_iter().flat_map(|t| t.views.iter())
    }

    /// Sets (or, with None, deletes) one of this node's records; the
    /// version of the change, None if there was nothing to delete.
    pub fn set(&mut self, vni: u32, key: Key, value: Option<Value>, now_ms: u64) -> Option<u64> {
        let t = self.nets.get_mut(&vni)?;
        let me = t.me;
        let own = t.views.entry(me).or_default();
        if value.is_none() && own.get(&key).is_none_or(|r| r.value.is_none()) {
            return None;
        }
        let version = own.max_version() + 1;
        let rec = Rec {
            key,
            version,
            value,
        };
        own.apply(rec.clone());
        own.saw(version);
        self.changes += 1;
        t.touched();
        if rec.value.is_none() {
            t.deaths.push_back((version, now_ms));
        }
        t.rumors.push(Rumor {
            origin: me,
            rec,
            sent: 0,
            age: 0,
        });
        Some(version)
    }

    /// Collects this node's tombstones older than the TTL.
    pub fn collect(&mut self, now_ms: u64) {
        let ttl = self.cfg.tombstone_ttl_ms;
        for t in self.nets.values_mut() {
            let me = t.me;
            let mut floor = None;
            while let Some(&(v, at)) = t.deaths.front() {
                if now_ms.saturating_sub(at) < ttl {
                    break;
                }
                floor = Some(v);
                t.deaths.pop_front();
            }
            if let (Some(f), Some(own)) = (floor, t.views.get_mut(&me)) {
                own.raise_gc_floor(f);
            }
        }
    }

    /// One round: rumors to a few members, a sync to one.
    pub fn tick(&mut self, out: &mut Vec<Outgoing>) {
        self.round += 1;
        for (&vni, t) in self.nets.iter_mut() {
            let targets = t.targets();
            if targets.is_empty() {
                continue;
            }
            if t.rumors.len() > self.cfg.max_rumors {
                // A bulk publish (a restart's whole table) queues more than
                // the cap: the most-sent go, anti-entropy carries them.
                t.rumors.sort_by_key(|r| r.sent);
                self.counters.rumors_dropped += (t.rumors.len() - self.cfg.max_rumors) as u64;
                t.rumors.truncate(self.cfg.max_rumors);
            }
            if !t.rumors.is_empty() {
                let limit = (self.cfg.rumor_mult * ((t.members.len() + 2) as f64).log10())
                    .ceil()
                    .max(1.0) as u32;
                let chosen: Vec<Origin> = targets
                    .choose_multiple(&mut self.rng, self.cfg.fanout)
                    .copied()
                    .collect();
                t.rumors.sort_by_key(|r| r.sent);
                let mut budget = self.cfg.packet_budget;
                let mut updates = Vec::new();
                for r in t.rumors.iter_mut() {
                    let w = WireRec::from_rec(&r.rec);
                    if w.wire_len() + 13 > budget && !updates.is_empty() {
                        break;
                    }
                    budget = budget.saturating_sub(w.wire_len() + 13);
                    r.sent += chosen.len() as u32;
                    updates.push(Update {
                        origin: r.origin,
                        rec: w,
                    });
                }
                for r in t.rumors.iter_mut() {
                    r.age += 1;
                }
                t.rumors.retain(|r| r.sent < limit && r.age < 2 * limit);
                for to in &chosen {
                    out.push(Outgoing {
                        to: to.addr,
                        msg: Msg::Rumors {
                            vni,
                            updates: updates.clone(),
                        },
                    });
                }
            }
            t.quiet = t.quiet.saturating_add(1);
            let every = u64::from(self.cfg.quiet_sync_every.max(1));
            if t.quiet > self.cfg.quiet_after
                && !(self.round + u64::from(vni)).is_multiple_of(every)
            {
                continue;
            }
            let peer = targets[self.rng.random_range(0..targets.len())];
            let nb = bucket_count(t.members.len() + 1);
            out.push(Outgoing {
                to: peer.addr,
                msg: Msg::Sync {
                    vni,
                    buckets: t.buckets(nb),
                },
            });
        }
    }

    /// A message from the node at `from` (already authenticated as the
    /// swarm's by the sealed transport).
    pub fn handle(
        &mut self,
        from: Ipv4Addr,
        msg: Msg,
        values: &mut impl Values,
        out: &mut Vec<Outgoing>,
    ) {
        let vni = msg.vni();
        let listed = |t: &Table| t.members.iter().any(|m| m.addr == from);
        match self.nets.get(&vni) {
            None => {
                self.counters.not_joined += 1;
                return;
            }
            // A node another table lists (the cluster table lists every
            // member): this node's view of the network lags, or the
            // sender's does. Dropped, not refused.
            Some(t) if !listed(t) && self.nets.values().any(listed) => {
                self.counters.not_joined += 1;
                return;
            }
            Some(t) if !listed(t) => {
                self.counters.not_member += 1;
                return;
            }
            Some(_) => {}
        }
        let t = self.nets.get_mut(&vni).expect("just found");
        match msg {
            Msg::Rumors { updates, .. } => {
                for u in updates {
                    // Our own change passed back is normal for rumors.
                    if !t.admits(&u.origin, true, &mut self.counters) {
                        continue;
                    }
                    let rec = into_rec(u.rec, values);
                    let view = t.views.entry(u.origin).or_default();
                    let new = view.apply(rec.clone());
                    view.saw(rec.version);
                    if new {
                        self.changes += 1;
                        t.touched();
                        self.counters.rumors_new += 1;
                        t.rumors.push(Rumor {
                            origin: u.origin,
                            rec,
                            sent: 0,
                            age: 0,
                        });
                    } else {
                        self.counters.rumors_old += 1;
                    }
                }
                let cap = self.cfg.max_rumors;
                if t.rumors.len() > cap {
                    t.rumors.sort_by_key(|r| r.sent);
                    self.counters.rumors_dropped += (t.rumors.len() - cap) as u64;
                    t.rumors.truncate(cap);
                }
            }
            Msg::Sync { buckets, .. } => {
                if !valid_nb(buckets.len()) {
                    self.counters.bad_buckets += 1;
                    return;
                }
                let nb = buckets.len();
                let mine = t.buckets(nb);
                let diff: Vec<u16> = (0..nb)
                    .filter(|&i| mine[i] != buckets[i])
                    .map(|i| i as u16)
                    .collect();
                if diff.is_empty() {
                    return;
                }
                let entries = digest(t, nb, &diff);
                out.push(Outgoing {
                    to: from,
                    msg: Msg::Digest {
                        vni,
                        reply: false,
                        nb: nb as u16,
                        buckets: diff,
                        entries,
                    },
                });
            }
            Msg::Digest {
                reply,
                nb,
                buckets,
                entries,
                ..
            } => {
                let nb = nb as usize;
                if !valid_nb(nb) || buckets.iter().any(|&b| b as usize >= nb) {
                    self.counters.bad_buckets += 1;
                    return;
                }
                let set: HashSet<u16> = buckets.iter().copied().collect();
                let theirs: HashMap<Origin, u64> =
                    entries.into_iter().take(t.entries_cap()).collect();
                let mut wants = Vec::new();
                let mut behind = false;
                for o in t.origins() {
                    if !set.contains(&((origin_hash(o) % nb as u64) as u16)) {
                        continue;
                    }
                    let their = theirs.get(o).copied().unwrap_or(0);
                    let view = t.views.get(o);
                    let mine = view.map_or(0, |v| v.watermark);
                    if view.is_some_and(|v| v.max_version() > their) {
                        wants.push((*o, their));
                    }
                    if their > mine {
                        behind = true;
                    }
                }
                // An open table lacking an origin the peer has is behind
                // too (a joining node learning the cluster table).
                if t.open
                    && theirs
                        .iter()
                        .any(|(o, w)| *w > 0 && o.addr != t.me.addr && !t.views.contains_key(o))
                {
                    behind = true;
                }
                for msg in deltas(t, vni, wants, &self.cfg, &mut self.rng, &mut self.counters) {
                    out.push(Outgoing { to: from, msg });
                }
                if !reply && behind {
                    out.push(Outgoing {
                        to: from,
                        msg: Msg::Digest {
                            vni,
                            reply: true,
                            nb: nb as u16,
                            entries: digest(t, nb, &buckets),
                            buckets,
                        },
                    });
                }
            }
            Msg::Delta { origins, .. } => {
                for d in origins {
                    if !t.admits(&d.origin, false, &mut self.counters) {
                        continue;
                    }
                    self.counters.delta_records += d.recs.len() as u64;
                    let recs: Vec<Rec> = d.recs.into_iter().map(|r| into_rec(r, values)).collect();
                    let view = t.views.entry(d.origin).or_default();
                    if d.reset {
                        self.counters.resets += 1;
                        view.reset(recs, d.upto, d.gc_floor);
                        self.changes += 1;
                        t.touched();
                    } else {
                        view.raise_gc_floor(d.gc_floor);
                        let mut new = false;
                        for r in recs {
                            new |= view.apply(r);
                        }
                        view.complete_to(d.upto);
                        if new {
                            self.changes += 1;
                            t.touched();
                        }
                    }
                }
            }
        }
    }

    /// Heap bytes of the tables, record payloads counted in full.
    pub fn heap_bytes(&self) -> usize {
        self.nets.keys().map(|v| self.heap_bytes_of(*v)).sum()
    }

    /// Heap bytes of `vni`'s table.
    pub fn heap_bytes_of(&self, vni: u32) -> usize {
        self.nets
            .get(&vni)
            .map(|t| {
                t.members.capacity() * std::mem::size_of::<Origin>()
                    + t.views.capacity()
                        * (std::mem::size_of::<Origin>() + std::mem::size_of::<OriginView>() + 1)
                    + t.views.values().map(OriginView::heap_bytes).sum::<usize>()
                    + t.rumors.capacity() * std::mem::size_of::<Rumor>()
            })
            .unwrap_or(0)
    }
}

fn into_rec(r: WireRec, values: &mut impl Values) -> Rec {
    Rec {
        key: r.key,
        version: r.version,
        value: r.value.map(|b| values.value(b)),
    }
}

fn digest(t: &Table, nb: usize, buckets: &[u16]) -> Vec<(Origin, u64)> {
    let set: HashSet<u16> = buckets.iter().copied().collect();
    t.origins()
        .filter(|o| set.contains(&((origin_hash(o) % nb as u64) as u16)))
        .map(|o| (*o, t.watermark(o)))
        .filter(|&(_, w)| w > 0)
        .collect()
}

/// The delta messages for `wants` (origin, the peer's watermark), within
/// the budget. Origins are taken from a random starting point, so peers
/// pulling from one node at once get different parts first.
fn deltas(
    t: &Table,
    vni: u32,
    mut wants: Vec<(Origin, u64)>,
    cfg: &Config,
    rng: &mut SmallRng,
    counters: &mut Counters,
) -> Vec<Msg> {
    wants.shuffle(rng);
    let mut msgs = Vec::new();
    let mut cur: Vec<OriginDelta> = Vec::new();
    let mut room = cfg.delta_budget;
    for (o, since) in wants {
        let Some(view) = t.views.get(&o) else {
            continue;
        };
        let reset = since < view.gc_floor;
        let recs: Vec<&Rec> = if reset {
            view.recs().iter().collect()
        } else {
            view.since(since)
        };
        let size: usize = recs.iter().map(|r| origin::rec_wire_len(r)).sum::<usize>() + 32;
        if size > room && !cur.is_empty() {
            msgs.push(Msg::Delta {
                vni,
                origins: std::mem::take(&mut cur),
            });
            room = cfg.delta_budget;
            if msgs.len() >= cfg.delta_messages {
                return msgs;
            }
        }
        let (recs, upto) = if size <= room || reset {
            // A reset is the whole live set or nothing: sent whole, up to
            // the largest message (an origin with thousands of records).
            if reset && size > MAX_MESSAGE - 64 {
                counters.too_large += 1;
                continue;
            }
            (recs, view.watermark)
        } else if recs.is_empty() {
            (recs, view.watermark)
        } else {
            // Oldest changes first: a prefix is complete up to its last
            // version, so the peer's watermark can move that far.
            let mut used = 32;
            let mut n = 0;
            for r in &recs {
                used += origin::rec_wire_len(r);
                if used > room && n > 0 {
                    break;
                }
                n += 1;
            }
            let last = recs[n - 1].version;
            (recs[..n].to_vec(), last.min(view.watermark))
        };
        room = room.saturating_sub(size);
        cur.push(OriginDelta {
            origin: o,
            reset,
            gc_floor: view.gc_floor,
            upto,
            recs: recs.into_iter().map(WireRec::from_rec).collect(),
        });
        if room == 0 {
            msgs.push(Msg::Delta {
                vni,
                origins: std::mem::take(&mut cur),
            });
            room = cfg.delta_budget;
            if msgs.len() >= cfg.delta_messages {
                return msgs;
            }
        }
    }
    if !cur.is_empty() {
        msgs.push(Msg::Delta { vni, origins: cur });
    }
    msgs
}

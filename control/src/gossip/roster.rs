//! Who is in the swarm, at Swarm2000's size: SWIM membership and failure
//! detection (foca, settings in `swim.rs`) for liveness, and each member's
//! node record (name, VTEP, the networks it is on, leaving or restarting)
//! in a cluster-wide table that `netdb` gossips like a network's
//! (`CLUSTER`). A joining node pulls every record by anti-entropy; a change
//! to one (a network joined) is one rumor; a quiet cluster costs a probe
//! and a bucket sync per round, not a digest of every member.
//!
//! The per-network tables' membership is read from here: a node's records
//! on a network count while the roster knows the node and its record lists
//! the network (`Roster::networks`).
//!
//! Sans-IO like `netdb`: the caller feeds datagrams, timers and rounds, and
//! sends what comes out (`Io`), so the daemon and `shoal lab sim` drive
//! the same code.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use foca::{Foca, NoCustomBroadcast, Notification, PostcardCodec, Timer};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::netdb::{Key, NetDb, Origin};
use super::swim;

/// The cluster table's id among the tables: beyond VXLAN's 24-bit VNIs, so
/// it is no network's.
pub const CLUSTER: u32 = 1 << 24;

/// What a member says of itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Its node name (`node ls`).
    pub name: String,
    /// Where its VXLAN tunnels end.
    pub vtep: Option<Ipv4Addr>,
    /// Said goodbye: dropped everywhere at once.
    pub leaving: bool,
    /// Said "back soon" (a daemon restart): kept longer when silent.
    pub restarting: bool,
    /// The networks it is on: VNI -> its table generation there.
    pub nets: BTreeMap<u32, u64>,
}

impl NodeRecord {
    pub fn encode(&self) -> Vec<u8> {
        // Plain owned data into a Vec cannot fail.
        postcard::to_allocvec(self).expect("postcard into a Vec")
    }

    /// None for bytes that are no record (counted by the caller).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let r: NodeRecord = postcard::from_bytes(bytes).ok()?;
        let sane = r.name.len() <= 255 && r.nets.keys().all(|v| (1..=0xff_ffff).contains(v));
        sane.then_some(r)
    }
}

/// What the failure detector last said of a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Liveness {
    Alive,
    /// Declared down, or replaced by a newer process on its address.
    Down,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Known {
    pub liveness: Liveness,
    /// When (ms, the caller's clock) it last changed.
    pub since_ms: u64,
}

pub type Swim = Foca<Origin, PostcardCodec, SmallRng, NoCustomBroadcast>;

/// What foca asked for during one call: datagrams to send, timers to set.
#[derive(Default)]
pub struct Io {
    pub send: Vec<(Ipv4Addr, Vec<u8>)>,
    pub timers: Vec<(Timer<Origin>, Duration)>,
    notes: Vec<foca::OwnedNotification<Origin>>,
}

impl foca::Runtime<Origin> for Io {
    fn notify(&mut self, n: Notification<'_, Origin>) {
        self.notes.push(n.to_owned());
    }
    fn send_to(&mut self, to: Origin, data: &[u8]) {
        self.send.push((to.addr, data.to_vec()));
    }
    fn submit_after(&mut self, ev: Timer<Origin>, after: Duration) {
        self.timers.push((ev, after));
    }
}

/// Per network: the origins whose records count there (table
/// generation), and the addresses of those alive to gossip with.
pub type NetMembers = BTreeMap<u32, (Vec<Origin>, Vec<Ipv4Addr>)>;

pub struct Roster {
    swim: Swim,
    /// This process in membership and in the cluster table (foca renews
    /// the generation when the cluster declared it down and it rejoins).
    me: Origin,
    record: NodeRecord,
    /// Every member foca has told of, kept `forget_after_ms` after it went
    /// down (a restarted node's previous process, a peer a draining task
    /// still waits for).
    known: BTreeMap<Origin, Known>,
    forget_after_ms: u64,
    /// The cluster size foca's settings were made for.
    sized_for: usize,
    /// Members forgotten, and when (ms): their records, still held
    /// elsewhere a moment, do not bring them back.
    forgotten: BTreeMap<Origin, u64>,
    /// The cluster table's change count when its members were last
    /// learned from it.
    learned_at: Option<u64>,
    /// Moves whenever membership changes.
    pub changes: u64,
    /// Liveness changes since the caller last took them (`take_events`).
    events: Vec<(Origin, Liveness)>,
    /// Records that did not decode.
    pub bad_records: u64,
    /// Decoded records, by (origin, version): a round reads every member's
    /// record, and 2,384 decodes a round add up.
    cache: HashMap<Origin, (u64, Option<Arc<NodeRecord>>)>,
}

impl Roster {
    /// Starts as `me`, with `record` in the cluster table of `db`.
    pub fn new(me: Origin, record: NodeRecord, db: &mut NetDb, now_ms: u64, seed: u64) -> Self {
        let mut r = Roster {
            swim: Foca::new(
                me,
                swim::config(1),
                SmallRng::seed_from_u64(seed),
                PostcardCodec,
            ),
            me,
            record,
            known: BTreeMap::new(),
            forget_after_ms: 60_000,
            sized_for: 1,
            forgotten: BTreeMap::new(),
            learned_at: None,
            changes: 0,
            events: Vec::new(),
            bad_records: 0,
            cache: HashMap::new(),
        };
        r.publish(db, now_ms);
        r
    }

    pub fn me(&self) -> Origin {
        self.me
    }

    pub fn record(&self) -> &NodeRecord {
        &self.record
    }

    /// Forgets down members after this long (default 60 s; tests shorten
    /// it).
    #[cfg(test)]
    pub fn forget_after(&mut self, d: Duration) {
        self.forget_after_ms = d.as_millis() as u64;
    }

    fn publish(&mut self, db: &mut NetDb, now_ms: u64) {
        db.join_as(CLUSTER, self.me.generation);
        db.set_open(CLUSTER);
        let v = self.record.encode();
        db.set(CLUSTER, Key::Node, Some(Arc::from(v)), now_ms);
    }

    /// Changes this node's record (and gossips it) if `f` changes it.
    pub fn update(&mut self, db: &mut NetDb, now_ms: u64, f: impl FnOnce(&mut NodeRecord)) {
        let before = self.record.clone();
        f(&mut self.record);
        if self.record != before {
            self.publish(db, now_ms);
        }
    }

    /// Asks the node at `addr` (whatever its generation) to let this one
    /// in: how a node finds the swarm through a seed or a manager.
    pub fn announce(&mut self, addr: Ipv4Addr, io: &mut Io) {
        if addr == self.me.addr {
            return;
        }
        let to = Origin {
            addr,
            generation: 0,
        };
        // An error is an oversized packet, which an announce never is.
        let _ = self.swim.announce(to, &mut *io);
    }

    /// A membership datagram (already authenticated as the swarm's).
    pub fn handle_data(
        &mut self,
        data: &[u8],
        db: &mut NetDb,
        now_ms: u64,
        io: &mut Io,
    ) -> Result<(), foca::Error> {
        let r = self.swim.handle_data(data, &mut *io);
        self.absorb(db, now_ms, io);
        r
    }

    pub fn handle_timer(&mut self, t: Timer<Origin>, db: &mut NetDb, now_ms: u64, io: &mut Io) {
        // An error is a timer of an identity since renewed: nothing to do.
        let _ = self.swim.handle_timer(t, &mut *io);
        self.absorb(db, now_ms, io);
    }

    /// Says goodbye in membership too (the record's `leaving` says it to
    /// the tables).
    pub fn leave(&mut self, io: &mut Io) {
        let _ = self.swim.leave_cluster(&mut *io);
    }

    /// Acts on what foca noticed.
    fn absorb(&mut self, db: &mut NetDb, now_ms: u64, io: &mut Io) {
        let before = self.changes;
        for n in std::mem::take(&mut io.notes) {
            use foca::OwnedNotification as N;
            match n {
                N::MemberUp(m) => self.mark(m, Liveness::Alive, now_ms),
                N::MemberDown(m) => self.mark(m, Liveness::Down, now_ms),
                N::Rename(old, new) => {
                    self.mark(old, Liveness::Down, now_ms);
                    if foca_active(&self.swim, &new) {
                        self.mark(new, Liveness::Alive, now_ms);
                    }
                }
                // The cluster declared this node down and foca rejoined
                // it under the next generation: its record follows.
                N::Rejoin(id) => {
                    db.rejoin_as(CLUSTER, id.generation);
                    self.me = id;
                    self.cache.clear();
                    self.publish(db, now_ms);
                    self.changes += 1;
                }
                _ => {}
            }
        }
        // At once, not at the next round: a new member's first table
        // messages are on their way.
        if self.changes != before {
            self.list_members(db);
        }
    }

    /// Tells the cluster table who its members are.
    fn list_members(&self, db: &mut NetDb) {
        db.set_members(CLUSTER, self.known.keys().copied());
        db.set_live(CLUSTER, self.alive().map(|o| o.addr));
    }

    fn mark(&mut self, m: Origin, liveness: Liveness, now_ms: u64) {
        if m.addr == self.me.addr {
            return;
        }
        let now = Known {
            liveness,
            since_ms: now_ms,
        };
        match self.known.insert(m, now) {
            // Told again what it knew: keep when that began.
            Some(was) if was.liveness == liveness => {
                self.known.insert(m, was);
            }
            _ => {
                self.changes += 1;
                self.events.push((m, liveness));
            }
        }
    }

    /// Members that came up or went down since the last call.
    pub fn take_events(&mut self) -> Vec<(Origin, Liveness)> {
        std::mem::take(&mut self.events)
    }

    /// A cluster that has been up a while (the simulation's start):
    /// `members` alive, as if announced and gossiped long ago.
    pub fn assume_alive(
        &mut self,
        members: impl IntoIterator<Item = Origin>,
        now_ms: u64,
        io: &mut Io,
    ) {
        let me = self.me.addr;
        let ms: Vec<Origin> = members.into_iter().filter(|o| o.addr != me).collect();
        let alive = ms
            .iter()
            .map(|o| foca::Member::new(*o, 0, foca::State::Alive));
        // An error is an oversized update, which a bare identity is not.
        let _ = self.swim.apply_many(alive, false, &mut *io);
        io.notes.clear();
        for o in ms {
            self.mark(o, Liveness::Alive, now_ms);
        }
        self.events.clear();
    }

    /// Every member known, alive or down a while ago.
    pub fn members(&self) -> impl Iterator<Item = (&Origin, &Known)> {
        self.known.iter()
    }

    pub fn liveness(&self, o: &Origin) -> Option<Liveness> {
        self.known.get(o).map(|k| k.liveness)
    }

    pub fn alive(&self) -> impl Iterator<Item = &Origin> {
        self.known
            .iter()
            .filter(|(_, k)| k.liveness == Liveness::Alive)
            .map(|(o, _)| o)
    }

    /// `o`'s record as the cluster table holds it (None: not yet here, or
    /// not a record).
    pub fn record_of(&mut self, db: &NetDb, o: &Origin) -> Option<Arc<NodeRecord>> {
        let rec = db.view(CLUSTER, o)?.get(&Key::Node)?;
        if let Some((v, r)) = self.cache.get(o) {
            if *v == rec.version {
                return r.clone();
            }
        }
        let r = rec
            .value
            .as_deref()
            .and_then(NodeRecord::decode)
            .map(Arc::new);
        if r.is_none() && rec.value.is_some() {
            self.bad_records += 1;
        }
        self.cache.insert(*o, (rec.version, r.clone()));
        r
    }

    /// Once a round, before `db.tick`: learns members from the cluster
    /// table, forgets members down long enough, resizes foca's settings to
    /// the cluster, and tells the cluster table who its members are.
    ///
    /// SWIM alone tells a joining node only the members its seed's answer
    /// holds (a datagram's worth); the rest would trickle in. The cluster
    /// table brings every member's record by anti-entropy within a few
    /// rounds, and each one learned that way is handed to SWIM, which
    /// probes it from then on (memberlist's push-pull, in effect).
    pub fn round(&mut self, db: &mut NetDb, now_ms: u64, io: &mut Io) {
        let forget = self.forget_after_ms;
        let gone: Vec<Origin> = self
            .known
            .iter()
            .filter(|(_, k)| {
                k.liveness == Liveness::Down && now_ms.saturating_sub(k.since_ms) >= forget
            })
            .map(|(o, _)| *o)
            .collect();
        for o in &gone {
            self.known.remove(o);
            self.cache.remove(o);
            self.forgotten.insert(*o, now_ms);
            db.forget(CLUSTER, o);
        }
        if !gone.is_empty() {
            self.changes += 1;
        }
        // Long enough for every node to have forgotten it too.
        let expired: Vec<Origin> = self
            .forgotten
            .iter()
            .filter(|(_, at)| now_ms.saturating_sub(**at) >= 10 * forget.max(1))
            .map(|(o, _)| *o)
            .collect();
        for o in expired {
            self.forgotten.remove(&o);
            db.forget(CLUSTER, &o);
        }
        self.learn(db, now_ms, io);
        let size = self.known.len() + 1;
        // Retransmissions grow with log10 of the size: refit on a 2x change.
        let refit = size > self.sized_for * 2 || size * 2 < self.sized_for;
        if refit && self.swim.set_config(swim::config(size)).is_ok() {
            self.sized_for = size;
        }
        self.list_members(db);
    }

    /// Hands SWIM the members the cluster table has records of and SWIM
    /// has not told of (whenever the table moved).
    fn learn(&mut self, db: &mut NetDb, now_ms: u64, io: &mut Io) {
        let at = db.table_changes(CLUSTER);
        if at == self.learned_at {
            return;
        }
        self.learned_at = at;
        let me = self.me.addr;
        let new: Vec<Origin> = db
            .origins_of(CLUSTER)
            .filter(|o| {
                o.addr != me && !self.known.contains_key(o) && !self.forgotten.contains_key(o)
            })
            .copied()
            .collect();
        if new.is_empty() {
            return;
        }
        let alive = new
            .iter()
            .map(|o| foca::Member::new(*o, 0, foca::State::Alive));
        // Not re-broadcast: every member has these records already. An
        // error is an oversized update, which a bare identity is not.
        let _ = self.swim.apply_many(alive, false, &mut *io);
        self.absorb(db, now_ms, io);
        // One foca already holds as down, or a previous process of an
        // address it holds a newer one of: not a member. Its record stays
        // (so this table hashes as its peers' do) until it is let go.
        for o in new {
            if !self.known.contains_key(&o) {
                self.forgotten.insert(o, now_ms);
            }
        }
    }

    /// Per network: whose records count (every known member whose record
    /// lists the network and has not said goodbye) and which of them are
    /// alive to gossip with.
    pub fn networks(&mut self, db: &NetDb) -> NetMembers {
        let mut out = NetMembers::new();
        let known: Vec<(Origin, Liveness)> =
            self.known.iter().map(|(o, k)| (*o, k.liveness)).collect();
        for (o, liveness) in known {
            let Some(r) = self.record_of(db, &o) else {
                continue;
            };
            if r.leaving {
                continue;
            }
            for (&vni, &generation) in &r.nets {
                let e = out.entry(vni).or_default();
                e.0.push(Origin {
                    addr: o.addr,
                    generation,
                });
                if liveness == Liveness::Alive {
                    e.1.push(o.addr);
                }
            }
        }
        out
    }

    /// Members foca holds (alive, suspect or down), for `debug gossip`.
    pub fn swim_members(&self) -> usize {
        self.swim.num_members()
    }
}

fn foca_active(s: &Swim, o: &Origin) -> bool {
    s.iter_members().any(|m| m.id() == o)
}

#[cfg(test)]
#[path = "roster_tests.rs"]
mod tests;

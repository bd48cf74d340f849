//! The daemon's gossip task: drives membership (`roster.rs`: SWIM and the
//! cluster table of node records) and the tables of the networks this node
//! is on (`netdb`) over the gossip port.
//!
//! One task owns the rounds: every interval it forgets long-down members,
//! hands each network's table the members the node records list on it,
//! ticks the tables and sends what comes out; membership datagrams, SWIM's
//! timers and table messages are handled as they arrive. The state sits
//! behind a plain mutex, held only for those calls and for the agent's
//! reads and writes (`Gossip::publish`, `peers`...).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use foca::Timer;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::netdb::{Counters, Msg, NetDb, Origin, Outgoing, Plain};
use super::remembered::{self, Remembered};
use super::roster::{Io, Liveness, Roster, CLUSTER};
use super::sealed::Hub;
use super::stall::{self, StallClock};
use super::transport::{WireCounters, MALFORMED_PACKETS};

/// What the task and the agent's calls share.
pub(super) struct Shared {
    pub roster: Roster,
    pub db: NetDb,
    /// When each address last sent an authentic datagram: how long a
    /// member declared down was silent (`Gossip::peers` holds it a while).
    pub heard: HashMap<Ipv4Addr, Instant>,
}

pub(super) struct Rounds {
    pub state: Arc<Mutex<Shared>>,
    /// SWIM's output from the agent's calls (announce, leave), for the
    /// task to send and time.
    io: mpsc::UnboundedSender<Io>,
    task: JoinHandle<()>,
}

impl Drop for Rounds {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the task works with. `port` is the gossip port every node of the
/// swarm uses (7946, as Docker's): peers are addressed by IP.
pub(super) struct Setup {
    pub state: Arc<Mutex<Shared>>,
    pub hub: Arc<Hub>,
    pub port: u16,
    pub interval: Duration,
    pub changes: Arc<watch::Sender<u64>>,
    /// Asked to let this node in while it knows no live member.
    pub seeds: Vec<Ipv4Addr>,
    /// So are some of the members it last knew; kept up to date.
    pub remembered: Remembered,
    pub stall: Arc<Mutex<StallClock>>,
}

impl Rounds {
    /// Starts the task (the messages the hub opens from now on come to it).
    pub fn start(s: Setup) -> Self {
        let state = s.state.clone();
        let (io, io_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(s, io_rx));
        Rounds { state, io, task }
    }

    /// Runs `f` on the roster and sends what SWIM asked for.
    pub fn swim(&self, f: impl FnOnce(&mut Roster, &mut Io)) {
        let mut io = Io::default();
        f(
            &mut self.state.lock().expect("gossip state").roster,
            &mut io,
        );
        let _ = self.io.send(io);
    }

    /// Stops gossiping and drops every table (goodbye, restart).
    pub fn stop(&self) {
        self.task.abort();
        let mut st = self.state.lock().expect("gossip state");
        let vnis: Vec<u32> = st.db.networks().collect();
        for vni in vnis {
            st.db.leave(vni);
        }
    }
}

/// Passes what netdb dropped or refused on to the wire counters that
/// `debug gossip` and `/metrics` show.
fn count(w: &WireCounters, before: &Counters, now: &Counters) {
    w.not_joined
        .fetch_add(now.not_joined - before.not_joined, Relaxed);
    let refused = [
        now.not_member - before.not_member,
        now.about_self - before.about_self,
        now.unknown_origin - before.unknown_origin,
        now.bad_buckets - before.bad_buckets,
    ];
    for (c, n) in w.table_refused.iter().zip(refused) {
        c.fetch_add(n, Relaxed);
    }
}

/// SWIM's timers, soonest first.
#[derive(Default)]
struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    by_seq: HashMap<u64, Timer<Origin>>,
    seq: u64,
}

impl Timers {
    fn add(&mut self, t: Timer<Origin>, after: Duration) {
        self.seq += 1;
        self.heap.push(Reverse((Instant::now() + after, self.seq)));
        self.by_seq.insert(self.seq, t);
    }

    fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    fn due(&mut self, now: Instant) -> Vec<Timer<Origin>> {
        let mut out = vec![];
        while let Some(Reverse((at, seq))) = self.heap.peek().copied() {
            if at > now {
                break;
            }
            self.heap.pop();
            out.extend(self.by_seq.remove(&seq));
        }
        out
    }
}

async fn run(s: Setup, mut io_rx: mpsc::UnboundedReceiver<Io>) {
    let Setup {
        state,
        hub,
        port,
        interval,
        changes,
        seeds,
        mut remembered,
        stall,
    } = s;
    let mut tables_rx = hub.tables();
    let mut swim_rx = hub.membership();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut timers = Timers::default();
    let mut seen = (0u64, 0u64);
    let mut rounds = 0u64;
    loop {
        let mut out = Vec::new();
        let mut io = Io::default();
        let next = timers
            .next()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            m = tables_rx.recv() => {
                let Some((peer, bytes)) = m else { return };
                let std::net::IpAddr::V4(from) = peer.ip() else { continue };
                match Msg::decode(&bytes) {
                    Ok(msg) => {
                        let mut st = state.lock().expect("gossip state");
                        st.heard.insert(from, Instant::now());
                        let before = st.db.counters.clone();
                        st.db.handle(from, msg, &mut Plain, &mut out);
                        count(hub.counters(), &before, &st.db.counters);
                    }
                    Err(e) => {
                        hub.counters().table_refused[4].fetch_add(1, Relaxed);
                        debug!(%peer, "table gossip: {e}");
                    }
                }
            }
            m = swim_rx.recv() => {
                let Some((peer, bytes)) = m else { return };
                let std::net::IpAddr::V4(from) = peer.ip() else { continue };
                let mut st = state.lock().expect("gossip state");
                let Shared { roster, db, heard } = &mut *st;
                heard.insert(from, Instant::now());
                if let Err(e) = roster.handle_data(&bytes, db, crate::clock::now_ms(), &mut io) {
                    MALFORMED_PACKETS.fetch_add(1, Relaxed);
                    debug!(%peer, "membership message refused: {e}");
                }
            }
            more = io_rx.recv() => {
                let Some(more) = more else { return };
                io = more;
            }
            _ = tokio::time::sleep_until(next.into()) => {
                let mut st = state.lock().expect("gossip state");
                let Shared { roster, db, .. } = &mut *st;
                for t in timers.due(Instant::now()) {
                    roster.handle_timer(t, db, crate::clock::now_ms(), &mut io);
                }
            }
            _ = tick.tick() => {
                rounds += 1;
                if let Some(gap) = stall.lock().expect("stall clock").tick(Instant::now()) {
                    warn!(
                        gap_ms = gap.as_millis() as u64,
                        "this node did not run for a while: peers declared down meanwhile keep their entries for {}s",
                        stall::GRACE.as_secs()
                    );
                }
                let now_ms = crate::clock::now_ms();
                let mut st = state.lock().expect("gossip state");
                let Shared { roster, db, .. } = &mut *st;
                // Alone: ask the seeds and some members it last knew
                // again, every second (one may have been down, or this
                // node was cut off).
                if roster.alive().next().is_none() && rounds % 5 == 1 {
                    for s in seeds.iter().chain(&remembered.sample()) {
                        roster.announce(*s, &mut io);
                    }
                }
                roster.round(db, now_ms, &mut io);
                let live = || roster.alive().map(|o| o.addr).collect();
                if let Some((path, bytes)) = remembered.due(roster.changes, live, Instant::now()) {
                    tokio::task::spawn_blocking(move || remembered::write(&path, &bytes));
                }
                let mut nets = roster.networks(db);
                let vnis: Vec<u32> = db.networks().filter(|v| *v != CLUSTER).collect();
                for vni in vnis {
                    let (m, live) = nets.remove(&vni).unwrap_or_default();
                    db.set_members(vni, m);
                    db.set_live(vni, live);
                }
                db.tick(&mut out);
                db.collect(now_ms);
            }
        }
        let now = {
            let mut st = state.lock().expect("gossip state");
            for (m, l) in st.roster.take_events() {
                match l {
                    // A joining node learns thousands at once: not each at info.
                    Liveness::Alive => {
                        debug!(member = %m.addr, generation = m.generation, "gossip member up")
                    }
                    Liveness::Down => {
                        info!(member = %m.addr, generation = m.generation, "gossip member down")
                    }
                }
            }
            (st.db.changes, st.roster.changes)
        };
        if now != seen {
            seen = now;
            changes.send_modify(|n| *n += 1);
        }
        for (t, after) in std::mem::take(&mut io.timers) {
            timers.add(t, after);
        }
        for (to, data) in io.send {
            let to = SocketAddr::from((to, port));
            if let Err(e) = hub.send_membership(to, &data).await {
                debug!(%to, "membership send: {e:#}");
            }
        }
        send(&hub, port, out).await;
    }
}

async fn send(hub: &Hub, port: u16, out: Vec<Outgoing>) {
    for o in out {
        let to = SocketAddr::from((o.to, port));
        if let Err(e) = hub.send_table(to, &o.msg.encode()).await {
            debug!(%to, "table gossip send: {e:#}");
        }
    }
}

//! The daemon's per-network tables: `netdb` driven over the gossip port.
//!
//! One task owns the rounds: every interval it hands `netdb` the nodes
//! membership lists on each network (whose records count, and which of
//! them are live to gossip with), ticks it and sends what comes out; every
//! table message the hub opens is handled as it arrives. The state sits
//! behind a plain mutex, held only for those calls and for the agent's
//! reads and writes (`Gossip::publish`, `peers`...).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::debug;

use super::netdb::{Counters, Msg, NetDb, Origin, Outgoing, Plain};
use super::sealed::Hub;
use super::transport::WireCounters;

/// Per network: the origins whose records count, and the live ones.
pub(super) type Membership = BTreeMap<u32, (Vec<Origin>, Vec<Ipv4Addr>)>;

pub(super) struct Tables {
    pub db: Arc<Mutex<NetDb>>,
    task: JoinHandle<()>,
}

impl Drop for Tables {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Tables {
    /// Starts the rounds (the table messages the hub opens from now on
    /// come to them).
    pub fn start(r: Rounds) -> Self {
        let db = r.db.clone();
        let rx = r.hub.tables();
        let task = tokio::spawn(run(r, rx));
        Tables { db, task }
    }

    /// Stops gossiping and drops every table (goodbye, restart).
    pub fn stop(&self) {
        self.task.abort();
        let mut db = self.db.lock().expect("tables");
        let vnis: Vec<u32> = db.networks().collect();
        for vni in vnis {
            db.leave(vni);
        }
    }
}

/// Passes what netdb dropped or refused on to the wire counters that
/// `debug gossip` and `/metrics` show.
fn count(w: &WireCounters, before: &Counters, now: &Counters) {
    use std::sync::atomic::Ordering::Relaxed;
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

async fn send(hub: &Hub, port: u16, out: Vec<Outgoing>) {
    for o in out {
        let to = SocketAddr::from((o.to, port));
        if let Err(e) = hub.send_table(to, &o.msg.encode()).await {
            debug!(%to, "table gossip send: {e:#}");
        }
    }
}

/// What the rounds' task works with. Membership (`chitchat`, where this
/// node is `me`) is read every round; `port` is the gossip port every node
/// of the swarm uses (7946, as Docker's).
pub(super) struct Rounds {
    pub db: Arc<Mutex<NetDb>>,
    pub hub: Arc<Hub>,
    pub port: u16,
    pub interval: Duration,
    pub changes: Arc<watch::Sender<u64>>,
    pub chitchat: Arc<tokio::sync::Mutex<chitchat::Chitchat>>,
    pub me: String,
}

async fn run(r: Rounds, mut rx: mpsc::Receiver<(SocketAddr, Vec<u8>)>) {
    let Rounds {
        db,
        hub,
        port,
        interval,
        changes,
        chitchat,
        me,
    } = r;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = 0u64;
    loop {
        let mut out = Vec::new();
        tokio::select! {
            m = rx.recv() => {
                let Some((peer, bytes)) = m else { return };
                let std::net::IpAddr::V4(from) = peer.ip() else { continue };
                match Msg::decode(&bytes) {
                    Ok(msg) => {
                        let mut d = db.lock().expect("tables");
                        let before = d.counters.clone();
                        d.handle(from, msg, &mut Plain, &mut out);
                        count(hub.counters(), &before, &d.counters);
                    }
                    Err(e) => {
                        hub.counters().table_refused[4]
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        debug!(%peer, "table gossip: {e}");
                    }
                }
            }
            _ = tick.tick() => {
                let listed: Membership = super::view::membership(&*chitchat.lock().await, &me);
                let mut d = db.lock().expect("tables");
                let vnis: Vec<u32> = d.networks().collect();
                for vni in vnis {
                    let (m, live) = listed.get(&vni).cloned().unwrap_or_default();
                    d.set_members(vni, m);
                    d.set_live(vni, live);
                }
                d.tick(&mut out);
                d.collect(crate::clock::now_ms());
            }
        }
        let now = db.lock().expect("tables").changes;
        if now != seen {
            seen = now;
            changes.send_modify(|n| *n += 1);
        }
        send(&hub, port, out).await;
    }
}

//! The one socket on 7946 that a node's gossip shares, with every
//! datagram sealed (`seal.rs`): membership (SWIM, `roster.rs`) on channel
//! 0 and the tables (`netdb`) on [`TABLES_CHANNEL`], as Docker's NetworkDB
//! shares 7946 between its networks. The channel travels in the sealed
//! header, authenticated with the rest, and the [`Hub`] hands each opened
//! message to its channel's task.
//!
//! Membership messages also start with the swarm's cluster tag: a daemon
//! holding the key but of another swarm (a key copied by mistake) is
//! refused and counted before it can become a member, and whoever is no
//! member has its table messages refused by `netdb`.
//!
//! Refusals are counted by reason and never stop the loop.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::UdpSocket as TokioUdp;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::keys::{GossipKeys, Source};
use super::seal::{Opener, Refusal, Sealer, MAGIC, MAX_DATAGRAM};
use super::transport::WireCounters;

/// First byte of a datagram in clear (`--insecure-gossip`): then the
/// channel (4 bytes, big endian), then the message.
pub const CLEAR_MAGIC: u8 = 0xC7;
const CLEAR_HEADER: usize = 5;

/// The channel of membership (SWIM): its messages start with the cluster
/// tag.
pub const MEMBERSHIP_CHANNEL: u32 = 0;
/// The channel of the per-network table gossip (`netdb`): its messages
/// name their network themselves. VNIs are 24-bit, so it is never one.
pub const TABLES_CHANNEL: u32 = u32::MAX;
/// Messages waiting for the gossip task, per channel.
const QUEUE: usize = 1024;

/// Where opened messages of one channel go: (peer, plaintext).
type Sink = Arc<Mutex<Option<mpsc::Sender<(SocketAddr, Vec<u8>)>>>>;

/// The 8 bytes that start every membership message: the swarm's cluster
/// id, hashed.
pub fn cluster_tag(cluster_id: &str) -> [u8; 8] {
    xxhash_rust::xxh3::xxh3_64(cluster_id.as_bytes()).to_be_bytes()
}

/// The gossip port.
pub struct Hub {
    real: Arc<TokioUdp>,
    /// One per process for every channel: one sender id, one counter, so
    /// receivers keep one replay window per node.
    sealer: Sealer,
    keys: Arc<GossipKeys>,
    counters: Arc<WireCounters>,
    tag: [u8; 8],
    membership: Sink,
    tables: Sink,
    receiver: JoinHandle<()>,
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.receiver.abort();
    }
}

/// What the gossip socket can hold unread: a table delta of up to
/// `netdb::MAX_MESSAGE` (260 KB) arrives as 4 sealed fragments of up to
/// 64 KB at once, and Linux's default buffer (212 KB) holds 3 of them: a
/// receiver a moment late lost the last one, so the whole delta, every
/// time, and a big origin's records never arrived (seen as a unit test
/// stalled at 39 of 3,000 records under load). memberlist sets 2 MB for
/// the same reason; this holds several such deltas.
const RECEIVE_BUFFER: usize = 4 << 20;

/// Sets it; as root past `net.core.rmem_max` (the daemon runs as root),
/// else up to that cap. Best effort: gossip still works without it.
fn big_receive_buffer(sock: &TokioUdp) {
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(sock, sockopt::RcvBufForce, &RECEIVE_BUFFER).is_err() {
        if let Err(e) = setsockopt(sock, sockopt::RcvBuf, &RECEIVE_BUFFER) {
            tracing::warn!("gossip socket: receive buffer left at the default: {e}");
        }
    }
}

impl Hub {
    pub async fn bind(
        addr: SocketAddr,
        cluster_id: &str,
        keys: Arc<GossipKeys>,
        counters: Arc<WireCounters>,
    ) -> anyhow::Result<Arc<Self>> {
        let real = Arc::new(
            TokioUdp::bind(addr)
                .await
                .with_context(|| format!("failed to bind to {addr}/UDP for gossip"))?,
        );
        big_receive_buffer(&real);
        let tag = cluster_tag(cluster_id);
        let membership: Sink = Default::default();
        let tables: Sink = Default::default();
        let receiver = tokio::spawn(receive_loop(Receiving {
            real: real.clone(),
            tag,
            membership: membership.clone(),
            tables: tables.clone(),
            keys: keys.clone(),
            counters: counters.clone(),
        }));
        Ok(Arc::new(Self {
            real,
            sealer: Sealer::new(),
            keys,
            counters,
            tag,
            membership,
            tables,
            receiver,
        }))
    }

    pub fn counters(&self) -> &WireCounters {
        &self.counters
    }

    /// Membership's messages from now on, cluster tag removed (one
    /// receiver at a time).
    pub fn membership(&self) -> mpsc::Receiver<(SocketAddr, Vec<u8>)> {
        sink(&self.membership)
    }

    /// The table gossip's messages from now on (one receiver at a time).
    pub fn tables(&self) -> mpsc::Receiver<(SocketAddr, Vec<u8>)> {
        sink(&self.tables)
    }

    /// Tags, seals and sends one membership message.
    pub async fn send_membership(&self, to: SocketAddr, plain: &[u8]) -> anyhow::Result<usize> {
        let mut m = Vec::with_capacity(plain.len() + 8);
        m.extend_from_slice(&self.tag);
        m.extend_from_slice(plain);
        self.send(MEMBERSHIP_CHANNEL, to, &m).await
    }

    /// Seals and sends one table gossip message.
    pub async fn send_table(&self, to: SocketAddr, plain: &[u8]) -> anyhow::Result<usize> {
        self.send(TABLES_CHANNEL, to, plain).await
    }

    /// Seals `plain` for `channel` (or frames it in clear, insecure) and
    /// sends it; nothing leaves a node without a key.
    async fn send(&self, channel: u32, to: SocketAddr, plain: &[u8]) -> anyhow::Result<usize> {
        let keys = self.keys.current();
        let datagrams = match (keys.source, keys.seal_key()) {
            (Source::None, _) => return Ok(0),
            (_, Some(k)) => self.sealer.seal(k, channel, plain)?,
            (_, None) => {
                let mut d = Vec::with_capacity(plain.len() + CLEAR_HEADER);
                d.push(CLEAR_MAGIC);
                d.extend_from_slice(&channel.to_be_bytes());
                d.extend_from_slice(plain);
                vec![d]
            }
        };
        let mut sent = 0;
        for d in &datagrams {
            sent += self
                .real
                .send_to(d, to)
                .await
                .context("failed to send a gossip datagram")?;
        }
        let c = &self.counters;
        c.sent_datagrams
            .fetch_add(datagrams.len() as u64, Ordering::Relaxed);
        c.sent_bytes.fetch_add(sent as u64, Ordering::Relaxed);
        Ok(sent)
    }
}

fn sink(s: &Sink) -> mpsc::Receiver<(SocketAddr, Vec<u8>)> {
    let (tx, rx) = mpsc::channel(QUEUE);
    *s.lock().expect("gossip sink") = Some(tx);
    rx
}

struct Receiving {
    real: Arc<TokioUdp>,
    tag: [u8; 8],
    membership: Sink,
    tables: Sink,
    keys: Arc<GossipKeys>,
    counters: Arc<WireCounters>,
}

/// Reads 7946 for the hub's life: opens, counts, hands each message to its
/// channel's task.
async fn receive_loop(r: Receiving) {
    let counters = &r.counters;
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut opener = Opener::new();
    loop {
        let (n, peer) = match r.real.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ENOBUFS, ECONNREFUSED from an ICMP error...: never fatal.
                debug!("gossip recv: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        counters.received_datagrams.fetch_add(1, Ordering::Relaxed);
        counters
            .received_bytes
            .fetch_add(n as u64, Ordering::Relaxed);
        let d = &buf[..n];
        let st = r.keys.current();
        let clear = d.first() == Some(&CLEAR_MAGIC) && d.len() > CLEAR_HEADER;
        let plain = match (d.first() == Some(&MAGIC), st.source) {
            (true, _) => opener.open(&st.ring, d, Instant::now()),
            (false, Source::Insecure) if clear => Ok(Some((
                u32::from_be_bytes(d[1..CLEAR_HEADER].try_into().expect("4 bytes")),
                d[CLEAR_HEADER..].to_vec(),
            ))),
            (false, Source::None) if clear => Err(Refusal::NoKey),
            (false, _) => Err(Refusal::Malformed),
        };
        let (sink, p) = match plain {
            Ok(Some((TABLES_CHANNEL, p))) => (&r.tables, p),
            Ok(Some((MEMBERSHIP_CHANNEL, p))) => {
                if p.get(..8) != Some(&r.tag[..]) {
                    let n = counters.foreign_cluster.fetch_add(1, Ordering::Relaxed) + 1;
                    if n.is_power_of_two() {
                        warn!(from = %peer, count = n, "gossip from another swarm refused");
                    }
                    continue;
                }
                (&r.membership, p[8..].to_vec())
            }
            Ok(Some(_)) => {
                // A channel this version has no use for (a newer peer's).
                counters.not_joined.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Ok(None) => continue,
            Err(e) => {
                let n = counters.refuse(e);
                if n.is_power_of_two() {
                    warn!(from = %peer, reason = e.reason(), count = n, "gossip datagram refused");
                }
                continue;
            }
        };
        let tx = sink.lock().expect("gossip sink").clone();
        // Full or nobody listening: dropped, as UDP may (SWIM probes
        // again, anti-entropy repairs).
        if tx.is_none_or(|tx| tx.try_send((peer, p)).is_err()) {
            counters.not_joined.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
#[path = "sealed_tests.rs"]
pub(super) mod tests;

//! chitchat's transport with every datagram sealed (`seal.rs`), and the
//! one socket on 7946 that every chitchat instance of the node shares.
//!
//! A node runs several chitchat instances: one for cluster membership
//! (channel 0) and one per network it is on (channel = the VNI, see
//! `networks.rs`). They share the gossip port, as Docker's NetworkDB shares
//! 7946 between its networks: the channel travels in the sealed header,
//! authenticated with the rest, and the [`Hub`] hands each opened message
//! to its channel's instance.
//!
//! chitchat 0.13 keeps its wire codec crate-private (`ChitchatEnvelope::
//! serialize`/`deserialize` are `pub(crate)`); only its public
//! `transport::UdpSocket` turns envelopes into bytes and back. Writing
//! chitchat's wire format again by hand would be worse (a second codec to
//! keep in step with every chitchat release), so each instance's socket
//! uses such a socket, bound to 127.0.0.1:0 in the daemon's own network
//! namespace, as its codec, and the hub owns the real socket on 7946:
//!
//! - send: the codec socket sends the envelope to a loopback socket of
//!   ours (`encoded`), which reads back those exact bytes; they are sealed
//!   for the instance's channel and sent from 7946 to the peer.
//! - receive: the hub's task reads 7946, opens each datagram, and writes
//!   the plaintext to its channel's codec socket from a loopback relay
//!   socket of its own per peer; the codec decodes it, and `recv` returns
//!   it with the relay's address replaced by the peer's. One relay per
//!   peer (not a queue of addresses) keeps that mapping right whatever
//!   chitchat refuses to decode or however the loopback reorders.
//!
//! Refusals are counted by reason and never stop the loop.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpSocket};
use chitchat::{ChitchatEnvelope, ChitchatMessage};
use lru::LruCache;
use tokio::net::UdpSocket as TokioUdp;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::keys::{GossipKeys, Source};
use super::seal::{Opener, Refusal, Sealer, MAGIC, MAX_DATAGRAM};
use super::transport::WireCounters;

/// chitchat's datagrams start with its magic number, 45139 little-endian.
const CHITCHAT_MAGIC: [u8; 2] = 45_139u16.to_le_bytes();
/// First byte of a datagram in clear (`--insecure-gossip`): then the
/// channel (4 bytes, big endian), then chitchat's bytes.
pub const CLEAR_MAGIC: u8 = 0xC7;
const CLEAR_HEADER: usize = 5;
/// Peers with a relay socket (LRU; a cluster's worth).
const MAX_RELAYS: usize = 1024;

/// The channel of the per-network table gossip (`netdb`): its messages
/// name their network themselves. VNIs are 24-bit, so it is never one.
pub const TABLES_CHANNEL: u32 = u32::MAX;
/// Table messages waiting for the table gossip's task.
const TABLES_QUEUE: usize = 1024;

/// Where opened table messages go: (peer, plaintext).
pub type TablesSink = Arc<Mutex<Option<tokio::sync::mpsc::Sender<(SocketAddr, Vec<u8>)>>>>;

/// Relay address -> the peer whose plaintext it carries.
type RelayMap = Arc<Mutex<HashMap<SocketAddr, SocketAddr>>>;
/// Channel -> its instance's codec socket.
type ChannelMap = Arc<Mutex<HashMap<u32, SocketAddr>>>;

/// The gossip port, shared by the node's chitchat instances.
pub struct Hub {
    real: Arc<TokioUdp>,
    /// One per process for every channel: one sender id, one counter, so
    /// receivers keep one replay window per node, not one per network.
    sealer: Sealer,
    keys: Arc<GossipKeys>,
    counters: Arc<WireCounters>,
    channels: ChannelMap,
    relays: RelayMap,
    tables: TablesSink,
    receiver: JoinHandle<()>,
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.receiver.abort();
    }
}

impl Hub {
    pub async fn bind(
        addr: SocketAddr,
        keys: Arc<GossipKeys>,
        counters: Arc<WireCounters>,
    ) -> anyhow::Result<Arc<Self>> {
        let real = Arc::new(
            TokioUdp::bind(addr)
                .await
                .with_context(|| format!("failed to bind to {addr}/UDP for gossip"))?,
        );
        let channels: ChannelMap = Default::default();
        let relays: RelayMap = Default::default();
        let tables: TablesSink = Default::default();
        let receiver = tokio::spawn(receive_loop(
            real.clone(),
            channels.clone(),
            relays.clone(),
            tables.clone(),
            keys.clone(),
            counters.clone(),
        ));
        Ok(Arc::new(Self {
            real,
            sealer: Sealer::new(),
            keys,
            counters,
            channels,
            relays,
            tables,
            receiver,
        }))
    }

    pub fn counters(&self) -> &WireCounters {
        &self.counters
    }

    /// The table gossip's messages from now on (one receiver at a time).
    pub fn tables(&self) -> tokio::sync::mpsc::Receiver<(SocketAddr, Vec<u8>)> {
        let (tx, rx) = tokio::sync::mpsc::channel(TABLES_QUEUE);
        *self.tables.lock().expect("tables sink") = Some(tx);
        rx
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
                .context("failed to send chitchat message to peer")?;
        }
        let c = &self.counters;
        c.sent_datagrams
            .fetch_add(datagrams.len() as u64, Ordering::Relaxed);
        c.sent_bytes.fetch_add(sent as u64, Ordering::Relaxed);
        Ok(sent)
    }
}

/// One chitchat instance's transport: its channel on the hub.
pub struct SealedTransport {
    pub hub: Arc<Hub>,
    pub channel: u32,
    pub cluster_id: String,
}

#[async_trait]
impl Transport for SealedTransport {
    /// `bind_addr` is the hub's: every instance shares its socket.
    async fn open(&self, _bind_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let lo = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let codec = UdpSocket::open(lo)
            .await
            .context("gossip codec socket on 127.0.0.1 (is lo up?)")?;
        let codec_addr = codec.local_addr()?;
        let encoded = TokioUdp::bind(lo).await?;
        let encoded_addr = encoded.local_addr()?;
        self.hub
            .channels
            .lock()
            .expect("channel map")
            .insert(self.channel, codec_addr);
        Ok(Box::new(SealedSocket {
            hub: self.hub.clone(),
            channel: self.channel,
            codec,
            codec_addr,
            encoded,
            encoded_addr,
            buf: vec![0; MAX_DATAGRAM + 1],
            cluster_id: self.cluster_id.clone(),
        }))
    }
}

struct SealedSocket {
    hub: Arc<Hub>,
    channel: u32,
    codec: UdpSocket,
    codec_addr: SocketAddr,
    encoded: TokioUdp,
    encoded_addr: SocketAddr,
    buf: Vec<u8>,
    cluster_id: String,
}

impl Drop for SealedSocket {
    fn drop(&mut self) {
        let mut ch = self.hub.channels.lock().expect("channel map");
        // Unless a newer instance of the channel took it over already.
        if ch.get(&self.channel) == Some(&self.codec_addr) {
            ch.remove(&self.channel);
        }
    }
}

impl SealedSocket {
    /// chitchat's bytes for `envelope`, through the codec socket.
    async fn encode(&mut self, envelope: ChitchatEnvelope) -> anyhow::Result<usize> {
        // Leftovers of an encode that was cut short must not be taken for
        // this one.
        while self.encoded.try_recv_from(&mut self.buf).is_ok() {}
        self.codec.send(self.encoded_addr, envelope).await?;
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (n, from) = tokio::time::timeout(left, self.encoded.recv_from(&mut self.buf))
                .await
                .context("gossip codec: no bytes back within 1 s")??;
            if from == self.codec_addr {
                return Ok(n);
            }
        }
    }
}

#[async_trait]
impl Socket for SealedSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.hub.real.local_addr()?)
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        if self.hub.keys.current().source == Source::None {
            // No key, no plaintext allowed: nothing leaves.
            return Ok(SendOutcome { num_bytes_sent: 0 });
        }
        let n = self.encode(envelope).await?;
        let hub = self.hub.clone();
        let sent = hub.send(self.channel, to, &self.buf[..n]).await?;
        Ok(SendOutcome {
            num_bytes_sent: sent,
        })
    }

    /// Cancel-safe: the only await is the codec socket's, which is.
    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            let out = self.codec.recv().await?;
            let peer = self
                .hub
                .relays
                .lock()
                .expect("relay map")
                .get(&out.from_addr)
                .copied();
            let Some(peer) = peer else {
                // Something else on this host's loopback wrote to the codec.
                self.hub.counters.refuse(Refusal::Malformed);
                continue;
            };
            if let ChitchatMessage::Syn { cluster_id, .. } = &out.envelope.message {
                if *cluster_id != self.cluster_id {
                    self.hub
                        .counters
                        .foreign_cluster
                        .fetch_add(1, Ordering::Relaxed);
                    warn!(from = %peer, %cluster_id, "gossip from another cluster refused");
                }
            }
            return Ok(RecvOutcome {
                from_addr: peer,
                envelope: out.envelope,
                num_bytes_received: out.num_bytes_received,
            });
        }
    }
}

/// Reads 7946 for the hub's life: opens, counts, relays to the channel.
async fn receive_loop(
    real: Arc<TokioUdp>,
    channels: ChannelMap,
    relays: RelayMap,
    tables: TablesSink,
    keys: Arc<GossipKeys>,
    counters: Arc<WireCounters>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut opener = Opener::new();
    let mut socks: LruCache<SocketAddr, TokioUdp> =
        LruCache::new(NonZeroUsize::new(MAX_RELAYS).expect("non-zero"));
    loop {
        let (n, peer) = match real.recv_from(&mut buf).await {
            Ok(r) => r,
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
        let st = keys.current();
        let clear = d.first() == Some(&CLEAR_MAGIC) && d.len() > CLEAR_HEADER;
        let plain = match (d.first() == Some(&MAGIC), st.source) {
            (true, _) => opener.open(&st.ring, d, Instant::now()),
            (false, Source::Insecure) if clear => Ok(Some((
                u32::from_be_bytes(d[1..CLEAR_HEADER].try_into().expect("4 bytes")),
                d[CLEAR_HEADER..].to_vec(),
            ))),
            (false, Source::None) if clear || d.starts_with(&CHITCHAT_MAGIC) => Err(Refusal::NoKey),
            (false, _) => Err(Refusal::Malformed),
        };
        match plain {
            Ok(Some((TABLES_CHANNEL, p))) => {
                let sink = tables.lock().expect("tables sink").clone();
                match sink {
                    // Full: dropped, as UDP may (anti-entropy repairs it).
                    Some(tx) => {
                        if tx.try_send((peer, p)).is_err() {
                            counters.not_joined.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    None => {
                        counters.not_joined.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Ok(Some((channel, p))) => {
                let codec = channels.lock().expect("channel map").get(&channel).copied();
                let Some(codec) = codec else {
                    // A network this node is not on (any more): authentic,
                    // but nobody here to hear it.
                    counters.not_joined.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                if let Err(e) = relay(&mut socks, &relays, peer, codec, &p) {
                    debug!(%peer, "gossip relay: {e:#}");
                }
            }
            Ok(None) => {}
            Err(r) => {
                let n = counters.refuse(r);
                if n.is_power_of_two() {
                    warn!(from = %peer, reason = r.reason(), count = n, "gossip datagram refused");
                }
            }
        }
    }
}

/// Hands an opened datagram to the codec socket from the peer's relay.
fn relay(
    socks: &mut LruCache<SocketAddr, TokioUdp>,
    relays: &RelayMap,
    peer: SocketAddr,
    codec: SocketAddr,
    plain: &[u8],
) -> anyhow::Result<()> {
    if !socks.contains(&peer) {
        let s = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        s.set_nonblocking(true)?;
        let s = TokioUdp::from_std(s)?;
        let addr = s.local_addr()?;
        let mut map = relays.lock().expect("relay map");
        if let Some((_, old)) = socks.push(peer, s) {
            if let Ok(a) = old.local_addr() {
                map.remove(&a);
            }
        }
        map.insert(addr, peer);
    }
    let Some(s) = socks.get(&peer) else {
        bail!("relay vanished");
    };
    // Loopback delivers at once or drops (a full codec buffer), as UDP may.
    s.try_send_to(plain, codec)?;
    Ok(())
}

#[cfg(test)]
#[path = "sealed_tests.rs"]
pub(super) mod tests;

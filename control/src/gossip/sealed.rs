//! chitchat's transport with every datagram sealed (`seal.rs`).
//!
//! chitchat 0.13 keeps its wire codec crate-private (`ChitchatEnvelope::
//! serialize`/`deserialize` are `pub(crate)`); only its public
//! `transport::UdpSocket` turns envelopes into bytes and back. Writing
//! chitchat's wire format again by hand would be worse (a second codec to
//! keep in step with every chitchat release), so this transport uses such
//! a socket, bound to 127.0.0.1:0 in the daemon's own network namespace,
//! as its codec and owns the real socket on 7946 itself:
//!
//! - send: the codec socket sends the envelope to a loopback socket of
//!   ours (`encoded`), which reads back those exact bytes; they are sealed
//!   and sent from 7946 to the peer.
//! - receive: a task reads 7946, opens each datagram, and writes the
//!   plaintext to the codec socket from a loopback relay socket of its own
//!   per peer; the codec decodes it, and `recv` returns it with the relay's
//!   address replaced by the peer's. One relay per peer (not a queue of
//!   addresses) keeps that mapping right whatever chitchat refuses to
//!   decode or however the loopback reorders.
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
/// Peers with a relay socket (LRU; a cluster's worth).
const MAX_RELAYS: usize = 1024;

pub struct SealedTransport {
    pub cluster_id: String,
    pub counters: Arc<WireCounters>,
    pub keys: Arc<GossipKeys>,
}

/// Relay address -> the peer whose plaintext it carries.
type RelayMap = Arc<Mutex<HashMap<SocketAddr, SocketAddr>>>;

#[async_trait]
impl Transport for SealedTransport {
    async fn open(&self, bind_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let real = Arc::new(
            TokioUdp::bind(bind_addr)
                .await
                .with_context(|| format!("failed to bind to {bind_addr}/UDP for gossip"))?,
        );
        let lo = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let codec = UdpSocket::open(lo)
            .await
            .context("gossip codec socket on 127.0.0.1 (is lo up?)")?;
        let codec_addr = codec.local_addr()?;
        let encoded = TokioUdp::bind(lo).await?;
        let encoded_addr = encoded.local_addr()?;
        let relays: RelayMap = Default::default();
        let receiver = tokio::spawn(receive_loop(
            real.clone(),
            codec_addr,
            relays.clone(),
            self.keys.clone(),
            self.counters.clone(),
        ));
        Ok(Box::new(SealedSocket {
            real,
            codec,
            codec_addr,
            encoded,
            encoded_addr,
            buf: vec![0; MAX_DATAGRAM + 1],
            relays,
            sealer: Sealer::new(),
            keys: self.keys.clone(),
            counters: self.counters.clone(),
            cluster_id: self.cluster_id.clone(),
            receiver,
        }))
    }
}

struct SealedSocket {
    real: Arc<TokioUdp>,
    codec: UdpSocket,
    codec_addr: SocketAddr,
    encoded: TokioUdp,
    encoded_addr: SocketAddr,
    buf: Vec<u8>,
    relays: RelayMap,
    sealer: Sealer,
    keys: Arc<GossipKeys>,
    counters: Arc<WireCounters>,
    cluster_id: String,
    receiver: JoinHandle<()>,
}

impl Drop for SealedSocket {
    fn drop(&mut self) {
        self.receiver.abort();
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
        Ok(self.real.local_addr()?)
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let keys = self.keys.current();
        if keys.source == Source::None {
            // No key, no plaintext allowed: nothing leaves.
            return Ok(SendOutcome { num_bytes_sent: 0 });
        }
        let n = self.encode(envelope).await?;
        let datagrams = match keys.seal_key() {
            Some(k) => self.sealer.seal(k, &self.buf[..n])?,
            None => vec![self.buf[..n].to_vec()],
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
        Ok(SendOutcome {
            num_bytes_sent: sent,
        })
    }

    /// Cancel-safe: the only await is the codec socket's, which is.
    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            let out = self.codec.recv().await?;
            let peer = self
                .relays
                .lock()
                .expect("relay map")
                .get(&out.from_addr)
                .copied();
            let Some(peer) = peer else {
                // Something else on this host's loopback wrote to the codec.
                self.counters.refuse(Refusal::Malformed);
                continue;
            };
            if let ChitchatMessage::Syn { cluster_id, .. } = &out.envelope.message {
                if *cluster_id != self.cluster_id {
                    self.counters
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

/// Reads 7946 for the socket's life: opens, counts, relays.
async fn receive_loop(
    real: Arc<TokioUdp>,
    codec: SocketAddr,
    relays: RelayMap,
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
        let plain = match (d.first() == Some(&MAGIC), st.source) {
            (true, _) => opener.open(&st.ring, d, Instant::now()),
            (false, Source::Insecure) => Ok(Some(d.to_vec())),
            (false, Source::None) if d.starts_with(&CHITCHAT_MAGIC) => Err(Refusal::NoKey),
            (false, _) => Err(Refusal::Malformed),
        };
        match plain {
            Ok(Some(p)) => {
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

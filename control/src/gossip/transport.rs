//! chitchat's UDP transport, plus counting of what it refuses: datagrams
//! that do not decode and messages from another cluster. chitchat only logs
//! those; operators need the numbers.
//!
//! chitchat keeps its wire codec private, so malformed datagrams are counted
//! from the warning its UDP socket logs for each one (a tracing layer, see
//! [`MalformedCounter`]); foreign-cluster messages are counted here, on the
//! decoded envelope, before chitchat answers them with BadCluster.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpSocket};
use chitchat::{ChitchatEnvelope, ChitchatMessage};
use tracing::field::{Field, Visit};
use tracing::warn;
use tracing_subscriber::layer::Context;

/// Datagrams on the gossip port that are not chitchat messages.
pub static MALFORMED_PACKETS: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Default)]
pub struct WireCounters {
    pub foreign_cluster: AtomicU64,
}

pub struct CountingUdpTransport {
    pub cluster_id: String,
    pub counters: Arc<WireCounters>,
}

#[async_trait]
impl Transport for CountingUdpTransport {
    async fn open(&self, bind_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        Ok(Box::new(CountingSocket {
            inner: UdpSocket::open(bind_addr).await?,
            cluster_id: self.cluster_id.clone(),
            counters: self.counters.clone(),
        }))
    }
}

struct CountingSocket {
    inner: UdpSocket,
    cluster_id: String,
    counters: Arc<WireCounters>,
}

#[async_trait]
impl Socket for CountingSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.inner.local_addr()
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        self.inner.send(to, envelope).await
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        let out = self.inner.recv().await?;
        if let ChitchatMessage::Syn { cluster_id, .. } = &out.envelope.message {
            if *cluster_id != self.cluster_id {
                self.counters
                    .foreign_cluster
                    .fetch_add(1, Ordering::Relaxed);
                warn!(from = %out.from_addr, %cluster_id, "gossip from another cluster refused");
            }
        }
        Ok(out)
    }
}

/// Counts chitchat's "invalid-chitchat-payload" warnings (one per refused
/// datagram) whatever the log level.
pub struct MalformedCounter;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for MalformedCounter {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if !event.metadata().target().starts_with("chitchat") {
            return;
        }
        struct Msg(bool);
        impl Visit for Msg {
            fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
                if f.name() == "message" && format!("{v:?}").contains("invalid-chitchat-payload") {
                    self.0 = true;
                }
            }
        }
        let mut m = Msg(false);
        event.record(&mut m);
        if m.0 {
            MALFORMED_PACKETS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

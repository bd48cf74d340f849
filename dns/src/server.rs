//! The server: one per node, serving every task's sockets.
//!
//! UDP is the hot path and is served by a hand-written receive loop per
//! socket: a cluster name is answered inline, without a task per datagram
//! (hickory-server's UDP handler spawns one per datagram, which measured
//! ~160k QPS against ~220k for a plain loop on this kind of machine).
//! Forwards are spawned, each holding a permit: up to `max_inflight` at
//! once (memory-bound, tens of thousands), beyond that REFUSED and counted,
//! while cluster names keep answering. TCP goes through hickory-server's
//! `Server` (framing, timeouts, slow or bogus clients), with the same
//! decision function behind it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Header, Message, Metadata, ResponseCode};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo, Server};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tracing::debug;

use crate::answer::{decide, failure, Ctx, Verdict};
use crate::forward::{UpstreamView, Upstreams};
use crate::stats::{Counters, Latency, LatencyStats, Stats};
use crate::Records;

#[derive(Clone, Debug)]
pub struct Config {
    /// TTL of the cluster's answers, in seconds.
    pub ttl: u32,
    pub upstreams: Vec<SocketAddr>,
    /// How long one upstream gets before the next is asked.
    pub upstream_timeout: Duration,
    /// Forwards in flight at once, node-wide.
    pub max_inflight: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ttl: 5,
            upstreams: vec![],
            upstream_timeout: Duration::from_millis(1500),
            max_inflight: 16_384,
        }
    }
}

pub struct DnsServer {
    /// The UDP loops and their forwards run on a runtime of their own, on
    /// one dedicated thread (as Knot's UDP workers): the daemon's other
    /// work (gossip, API, sessions) cannot delay an answer, and a loop
    /// never migrates between threads.
    udp_rt: tokio::runtime::Handle,
    records: Arc<dyn Records>,
    ttl: u32,
    upstreams: Upstreams,
    inflight: Arc<Semaphore>,
    counters: Counters,
    /// Answer times: from the cluster's records, and forwarded.
    local_latency: Latency,
    forward_latency: Latency,
}

/// A client's sockets being served; dropping it stops them.
pub struct Serving {
    udp: tokio::task::JoinHandle<()>,
    _tcp: Server<TcpHandler>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.udp.abort();
        // The TCP server's tasks live in its JoinSet, aborted as it drops.
    }
}

impl DnsServer {
    pub fn new(records: Arc<dyn Records>, cfg: Config) -> Arc<Self> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("dns-udp".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("dns runtime");
                let _ = tx.send(rt.handle().clone());
                rt.block_on(std::future::pending::<()>());
            })
            .expect("dns thread");
        Arc::new(Self {
            udp_rt: rx.recv().expect("dns runtime handle"),
            records,
            ttl: cfg.ttl,
            upstreams: Upstreams::new(&cfg.upstreams, cfg.upstream_timeout),
            inflight: Arc::new(Semaphore::new(cfg.max_inflight)),
            counters: Counters::default(),
            local_latency: Latency::default(),
            forward_latency: Latency::default(),
        })
    }

    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// Answer times: ("local", ...) from the cluster's records and
    /// ("forwarded", ...) through an upstream.
    pub fn latency(&self) -> [(&'static str, LatencyStats); 2] {
        [
            ("local", self.local_latency.snapshot()),
            ("forwarded", self.forward_latency.snapshot()),
        ]
    }

    pub fn upstreams(&self) -> Vec<UpstreamView> {
        self.upstreams.view()
    }

    /// Serves `client`'s sockets (opened in its namespace, not yet
    /// non-blocking). Must be called inside the tokio runtime.
    pub fn serve(
        self: &Arc<Self>,
        client: &str,
        udp: std::net::UdpSocket,
        tcp: std::net::TcpListener,
    ) -> std::io::Result<Serving> {
        udp.set_nonblocking(true)?;
        tcp.set_nonblocking(true)?;
        let udp = {
            let _in = self.udp_rt.enter();
            Arc::new(UdpSocket::from_std(udp)?)
        };
        let client: Arc<str> = client.into();
        let mut server = Server::new(TcpHandler {
            dns: self.clone(),
            client: client.clone(),
        });
        server.register_listener(
            tokio::net::TcpListener::from_std(tcp)?,
            Duration::from_secs(5),
            64,
        );
        let me = self.clone();
        Ok(Serving {
            udp: self
                .udp_rt
                .spawn(async move { me.udp_loop(client, udp).await }),
            _tcp: server,
        })
    }

    fn ctx<'a>(&'a self, client: &'a str) -> Ctx<'a> {
        Ctx {
            records: &*self.records,
            client,
            ttl: self.ttl,
            counters: &self.counters,
        }
    }

    async fn udp_loop(self: Arc<Self>, client: Arc<str>, sock: Arc<UdpSocket>) {
        let mut buf = vec![0u8; 65535];
        loop {
            let (n, src) = match sock.recv_from(&mut buf).await {
                Ok(x) => x,
                // ICMP errors of earlier replies surface here: not ours.
                Err(_) => continue,
            };
            Counters::bump(&self.counters.udp_queries);
            let t0 = Instant::now();
            let raw = &buf[..n];
            match decide(&self.ctx(&client), raw, false) {
                Verdict::Reply(b) => {
                    // Never wait on a full socket buffer: drop instead.
                    let _ = sock.try_send_to(&b, src);
                    self.local_latency.observe(t0.elapsed());
                }
                Verdict::Drop => {}
                Verdict::Forward => {
                    if let Some(b) = self.start_forward(raw, src, &sock, t0) {
                        let _ = sock.try_send_to(&b, src);
                    }
                }
            }
        }
    }

    /// Spawns a forward; returns an immediate answer when it cannot.
    fn start_forward(
        self: &Arc<Self>,
        raw: &[u8],
        src: SocketAddr,
        sock: &Arc<UdpSocket>,
        t0: Instant,
    ) -> Option<Vec<u8>> {
        if self.upstreams.is_empty() {
            Counters::bump(&self.counters.no_upstream);
            return Some(failure(raw, ResponseCode::ServFail));
        }
        let Ok(permit) = self.inflight.clone().try_acquire_owned() else {
            Counters::bump(&self.counters.refused_overload);
            return Some(failure(raw, ResponseCode::Refused));
        };
        Counters::bump(&self.counters.forwarded);
        let (me, raw, sock) = (self.clone(), raw.to_vec(), sock.clone());
        tokio::spawn(async move {
            let answer = match me.upstreams.query(&raw, false).await {
                Some(a) => a,
                None => {
                    Counters::bump(&me.counters.forward_failed);
                    failure(&raw, ResponseCode::ServFail)
                }
            };
            let _ = sock.send_to(&answer, src).await;
            me.forward_latency.observe(t0.elapsed());
            drop(permit);
        });
        None
    }

    /// One query over TCP: the same decision, forwards over TCP.
    async fn tcp_answer(&self, client: &str, raw: &[u8]) -> Option<Vec<u8>> {
        Counters::bump(&self.counters.tcp_queries);
        let t0 = Instant::now();
        match decide(&self.ctx(client), raw, true) {
            Verdict::Reply(b) => {
                self.local_latency.observe(t0.elapsed());
                Some(b)
            }
            Verdict::Drop => None,
            Verdict::Forward if self.upstreams.is_empty() => {
                Counters::bump(&self.counters.no_upstream);
                Some(failure(raw, ResponseCode::ServFail))
            }
            Verdict::Forward => {
                let Ok(_permit) = self.inflight.clone().try_acquire_owned() else {
                    Counters::bump(&self.counters.refused_overload);
                    return Some(failure(raw, ResponseCode::Refused));
                };
                Counters::bump(&self.counters.forwarded);
                let answer = self.upstreams.query(raw, true).await;
                self.forward_latency.observe(t0.elapsed());
                match answer {
                    Some(a) => Some(a),
                    None => {
                        Counters::bump(&self.counters.forward_failed);
                        Some(failure(raw, ResponseCode::ServFail))
                    }
                }
            }
        }
    }
}

pub struct TcpHandler {
    dns: Arc<DnsServer>,
    client: Arc<str>,
}

#[async_trait::async_trait]
impl RequestHandler for TcpHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let fail = |rcode: ResponseCode| {
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = rcode;
            ResponseInfo::from(Header {
                metadata,
                counts: Default::default(),
            })
        };
        let Some(bytes) = self.dns.tcp_answer(&self.client, request.as_slice()).await else {
            return fail(ResponseCode::FormErr);
        };
        // hickory's TCP side sends records, not bytes: the answer is decoded
        // once more (the slow path; UDP carries the load).
        let Ok(m) = Message::from_vec(&bytes) else {
            return fail(ResponseCode::ServFail);
        };
        let mut b = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = m.edns.as_ref() {
            b.edns(e);
        }
        let resp = b.build(
            m.metadata,
            m.answers.iter(),
            m.authorities.iter(),
            std::iter::empty(),
            m.additionals.iter(),
        );
        match response.send_response(resp).await {
            Ok(info) => info,
            Err(e) => {
                debug!("dns tcp answer: {e}");
                fail(ResponseCode::ServFail)
            }
        }
    }
}

//! The upstream resolvers: a query that is not a cluster name goes to them
//! in turn, as it came (same id, same EDNS size), and the first answer is
//! relayed unchanged, so its TTLs and flags are the upstream's own.
//!
//! Written over plain sockets rather than hickory-resolver: a resolver
//! re-creates answers (its cache rewrites TTLs, its errors are its own),
//! where Docker's and our contract is to relay them.
//!
//! UDP goes through a pool of connected sockets per upstream (random
//! source ports, opened once), each query under a fresh random id that is
//! swapped back in the answer; a socket's reader hands answers to their
//! waiting queries. A socket per query measured 4x slower than dnsmasq's
//! forwarding; this is dnsmasq's own scheme (random ports and ids). Answers
//! must come from the upstream (connected sockets) with a pending id, or
//! they are ignored. A stopped upstream's ICMP error fails that socket's
//! pending queries at once, so SERVFAIL comes promptly.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{oneshot, OnceCell};

/// Connected sockets per upstream.
const POOL: usize = 16;

type Waiter = oneshot::Sender<Result<Vec<u8>, String>>;

struct PoolSock {
    sock: UdpSocket,
    pending: Mutex<HashMap<u16, Waiter>>,
}

struct Upstream {
    addr: SocketAddr,
    pool: OnceCell<Vec<Arc<PoolSock>>>,
    next: AtomicUsize,
    answered: AtomicU64,
    failed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// One upstream's health, for `shoal debug dns`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UpstreamView {
    pub addr: SocketAddr,
    pub answered: u64,
    pub failed: u64,
    pub last_error: Option<String>,
}

pub(crate) struct Upstreams {
    list: Vec<Upstream>,
    timeout: Duration,
}

impl Upstreams {
    pub(crate) fn new(addrs: &[SocketAddr], timeout: Duration) -> Self {
        Self {
            list: addrs
                .iter()
                .map(|a| Upstream {
                    addr: *a,
                    pool: OnceCell::new(),
                    next: AtomicUsize::new(0),
                    answered: AtomicU64::new(0),
                    failed: AtomicU64::new(0),
                    last_error: Mutex::new(None),
                })
                .collect(),
            timeout,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub(crate) fn view(&self) -> Vec<UpstreamView> {
        self.list
            .iter()
            .map(|u| UpstreamView {
                addr: u.addr,
                answered: u.answered.load(Ordering::Relaxed),
                failed: u.failed.load(Ordering::Relaxed),
                last_error: u.last_error.lock().expect("upstream lock").clone(),
            })
            .collect()
    }

    fn note(&self, u: &Upstream, r: &Result<Vec<u8>, String>) {
        match r {
            Ok(_) => {
                u.answered.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                u.failed.fetch_add(1, Ordering::Relaxed);
                *u.last_error.lock().expect("upstream lock") = Some(e.clone());
            }
        }
    }

    /// The first upstream answer, trying each in turn; `None` if all fail.
    pub(crate) async fn query(&self, raw: &[u8], tcp: bool) -> Option<Vec<u8>> {
        for u in &self.list {
            let r = if tcp {
                match tokio::time::timeout(self.timeout, over_tcp(u.addr, raw)).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("no answer within {:?}", self.timeout)),
                }
            } else {
                over_udp(u, raw, self.timeout).await
            };
            self.note(u, &r);
            if let Ok(answer) = r {
                return Some(answer);
            }
        }
        None
    }
}

fn id(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

async fn over_tcp(addr: SocketAddr, raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let len = u16::try_from(raw.len()).map_err(|_| "query too long".to_string())?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(raw);
    s.write_all(&framed).await.map_err(|e| e.to_string())?;
    let n = s.read_u16().await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; usize::from(n)];
    s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
    if buf.len() < 12 || id(&buf) != id(raw) {
        return Err("malformed answer".into());
    }
    Ok(buf)
}

async fn open_pool(addr: SocketAddr) -> Result<Vec<Arc<PoolSock>>, String> {
    let local: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().expect("addr")
    } else {
        "[::]:0".parse().expect("addr")
    };
    let mut out = vec![];
    for _ in 0..POOL {
        let sock = UdpSocket::bind(local).await.map_err(|e| e.to_string())?;
        sock.connect(addr).await.map_err(|e| e.to_string())?;
        let ps = Arc::new(PoolSock {
            sock,
            pending: Mutex::new(HashMap::new()),
        });
        tokio::spawn(read_answers(Arc::downgrade(&ps)));
        out.push(ps);
    }
    Ok(out)
}

/// Hands a socket's answers to their queries, for as long as it exists.
async fn read_answers(ps: std::sync::Weak<PoolSock>) {
    let mut buf = vec![0u8; 65535];
    loop {
        let Some(p) = ps.upgrade() else { return };
        let r = p.sock.recv(&mut buf).await;
        let mut pending = p.pending.lock().expect("pending lock");
        match r {
            Ok(n) if n >= 12 && buf[2] & 0x80 != 0 => {
                if let Some(w) = pending.remove(&id(&buf)) {
                    let _ = w.send(Ok(buf[..n].to_vec()));
                }
            }
            Ok(_) => {}
            // ICMP unreachable and the like: whoever waits here fails now.
            Err(e) => {
                for (_, w) in pending.drain() {
                    let _ = w.send(Err(e.to_string()));
                }
            }
        }
    }
}

async fn over_udp(u: &Upstream, raw: &[u8], timeout: Duration) -> Result<Vec<u8>, String> {
    let pool = u.pool.get_or_try_init(|| open_pool(u.addr)).await?;
    let ps = &pool[u.next.fetch_add(1, Ordering::Relaxed) % pool.len()];
    let (tx, rx) = oneshot::channel();
    let qid = {
        let mut pending = ps.pending.lock().expect("pending lock");
        let mut qid: u16 = rand::random();
        while pending.contains_key(&qid) {
            qid = rand::random();
        }
        pending.insert(qid, tx);
        qid
    };
    let mut q = raw.to_vec();
    q[..2].copy_from_slice(&qid.to_be_bytes());
    if let Err(e) = ps.sock.send(&q).await {
        ps.pending.lock().expect("pending lock").remove(&qid);
        return Err(e.to_string());
    }
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(Ok(mut answer))) => {
            answer[..2].copy_from_slice(&raw[..2]);
            Ok(answer)
        }
        Ok(Ok(Err(e))) => Err(e),
        Ok(Err(_)) => Err("answer lost".into()),
        Err(_) => {
            ps.pending.lock().expect("pending lock").remove(&qid);
            Err(format!("no answer within {timeout:?}"))
        }
    }
}

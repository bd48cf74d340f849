//! The upstream resolvers: a query that is not a cluster name goes to them
//! in turn, as it came (same id, same EDNS size), and the first answer is
//! relayed unchanged, so its TTLs and flags are the upstream's own.
//!
//! Written over plain sockets rather than hickory-resolver: a resolver
//! re-creates answers (its cache rewrites TTLs, its errors are its own),
//! where Docker's and our contract is to relay them. A fresh socket per
//! query gives a random source port; answers must carry the query's id
//! and come from the upstream (a connected socket), or they are ignored.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

struct Upstream {
    addr: SocketAddr,
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
            let r = match tokio::time::timeout(self.timeout, one(u.addr, raw, tcp)).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {:?}", self.timeout)),
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

async fn one(addr: SocketAddr, raw: &[u8], tcp: bool) -> Result<Vec<u8>, String> {
    if tcp {
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
        return Ok(buf);
    }
    let local: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().expect("addr")
    } else {
        "[::]:0".parse().expect("addr")
    };
    let s = UdpSocket::bind(local).await.map_err(|e| e.to_string())?;
    s.connect(addr).await.map_err(|e| e.to_string())?;
    s.send(raw).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65535];
    loop {
        // A stopped upstream answers with ICMP port unreachable: the
        // connected socket reports it here at once (no waiting).
        let n = s.recv(&mut buf).await.map_err(|e| e.to_string())?;
        if n >= 12 && id(&buf) == id(raw) && buf[2] & 0x80 != 0 {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

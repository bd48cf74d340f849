//! Published ports for processes on the node itself: `127.0.0.1:PORT` and
//! the node's own addresses, as on a Docker swarm node. Their packets go
//! through `lo` and never cross the underlay hook that the routing mesh
//! sits on, so (as Docker's userland proxy does for local clients) the
//! agent listens on each published port in the node's namespace and relays
//! every connection, or UDP peer, to the service:
//! - ingress mode: from the node's ingress sandbox (a namespace with an
//!   endpoint on the ingress network at the node's own address there,
//!   allocated by the leader) to the service's ingress VIP, which that
//!   endpoint's eBPF balancer resolves like any VIP;
//! - host mode: from inside the local task's namespace to its loopback.
//!
//! The task sees the sandbox's address (a local client has none worth
//! keeping). Clients from outside never reach these sockets: the underlay
//! hook takes their packets first.
//!
//! A relay by hand: it is a listener and `copy_bidirectional` per
//! connection (and a socket per UDP peer); a proxy crate would bring more
//! than it saves, and none creates its upstream sockets in another netns.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::wire::LocalPort;
use anyhow::{Context, Result};
use shoal_dataplane::netns::NetNs;
use tokio::net::{TcpListener, TcpSocket, UdpSocket};
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

/// How long a UDP peer's relay socket lives without traffic.
const UDP_IDLE: Duration = Duration::from_secs(60);

/// The relays running on this node, by (protocol, published port).
#[derive(Default)]
pub struct Relays {
    running: BTreeMap<(u8, u16), (LocalPort, AbortHandle)>,
    /// Ports that could not be opened, with the error last reported (so
    /// a retry every pass does not repeat the warning).
    failed: BTreeMap<(u8, u16), String>,
}

impl Relays {
    /// Makes the relays equal to `want`. Called every sync pass (about a
    /// second): a port the node cannot listen on yet (a host process holds
    /// it, or a replaced relay's socket is still closing) is retried then.
    pub fn sync(&mut self, want: &[LocalPort]) {
        let keys: BTreeMap<(u8, u16), &LocalPort> =
            want.iter().map(|p| ((p.proto, p.published), p)).collect();
        self.running.retain(|k, (have, task)| {
            let keep = keys.get(k) == Some(&&*have);
            if !keep {
                task.abort();
                debug!(proto = k.0, port = k.1, "local relay stopped");
            }
            keep
        });
        self.failed.retain(|k, _| keys.contains_key(k));
        for (k, p) in keys {
            if self.running.contains_key(&k) {
                continue;
            }
            match start(p.clone()) {
                Ok(t) => {
                    info!(proto = p.proto, port = p.published, upstream = %p.upstream, "published port open to local processes");
                    self.failed.remove(&k);
                    self.running.insert(k, (p.clone(), t));
                }
                Err(e) => {
                    let e = format!("{e:#}");
                    if self.failed.get(&k) != Some(&e) {
                        warn!(
                            proto = p.proto,
                            port = p.published,
                            "local access to a published port: {e}"
                        );
                        self.failed.insert(k, e);
                    }
                }
            }
        }
    }

    /// The ports relayed now (for `debug`).
    pub fn open(&self) -> Vec<LocalPort> {
        self.running.values().map(|(p, _)| p.clone()).collect()
    }
}

impl Drop for Relays {
    fn drop(&mut self) {
        for (_, t) in self.running.values() {
            t.abort();
        }
    }
}

fn start(p: LocalPort) -> Result<AbortHandle> {
    let any = SocketAddr::from(([0, 0, 0, 0], p.published));
    let task = if p.proto == 17 {
        let std =
            std::net::UdpSocket::bind(any).with_context(|| format!("udp port {}", p.published))?;
        std.set_nonblocking(true)?;
        let sock = UdpSocket::from_std(std)?;
        tokio::spawn(relay_udp(sock, p))
    } else {
        let s = TcpSocket::new_v4()?;
        s.set_reuseaddr(true)?;
        s.bind(any)
            .with_context(|| format!("tcp port {}", p.published))?;
        let l = s.listen(1024)?;
        tokio::spawn(relay_tcp(l, p))
    };
    Ok(task.abort_handle())
}

/// Runs `f` on a thread inside the namespace at `path` (sockets made there
/// stay there).
async fn in_netns<T: Send + 'static>(
    path: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || -> Result<T> {
        let file = std::fs::File::open(&path).with_context(|| format!("namespace {path}"))?;
        let ns = NetNs::from_file(&path, file);
        Ok(ns.run(f)??)
    })
    .await?
}

async fn relay_tcp(l: TcpListener, p: LocalPort) {
    let p = Arc::new(p);
    loop {
        let Ok((mut client, from)) = l.accept().await else {
            // Out of descriptors, say: do not spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let p = p.clone();
        tokio::spawn(async move {
            let r: Result<()> = async {
                let s = in_netns(&p.netns, TcpSocket::new_v4).await?;
                let mut up = s.connect(SocketAddr::V4(p.upstream)).await?;
                let _ = client.set_nodelay(true);
                let _ = up.set_nodelay(true);
                tokio::io::copy_bidirectional(&mut client, &mut up).await?;
                Ok(())
            }
            .await;
            if let Err(e) = r {
                debug!(%from, port = p.published, "local relay: {e:#}");
            }
        });
    }
}

async fn relay_udp(sock: UdpSocket, p: LocalPort) {
    let sock = Arc::new(sock);
    let p = Arc::new(p);
    let peers: Arc<tokio::sync::Mutex<BTreeMap<SocketAddr, Arc<UdpSocket>>>> = Default::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            // An ICMP error of an earlier reply: not ours to act on.
            continue;
        };
        let up = peers.lock().await.get(&from).cloned();
        let up = match up {
            Some(u) => u,
            None => {
                let target = p.upstream;
                let made = in_netns(&p.netns, move || {
                    let u = std::net::UdpSocket::bind("0.0.0.0:0")?;
                    u.connect(target)?;
                    u.set_nonblocking(true)?;
                    Ok(u)
                })
                .await
                .and_then(|u| Ok(UdpSocket::from_std(u)?));
                let u = match made {
                    Ok(u) => Arc::new(u),
                    Err(e) => {
                        debug!(%from, port = p.published, "local relay: {e:#}");
                        continue;
                    }
                };
                peers.lock().await.insert(from, u.clone());
                // Replies back to the peer until it goes quiet.
                let (sock, peers, u2) = (sock.clone(), peers.clone(), u.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    while let Ok(Ok(n)) = tokio::time::timeout(UDP_IDLE, u2.recv(&mut buf)).await {
                        let _ = sock.send_to(&buf[..n], from).await;
                    }
                    peers.lock().await.remove(&from);
                });
                u
            }
        };
        let _ = up.send(&buf[..n]).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A relay inside one namespace (the test's own) to a local echo
    /// server: bytes go both ways, and a stopped relay frees its port.
    #[tokio::test]
    async fn tcp_and_udp_relay_both_ways_and_stop() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = match echo.local_addr().unwrap() {
            SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let uecho = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let uecho_addr = match uecho.local_addr().unwrap() {
            SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        tokio::spawn(async move {
            let mut b = [0u8; 1500];
            while let Ok((n, from)) = uecho.recv_from(&mut b).await {
                let _ = uecho.send_to(&b[..n], from).await;
            }
        });
        // Free ports for the relays: bind, note, release.
        let free = |udp: bool| {
            if udp {
                std::net::UdpSocket::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            } else {
                std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            }
        };
        let own = "/proc/self/ns/net".to_string();
        let (tp, up) = (free(false), free(true));
        let want = vec![
            LocalPort {
                proto: 6,
                published: tp,
                upstream: echo_addr,
                netns: own.clone(),
            },
            LocalPort {
                proto: 17,
                published: up,
                upstream: uecho_addr,
                netns: own,
            },
        ];
        let mut relays = Relays::default();
        relays.sync(&want);
        assert_eq!(relays.open().len(), 2);

        let mut c = tokio::net::TcpStream::connect(("127.0.0.1", tp))
            .await
            .unwrap();
        c.write_all(b"ping\n").await.unwrap();
        let mut got = [0u8; 5];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping\n");

        let u = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        u.send_to(b"hello", ("127.0.0.1", up)).await.unwrap();
        let mut b = [0u8; 16];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), u.recv_from(&mut b))
            .await
            .expect("udp reply")
            .unwrap();
        assert_eq!(&b[..n], b"hello");

        relays.sync(&[]);
        assert!(relays.open().is_empty());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", tp))
                .await
                .is_err(),
            "a stopped relay no longer listens"
        );
    }
}

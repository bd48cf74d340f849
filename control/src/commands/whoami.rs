//! `shoal whoami [--port N] [--udp]`: the demo workload Swarm tutorials use
//! (the whoami image), built in because Shoal runs processes, not images.
//! It answers each HTTP request (or, with --udp, each datagram; without
//! HTTP, a TCP line) with plain text, one `Key: value` per line:
//! `Hostname`, `Task`, one `IP` per address, `RemoteAddr` (the client as the
//! task sees it, which is what the routing mesh must preserve).
//! The HTTP handling is a few lines by hand: one request per connection,
//! answered and closed; a server crate would be more than the job.

use std::net::SocketAddr;

use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

#[derive(Args, Debug)]
pub struct WhoamiArgs {
    #[arg(long, default_value_t = 80)]
    port: u16,
    /// Answer UDP datagrams instead of HTTP.
    #[arg(long)]
    udp: bool,
}

fn text(remote: SocketAddr) -> String {
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out = format!("Hostname: {host}\n");
    if let Ok(task) = std::env::var("SHOAL_TASK_NAME") {
        out.push_str(&format!("Task: {task}\n"));
    }
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            if let Some(sin) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()) {
                out.push_str(&format!("IP: {}\n", sin.ip()));
            }
        }
    }
    out.push_str(&format!("RemoteAddr: {remote}\n"));
    out
}

pub fn run(a: WhoamiArgs) -> anyhow::Result<()> {
    super::runtime()?.block_on(async move {
        if a.udp {
            let sock = UdpSocket::bind(("0.0.0.0", a.port)).await?;
            let mut buf = [0u8; 2048];
            loop {
                let (_, from) = sock.recv_from(&mut buf).await?;
                let _ = sock.send_to(text(from).as_bytes(), from).await;
            }
        }
        let listener = TcpListener::bind(("0.0.0.0", a.port)).await?;
        // SIGTERM (a task being stopped): stop accepting, finish the requests
        // already accepted, exit 0, as a well-behaved server does; dying at
        // once would reset them.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut inflight = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (s, remote) = accepted?;
                    inflight.spawn(answer(s, remote));
                }
                Some(_) = inflight.join_next(), if !inflight.is_empty() => {}
                _ = term.recv() => break,
            }
        }
        drop(listener);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while inflight.join_next().await.is_some() {}
        })
        .await;
        Ok(())
    })
}

/// One connection: read the request head (or a line), answer, close.
async fn answer(mut s: tokio::net::TcpStream, remote: SocketAddr) {
    let mut buf = vec![0u8; 8192];
    let mut n = 0;
    while n < buf.len() {
        match tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf[n..])).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(k)) => n += k,
        }
        let head = &buf[..n];
        if head.windows(4).any(|w| w == b"\r\n\r\n")
            || (!head.starts_with(b"GET") && !head.starts_with(b"HEAD") && head.contains(&b'\n'))
        {
            break;
        }
    }
    let body = text(remote);
    let reply = if buf[..n].starts_with(b"GET") || buf[..n].starts_with(b"HEAD") {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    } else {
        body
    };
    let _ = s.write_all(reply.as_bytes()).await;
    let _ = s.shutdown().await;
}

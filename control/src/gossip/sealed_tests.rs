//! Real gossip (SWIM and the tables) over the sealing transport on 127.0.0.1: members with the
//! key converge (states bigger than a datagram included, so fragments
//! travel), a node with another key, one in clear and one without a key
//! never get in, and each refusal is counted by its reason.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::gossip::keys::GossipKeys;
use crate::gossip::{Gossip, GossipConfig};

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(in crate::gossip) async fn node(
    name: &str,
    seed: Option<SocketAddr>,
    keys: GossipKeys,
    kv: usize,
) -> (Gossip, SocketAddr) {
    let addr = next_addr();
    let g = start(name, addr, 1, seed, keys, kv, None).await.unwrap();
    (g, addr)
}

/// A loopback address of its own on the one gossip port of this process
/// (every node of a swarm gossips on the same port: the tables address
/// peers by IP).
pub(in crate::gossip) fn next_addr() -> SocketAddr {
    static PORT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    (
        [127, 1, (n / 250) as u8, (n % 250) as u8 + 1],
        *PORT.get_or_init(free_port),
    )
        .into()
}

/// A node process at `addr` (a restart: the same address, a later
/// generation) with `kv` endpoint records, remembering its members in
/// `peers_file`.
pub(in crate::gossip) async fn start(
    name: &str,
    addr: SocketAddr,
    generation: u64,
    seed: Option<SocketAddr>,
    keys: GossipKeys,
    kv: usize,
    peers_file: Option<std::path::PathBuf>,
) -> anyhow::Result<Gossip> {
    let cfg = GossipConfig {
        node: name.into(),
        generation,
        advertise: addr,
        listen: addr,
        seeds: seed.iter().map(|s| s.to_string()).collect(),
        cluster_id: "c".into(),
        interval: Duration::from_millis(50),
        keys: Arc::new(keys),
        peers_file,
    };
    // Random values: 3000 records outgrow a datagram (deltas go as fragments).
    let initial = (0..kv)
        .map(|i| {
            let noise: String = crate::gossip::seal::random_bytes::<32>()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            (
                format!("ep:4000:10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
                noise,
            )
        })
        .collect();
    Gossip::start(&cfg, initial).await
}

pub(in crate::gossip) async fn sees(g: &Gossip, name: &str, endpoints: usize) -> bool {
    g.members()
        .await
        .iter()
        .any(|m| m.node == name && m.live && m.endpoints == endpoints)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_holders_of_the_key_gossip_and_refusals_are_counted() {
    let k = [7u8; 32];
    let (a, a_addr) = node("a", None, GossipKeys::new(false, Some(k), None), 3000).await;
    let (b, _) = node("b", Some(a_addr), GossipKeys::new(false, Some(k), None), 3).await;
    let t0 = Instant::now();
    while !(sees(&b, "a", 3000).await && sees(&a, "b", 3).await) {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no convergence: {:?}",
            b.members().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // a's state took more than one datagram; nothing was refused.
    let t = a.counters.traffic();
    assert!(t.sent_bytes > 65_507, "{t:?}");
    assert!(
        a.wire_refused().iter().all(|(_, n)| *n == 0),
        "{:?}",
        a.wire_refused()
    );

    // Another key (same id 0), plaintext, and no key at all.
    let (c, _) = node(
        "c",
        Some(a_addr),
        GossipKeys::new(false, Some([8; 32]), None),
        1,
    )
    .await;
    let (d, _) = node("d", Some(a_addr), GossipKeys::new(true, None, None), 1).await;
    let (e, e_addr) = node("e", Some(a_addr), GossipKeys::new(false, None, None), 1).await;
    // A member that also knows e's address: e refuses its datagrams.
    let (_f, _) = node("f", Some(e_addr), GossipKeys::new(false, Some(k), None), 1).await;
    let count = |g: &Gossip, r: &str| {
        g.wire_refused()
            .into_iter()
            .find(|(k, _)| *k == r)
            .map_or(0, |(_, n)| n)
    };
    let t0 = Instant::now();
    while count(&a, "open_failed") == 0 || count(&a, "malformed") == 0 || count(&e, "no_key") == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{:?}",
            a.wire_refused()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let names: Vec<String> = a.members().await.into_iter().map(|m| m.node).collect();
    assert!(
        !names.iter().any(|n| ["c", "d", "e"].contains(&n.as_str())),
        "outsiders got in: {names:?}"
    );
    assert!(!sees(&c, "a", 3000).await && !sees(&d, "a", 3000).await);
    // The keyless node sent nothing at all.
    assert_eq!(e.counters.sent_datagrams.load(Ordering::Relaxed), 0);
    assert!(e.members().await.len() == 1, "{:?}", e.members().await);
}

/// A key holder's table messages are still judged by what they say: bytes
/// that are no netdb message, and records from a node membership does not
/// list on the network, are refused and counted, and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_holder_s_bad_table_messages_are_refused_and_counted() {
    use crate::gossip::netdb::{Key, Msg, Origin, Update, WireRec};
    use crate::gossip::sealed::TABLES_CHANNEL;
    let k = [9u8; 32];
    let keys = GossipKeys::new(false, Some(k), None);
    let (a, a_addr) = node("a", None, GossipKeys::new(false, Some(k), None), 2).await;
    let count = |r: &str| {
        a.wire_refused()
            .into_iter()
            .find(|(n, _)| *n == r)
            .map_or(0, |(_, n)| n)
    };
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let sealer = crate::gossip::seal::Sealer::new();
    let state = keys.current();
    let key = state.seal_key().unwrap();
    let forged = Msg::Rumors {
        vni: 4000,
        updates: vec![Update {
            origin: Origin {
                addr: "127.9.9.9".parse().unwrap(),
                generation: 1,
            },
            rec: WireRec {
                key: Key::Ep("10.0.0.99".parse().unwrap()),
                version: 1,
                value: Some(b"{}".to_vec()),
            },
        }],
    };
    for plain in [vec![0xff; 40], forged.encode()] {
        for d in sealer.seal(key, TABLES_CHANNEL, &plain).unwrap() {
            sock.send_to(&d, a_addr).unwrap();
        }
    }
    let t0 = Instant::now();
    while count("table_malformed") == 0 || count("table_not_member") == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{:?}",
            a.wire_refused()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(a.peers().await.is_empty(), "nothing was taken");
}

/// The gossip socket holds several of the largest table deltas unread (a
/// receiver a moment late lost fragments of one every time with Linux's
/// default buffer).
#[tokio::test]
async fn the_gossip_socket_holds_several_of_the_largest_deltas() {
    use nix::sys::socket::{getsockopt, sockopt};
    let hub = super::Hub::bind(
        "127.0.0.1:0".parse().unwrap(),
        "c",
        Arc::new(GossipKeys::new(false, Some([1; 32]), None)),
        Default::default(),
    )
    .await
    .unwrap();
    let held = getsockopt(&*hub.real, sockopt::RcvBuf).unwrap();
    // Linux reports twice what was set (its bookkeeping share).
    assert!(
        held >= 4 * crate::gossip::netdb::MAX_MESSAGE,
        "receive buffer {held} bytes"
    );
}

//! Three managers in one process: replication, fail-over, recovery, and
//! the control port refusing strangers.

use std::time::{Duration, Instant};

use super::*;
use crate::control_port::tls::Identity;
use crate::pki::ClusterCa;
use crate::wire::{Availability, NodeRecord, NodeState, Role};

fn identity(ca: &ClusterCa, id: u64) -> Identity {
    let (cert_pem, key_pem) = ca
        .issue(
            &format!("m{id}"),
            Role::Manager,
            "127.0.0.1".parse().unwrap(),
            crate::pki::tests::DAY,
        )
        .unwrap();
    Identity {
        ca_pem: ca.cert_pem.clone(),
        cert_pem,
        key_pem,
    }
}

async fn start(ca: &ClusterCa, id: u64, dir: &Path) -> Manager {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    Manager::start(
        id,
        &format!("m{id}"),
        l,
        dir,
        crate::control_port::live::LiveTls::new(&identity(ca, id)).unwrap(),
        Router::new(),
        Options::default(),
    )
    .await
    .unwrap()
}

fn node(id: &str, last: u8) -> Command {
    Command::NodeAdd {
        node: NodeRecord {
            ipsec: Default::default(),
            cert_not_after_ms: None,
            cert_issuer: None,
            id: id.into(),
            raft_id: None,
            hostname: id.into(),
            addr: std::net::Ipv4Addr::new(198, 18, 0, last),
            role: Role::Worker,
            availability: Availability::Active,
            labels: Default::default(),
            state: NodeState::Ready,
            version: 0,
        },
    }
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Three managers on loopback over mutual TLS: replication, writes
/// forwarded by followers, leader failover, and state recovered from
/// disk after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_managers_replicate_fail_over_and_recover() {
    let base = std::env::temp_dir().join(format!("shoal-mgr-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let ca = ClusterCa::generate("c").unwrap();
    let mut ms = vec![];
    for id in 1..=3u64 {
        ms.push(start(&ca, id, &base.join(id.to_string())).await);
    }
    ms[0].initialize().await.unwrap();
    until("n1 leads", || ms[0].leader() == Some(1)).await;
    let (a2, a3) = (ms[1].addr.clone(), ms[2].addr.clone());
    for (raft_id, addr) in [(2, a2), (3, a3)] {
        ms[0]
            .leader_op(LeaderOp::AddVoter { raft_id, addr })
            .await
            .unwrap();
    }
    assert!(matches!(
        ms[0].write(node("a", 1)).await.unwrap(),
        CommandResult::Node(_)
    ));
    until("replicated", || {
        ms.iter().all(|m| m.state().nodes.contains_key("a"))
    })
    .await;
    // A refused command is a result, not a failure of Raft.
    assert!(matches!(
        ms[0].write(node("a", 9)).await.unwrap(),
        CommandResult::Error(_)
    ));
    // A follower forwards writes to the leader and has applied them
    // when it answers.
    assert!(matches!(
        ms[1].write(node("b", 2)).await.unwrap(),
        CommandResult::Node(_)
    ));
    assert!(ms[1].state().nodes.contains_key("b"));

    // The leader goes away: the others elect a new one and keep working.
    let old = ms.remove(0);
    let old_dir = base.join("1");
    old.shutdown().await.unwrap();
    until("new leader", || {
        ms[0].leader().is_some_and(|l| l != 1) && ms[0].leader() == ms[1].leader()
    })
    .await;
    assert!(matches!(
        ms[0].write(node("c", 3)).await.unwrap(),
        CommandResult::Node(_)
    ));
    until("c everywhere", || {
        ms.iter().all(|m| m.state().nodes.contains_key("c"))
    })
    .await;

    // The old leader's state survives on its disk.
    let back = start(&ca, 1, &old_dir).await;
    assert!(
        back.state().nodes.contains_key("a"),
        "state recovered from disk"
    );
    for m in ms {
        m.shutdown().await.unwrap();
    }
    back.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&base);
}

/// An entry bigger than axum's default body limit (2 MB) still reaches a
/// follower: before, the AppendEntries carrying it was refused, and with
/// two voters nothing could commit again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_of_megabytes_replicates() {
    let base = std::env::temp_dir().join(format!("shoal-mgr-big-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let ca = ClusterCa::generate("c").unwrap();
    let m1 = start(&ca, 1, &base.join("1")).await;
    let m2 = start(&ca, 2, &base.join("2")).await;
    m1.initialize().await.unwrap();
    until("m1 leads", || m1.leader() == Some(1)).await;
    m1.leader_op(LeaderOp::AddVoter {
        raft_id: 2,
        addr: m2.addr.clone(),
    })
    .await
    .unwrap();
    let Command::NodeAdd { mut node } = node("big", 7) else {
        unreachable!()
    };
    for i in 0..3000 {
        node.labels.insert(format!("k{i}"), "v".repeat(1000));
    }
    let cmd = Command::NodeAdd { node };
    assert!(serde_json::to_vec(&cmd).unwrap().len() > (2 << 20) + (512 << 10));
    assert!(matches!(
        m1.write(cmd).await.unwrap(),
        CommandResult::Node(_)
    ));
    until("the big entry on m2", || {
        m2.state().nodes.contains_key("big")
    })
    .await;
    m1.shutdown().await.unwrap();
    m2.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&base);
}

/// The control port's mutual TLS: no certificate reaches only the join
/// routes, another CA's certificate or a wrong pinned digest fails the
/// handshake, a worker certificate may not speak Raft.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_port_refuses_strangers() {
    use crate::control_port::client::request;
    use crate::control_port::tls::pinned_client;
    let base = std::env::temp_dir().join(format!("shoal-tls-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let ca = ClusterCa::generate("c").unwrap();
    let m = start(&ca, 1, &base).await;
    let ttl = Duration::from_secs(5);
    let post = |tls: Arc<ClientConfig>, path: &'static str| {
        let addr = m.addr.clone();
        async move { request(&tls, &addr, hyper::Method::POST, path, b"{}".to_vec(), ttl).await }
    };
    // Pinned by the right digest, no certificate: Raft is refused (401),
    // before the body is even parsed.
    let (status, body) = post(pinned_client(&ca.digest()).unwrap(), "/raft/vote")
        .await
        .unwrap();
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
    // Pinned by another CA's digest: the handshake fails.
    let other = ClusterCa::generate("c").unwrap();
    let e = post(pinned_client(&other.digest()).unwrap(), "/swarm/ca")
        .await
        .unwrap_err();
    assert!(e.connect && e.msg.contains("TLS"), "{e}");
    // A certificate of another CA: the handshake fails.
    let e = post(identity(&other, 9).client_config().unwrap(), "/raft/vote")
        .await
        .unwrap_err();
    assert!(
        e.msg.contains("TLS") || e.msg.contains("handshake") || !e.connect,
        "{e}"
    );
    // A worker certificate of this CA: no Raft.
    let (cert_pem, key_pem) = ca
        .issue(
            "w1",
            Role::Worker,
            "127.0.0.1".parse().unwrap(),
            crate::pki::tests::DAY,
        )
        .unwrap();
    let worker = Identity {
        ca_pem: ca.cert_pem.clone(),
        cert_pem,
        key_pem,
    };
    let (status, _) = post(worker.client_config().unwrap(), "/raft/append")
        .await
        .unwrap();
    assert_eq!(status, 403);
    m.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&base);
}

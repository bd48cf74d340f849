//! Real handshakes through a CA rotation: while the swarm moves from the
//! old root to the new, every node accepts every other whatever it holds
//! (an old certificate, a new one with the cross-signed root, trusting one
//! root or both), a joining node pins either root's digest; once the old
//! root is dropped, its certificates are refused.

use std::sync::Arc;
use std::time::Duration;

use axum::routing::post;
use axum::Router;
use tokio::net::TcpListener;

use crate::control_port::client::request;
use crate::control_port::live::LiveTls;
use crate::control_port::server::{serve, Authorize};
use crate::control_port::tls::{pinned_client, Identity};
use crate::pki::tests::DAY;
use crate::pki::ClusterCa;
use crate::wire::Role;

fn identity(signer: &ClusterCa, chain_extra: &str, trust: &[&ClusterCa]) -> Identity {
    let ip = "127.0.0.1".parse().unwrap();
    let (cert_pem, key_pem) = signer.issue("n", Role::Worker, ip, DAY).unwrap();
    Identity {
        ca_pem: trust.iter().map(|c| c.cert_pem.as_str()).collect(),
        cert_pem: format!("{cert_pem}{chain_extra}"),
        key_pem,
    }
}

async fn server(who: &Identity) -> String {
    let tls = LiveTls::new(who).unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let app = Router::new().route("/x", post(|| async { "ok" }));
    let allow: Authorize = Arc::new(|peer, _| {
        // Only an authenticated member gets an answer.
        peer.map(|_| ()).ok_or(crate::control_port::Refusal {
            status: axum::http::StatusCode::FORBIDDEN,
            msg: "no certificate".into(),
        })
    });
    tokio::spawn(serve(l, tls, app, allow));
    addr
}

async fn ok(client: Arc<tokio_rustls::rustls::ClientConfig>, addr: &str) -> bool {
    let ttl = Duration::from_secs(5);
    matches!(
        request(&client, addr, hyper::Method::POST, "/x", vec![], ttl).await,
        Ok((s, _)) if s.is_success()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_and_new_certificates_trust_each_other_until_the_old_root_goes() {
    let old = ClusterCa::generate("c1").unwrap();
    let (new, cross) = old.rotated().unwrap();
    let both = [&old, &new];
    // (who, its identity, whether it can prove the new root to a joining
    // node: only with a certificate of it and the new root in its chain;
    // the tokens pin the new root only once every node renewed.)
    let nodes = [
        ("not yet told", identity(&old, "", &[&old]), false),
        ("trusts both", identity(&old, "", &both), false),
        ("renewed", identity(&new, &cross, &both), true),
        // A node that renewed before it heard of the new root.
        ("renewed, old trust", identity(&new, &cross, &[&old]), false),
    ];
    for (s_name, s, proves_new) in &nodes {
        let addr = server(s).await;
        for (c_name, c, _) in &nodes {
            assert!(
                ok(c.client_config().unwrap(), &addr).await,
                "{c_name} -> {s_name}"
            );
        }
        // A node joining with a token of either root pins its digest.
        for root in both {
            let pinned = pinned_client(&root.digest()).unwrap();
            let ttl = Duration::from_secs(5);
            let r = request(&pinned, &addr, hyper::Method::POST, "/x", vec![], ttl).await;
            let reached = matches!(&r, Ok((s, _)) if s.as_u16() == 403);
            let is_new = std::ptr::eq(root, &new);
            assert_eq!(
                reached,
                !is_new || *proves_new,
                "token of new root {is_new} -> {s_name}"
            );
        }
    }
    // Finished: the new root alone. Renewed nodes still meet; a
    // certificate of the old root is refused both ways.
    let done = identity(&new, &cross, &[&new]);
    let stale = identity(&old, "", &[&old]);
    let addr = server(&done).await;
    assert!(ok(identity(&new, "", &[&new]).client_config().unwrap(), &addr).await);
    assert!(ok(done.client_config().unwrap(), &addr).await);
    assert!(!ok(stale.client_config().unwrap(), &addr).await);
    let stale_addr = server(&stale).await;
    assert!(!ok(done.client_config().unwrap(), &stale_addr).await);
}

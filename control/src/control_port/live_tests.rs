//! Real handshakes on 127.0.0.1 against a control port served with
//! `LiveTls`: a member's certificate gets in; an expired one, a removed
//! node's, another CA's and bytes that are not TLS are refused, each
//! counted by its reason, and the client learns why from the alert; a
//! renewed certificate applies to the next handshake.

use std::sync::Arc;
use std::time::Duration;

use axum::routing::post;
use axum::Router;
use tokio::net::TcpListener;

use crate::control_port::client::{request, Failure};
use crate::control_port::live::LiveTls;
use crate::control_port::server::{serve, Authorize};
use crate::control_port::tls::Identity;
use crate::pki::tests::DAY;
use crate::pki::ClusterCa;
use crate::wire::Role;

fn identity(ca: &ClusterCa, id: &str, validity: Duration) -> Identity {
    let ip = "127.0.0.1".parse().unwrap();
    let (cert_pem, key_pem) = ca.issue(id, Role::Worker, ip, validity).unwrap();
    Identity {
        ca_pem: ca.cert_pem.clone(),
        cert_pem,
        key_pem,
    }
}

async fn call(who: &Identity, addr: &str) -> Result<(), Failure> {
    let tls = who.client_config().unwrap();
    let ttl = Duration::from_secs(5);
    let (status, _) = request(&tls, addr, hyper::Method::POST, "/x", vec![], ttl).await?;
    assert!(status.is_success(), "{status}");
    Ok(())
}

fn count(tls: &LiveTls, reason: &str) -> u64 {
    tls.refusals().get(reason).copied().unwrap_or(0)
}

/// The count once it is `n`: the server counts after sending its alert, so
/// the client may learn of the refusal a moment before the count moves.
async fn counted(tls: &LiveTls, reason: &str, n: u64) -> u64 {
    for _ in 0..200 {
        if count(tls, reason) >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    count(tls, reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_certificates_are_counted_by_reason_and_the_client_learns_why() {
    let ca = ClusterCa::generate("c1").unwrap();
    let server_id = identity(&ca, "manager", DAY);
    let tls = LiveTls::new(&server_id).unwrap();
    tls.set_revoked(Arc::new(|id: &str| id == "removed"));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let app = Router::new().route("/x", post(|| async { "ok" }));
    let allow: Authorize = Arc::new(|_, _| Ok(()));
    tokio::spawn(serve(l, tls.clone(), app, allow));

    call(&identity(&ca, "member", DAY), &addr).await.unwrap();

    let removed = call(&identity(&ca, "removed", DAY), &addr)
        .await
        .unwrap_err();
    assert_eq!(removed.cert_refused, Some("revoked"), "{}", removed.msg);
    assert_eq!(counted(&tls, "revoked", 1).await, 1);

    let short = identity(&ca, "late", Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = call(&short, &addr).await.unwrap_err();
    assert_eq!(expired.cert_refused, Some("expired"), "{}", expired.msg);
    assert_eq!(counted(&tls, "expired", 1).await, 1);

    let other = ClusterCa::generate("c2").unwrap();
    let stranger = identity(&other, "member", DAY);
    // The stranger does not trust our server either: it fails on its own
    // side; its client certificate is what this test is about.
    let stranger = Identity {
        ca_pem: ca.cert_pem.clone(),
        ..stranger
    };
    let e = call(&stranger, &addr).await.unwrap_err();
    assert_eq!(e.cert_refused, Some("bad_certificate"), "{}", e.msg);
    assert_eq!(counted(&tls, "unknown_ca", 1).await, 1);

    // Not TLS at all.
    {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        let mut buf = vec![0; 64];
        let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
    }
    let t0 = std::time::Instant::now();
    while count(&tls, "malformed") == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{:?}",
            tls.refusals()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The server renews: the next handshake presents the new certificate,
    // and members still get in.
    let member = identity(&ca, "member", DAY);
    assert_eq!(served(&member, &addr).await, pem_der(&server_id.cert_pem));
    let renewed = identity(&ca, "manager", 2 * DAY);
    tls.reload(&renewed).unwrap();
    assert_eq!(served(&member, &addr).await, pem_der(&renewed.cert_pem));
    call(&member, &addr).await.unwrap();
}

fn pem_der(pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// The certificate the server presents to `who`.
async fn served(who: &Identity, addr: &str) -> Vec<u8> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name =
        rustls_pki_types::ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());
    let s = tokio_rustls::TlsConnector::from(who.client_config().unwrap())
        .connect(name, tcp)
        .await
        .unwrap();
    s.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

//! One request on the control port of another node, over mutual TLS.
//! Raft RPCs, forwarded writes, joins and node sessions all go through
//! here; a fresh connection per request keeps failure handling simple
//! (a dead peer costs one connect timeout, never a stale pooled socket).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;

use crate::wire::{ErrorKind, WireError};

/// Why a request failed; `connect` tells "could not reach" (the peer may be
/// down) from "reached, then failed".
#[derive(Debug)]
pub struct Failure {
    pub msg: String,
    pub connect: bool,
    /// The server's error, when it answered with one (its kind decides).
    pub error: Option<WireError>,
    /// The peer's certificate is not of the CA a join token pins.
    pub pin_mismatch: bool,
    /// The peer refused our certificate, and why ("expired", "revoked",
    /// "bad_certificate": the TLS alert it sent).
    pub cert_refused: Option<&'static str>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Failure {}

fn fail(msg: String, connect: bool) -> Failure {
    Failure {
        msg,
        connect,
        error: None,
        pin_mismatch: false,
        cert_refused: None,
    }
}

/// The alert a peer refused our certificate with, anywhere in `e`'s
/// sources (TLS 1.3 clients learn it at their first read, after the
/// handshake looked done).
fn cert_refused(e: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    use tokio_rustls::rustls::{AlertDescription as A, Error as R};
    let mut cur = Some(e);
    while let Some(err) = cur {
        let tls = err.downcast_ref::<R>().or_else(|| {
            err.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|i| i.downcast_ref::<R>())
        });
        if let Some(R::AlertReceived(a)) = tls {
            return match a {
                A::CertificateExpired => Some("expired"),
                A::CertificateRevoked => Some("revoked"),
                A::BadCertificate | A::UnknownCA | A::CertificateUnknown => Some("bad_certificate"),
                _ => None,
            };
        }
        cur = err.source();
    }
    None
}

impl Failure {
    /// The error as the local API passes it on: the server's own, else
    /// "unavailable" (the peer could not be reached or broke off).
    pub fn into_wire(self) -> WireError {
        self.error
            .unwrap_or_else(|| WireError::unavailable(self.msg))
    }
}

/// Sends one request to `addr` (`IP:PORT`), bounded by `ttl`. Any status is
/// returned with its body (the caller decodes errors).
pub async fn request(
    tls: &Arc<ClientConfig>,
    addr: &str,
    method: hyper::Method,
    path: &str,
    body: Vec<u8>,
    ttl: Duration,
) -> Result<(hyper::StatusCode, Bytes), Failure> {
    let sock: SocketAddr = addr
        .parse()
        .map_err(|_| fail(format!("bad control address {addr:?} (want IP:PORT)"), true))?;
    let work = async {
        let tcp = tokio::net::TcpStream::connect(sock)
            .await
            .map_err(|e| fail(format!("cannot reach {addr}: {e}"), true))?;
        let _ = tcp.set_nodelay(true);
        let stream = TlsConnector::from(tls.clone())
            .connect(ServerName::IpAddress(sock.ip().into()), tcp)
            .await
            .map_err(|e| Failure {
                pin_mismatch: super::tls::is_pin_mismatch(&e),
                cert_refused: cert_refused(&e),
                ..fail(format!("TLS with {addr}: {e}"), true)
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| fail(format!("handshake {addr}: {e}"), true))?;
        let conn = tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "shoal-manager")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| fail(e.to_string(), false))?;
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                // A refused certificate's alert is read by the connection
                // task (TLS 1.3 clients finish their handshake first).
                let why = match tokio::time::timeout(Duration::from_secs(1), conn).await {
                    Ok(Ok(Err(c))) => cert_refused(&c),
                    _ => None,
                };
                let refused = cert_refused(&e).or(why);
                let msg = match refused {
                    Some(r) => format!("{addr} refused this node's certificate ({r})"),
                    None => format!("{addr}{path}: {e:#}"),
                };
                return Err(Failure {
                    cert_refused: refused,
                    ..fail(msg, false)
                });
            }
        };
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| fail(format!("{addr}{path}: {e}"), false))?;
        Ok((status, body))
    };
    tokio::time::timeout(ttl, work)
        .await
        .unwrap_or_else(|_| Err(fail(format!("{addr}{path}: timed out"), false)))
}

/// A JSON call: success decodes the reply, any other status becomes the
/// error text the server sent (`{"error": ...}`) or the status.
pub async fn call<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
    tls: &Arc<ClientConfig>,
    addr: &str,
    path: &str,
    req: &Req,
    ttl: Duration,
) -> Result<Resp, Failure> {
    let body = serde_json::to_vec(req).map_err(|e| fail(e.to_string(), false))?;
    let (status, bytes) = request(tls, addr, hyper::Method::POST, path, body, ttl).await?;
    if !status.is_success() {
        let error = serde_json::from_slice::<WireError>(&bytes)
            .map(|mut e| {
                // An answer without a kind: the status tells.
                if e.kind == ErrorKind::Internal && status.as_u16() != 500 {
                    e.kind = ErrorKind::from_http_status(status.as_u16());
                }
                e
            })
            .unwrap_or_else(|_| {
                WireError::new(
                    ErrorKind::from_http_status(status.as_u16()),
                    format!("{addr}{path}: HTTP {status}"),
                )
            });
        return Err(Failure {
            msg: error.message.clone(),
            connect: false,
            error: Some(error),
            pin_mismatch: false,
            cert_refused: None,
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| fail(format!("{addr}{path}: bad reply: {e}"), false))
}

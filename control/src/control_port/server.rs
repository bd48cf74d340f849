//! The control port's accept loop: a TLS handshake per connection (bounded,
//! so a silent client cannot hold a task forever; refusals counted and a
//! refused certificate logged in one line), the peer's identity
//! read from its certificate, and the authorisation policy applied to each
//! request before the router sees it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::{debug, warn};

use super::live::{refusal_reason, LiveTls};
use super::tls::{peer_id, PeerId};
use super::Refusal;

/// Decides, before the request is read, whether `peer` may call `path`.
pub type Authorize = Arc<dyn Fn(Option<&PeerId>, &str) -> Result<(), Refusal> + Send + Sync>;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn serve(listener: TcpListener, tls: Arc<LiveTls>, app: Router, authorize: Authorize) {
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                debug!("control port accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        // The certificate current now (a renewal applies from here on).
        let acceptor = TlsAcceptor::from(tls.server());
        let (tls, app, authorize) = (tls.clone(), app.clone(), authorize.clone());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    let reason = refusal_reason(&e);
                    tls.refused.count(reason);
                    if reason == "malformed" {
                        // Not TLS, or broken off: anyone can send that.
                        debug!(%remote, "control port: TLS handshake failed: {e}");
                    } else {
                        warn!(%remote, reason, "control port: refused a certificate: {e}");
                    }
                    return;
                }
                Err(_) => {
                    tls.refused.count("timeout");
                    debug!(%remote, "control port: TLS handshake timed out");
                    return;
                }
            };
            let peer = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| peer_id(c));
            let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                let verdict = authorize(peer.as_ref(), req.uri().path());
                if let Some(p) = &peer {
                    req.extensions_mut().insert(p.clone());
                }
                let app = app.clone();
                async move {
                    match verdict {
                        Ok(()) => app.oneshot(req).await,
                        Err(r) => {
                            Ok::<Response, Infallible>((r.status, Json(r.error())).into_response())
                        }
                    }
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

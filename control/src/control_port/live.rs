//! The control port's TLS as it is now: a node's certificate renews, and
//! the managers' list of removed nodes grows, while connections come and
//! go. Each handshake takes the configs current at its start (open
//! connections are left alone), so a renewal drops no session.
//!
//! Managers refuse, in the handshake itself, a certificate of a node the
//! swarm removed (`ClusterInfo::revoked`), expired or not; every refused
//! handshake is counted by its reason.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rustls_pki_types::{CertificateDer, UnixTime};
use tokio_rustls::rustls::client::danger::HandshakeSignatureValid;
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::{
    self, CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig,
    SignatureScheme,
};

use super::tls::{peer_id, Identity, TlsError};

/// Whether a node id is revoked (a manager reads its replicated state).
pub type Revoked = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Why handshakes on the control port failed, as counted.
pub const REFUSALS: [&str; 6] = [
    "expired",
    "revoked",
    "unknown_ca",
    "bad_certificate",
    "malformed",
    "timeout",
];

/// Refused handshakes by reason (`REFUSALS`' order).
#[derive(Default)]
pub struct Refused([AtomicU64; REFUSALS.len()]);

impl Refused {
    pub fn count(&self, reason: &str) {
        if let Some(i) = REFUSALS.iter().position(|r| *r == reason) {
            self.0[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn get(&self) -> Vec<(&'static str, u64)> {
        REFUSALS
            .iter()
            .zip(&self.0)
            .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
            .collect()
    }
}

/// The reason a handshake failed with `e`: what the peer presented
/// (expired, revoked, another CA's) or that it spoke no TLS at all.
pub fn refusal_reason(e: &std::io::Error) -> &'static str {
    let Some(r) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return "malformed";
    };
    match r {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
            CertificateError::Revoked => "revoked",
            CertificateError::UnknownIssuer | CertificateError::BadSignature => "unknown_ca",
            _ => "bad_certificate",
        },
        _ => "malformed",
    }
}

/// A node's control-port TLS, swapped whole when its certificate changes.
pub struct LiveTls {
    current: RwLock<(Arc<ServerConfig>, Arc<ClientConfig>)>,
    /// Set by a manager (its replicated state); workers serve nothing.
    revoked: Arc<RwLock<Option<Revoked>>>,
    pub refused: Refused,
}

impl LiveTls {
    pub fn new(identity: &Identity) -> Result<Arc<Self>, TlsError> {
        let revoked: Arc<RwLock<Option<Revoked>>> = Arc::default();
        let current = RwLock::new(configs(identity, &revoked)?);
        Ok(Arc::new(Self {
            current,
            revoked,
            refused: Refused::default(),
        }))
    }

    /// From the next handshake on, `identity` (a renewed certificate).
    pub fn reload(&self, identity: &Identity) -> Result<(), TlsError> {
        let c = configs(identity, &self.revoked)?;
        *self.current.write().expect("tls lock") = c;
        Ok(())
    }

    /// Which node ids a manager refuses at the handshake.
    pub fn set_revoked(&self, revoked: Revoked) {
        *self.revoked.write().expect("revoked lock") = Some(revoked);
    }

    pub fn server(&self) -> Arc<ServerConfig> {
        self.current.read().expect("tls lock").0.clone()
    }

    pub fn client(&self) -> Arc<ClientConfig> {
        self.current.read().expect("tls lock").1.clone()
    }

    /// The counts, every reason listed.
    pub fn refusals(&self) -> BTreeMap<String, u64> {
        self.refused
            .get()
            .into_iter()
            .map(|(r, n)| (r.to_string(), n))
            .collect()
    }
}

fn configs(
    identity: &Identity,
    revoked: &Arc<RwLock<Option<Revoked>>>,
) -> Result<(Arc<ServerConfig>, Arc<ClientConfig>), TlsError> {
    let inner = identity.client_verifier()?;
    let verifier = Arc::new(NotRevoked {
        inner,
        revoked: revoked.clone(),
    });
    Ok((
        identity.server_config_with(verifier)?,
        identity.client_config()?,
    ))
}

/// The cluster CA's verifier, and then: not a removed node's certificate.
struct NotRevoked {
    inner: Arc<dyn ClientCertVerifier>,
    revoked: Arc<RwLock<Option<Revoked>>>,
}

impl std::fmt::Debug for NotRevoked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotRevoked")
            .field("inner", &self.inner)
            .finish()
    }
}

impl ClientCertVerifier for NotRevoked {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let revoked = self.revoked.read().expect("revoked lock").clone();
        if let (Some(is_revoked), Some(peer)) = (revoked, peer_id(end_entity)) {
            if is_revoked(&peer.node_id) {
                return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
            }
        }
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
#[path = "live_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "rotation_tests.rs"]
mod rotation_tests;

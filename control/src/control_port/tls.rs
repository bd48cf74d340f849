//! Mutual TLS for the control port (rustls with the ring provider).
//!
//! Every node holds a certificate of the cluster CA (`DATA_DIR/node.crt`,
//! `node.key`, `ca.crt`); its subject names the node (CN = node id) and its
//! role (OU = `swarm-manager` | `swarm-worker`). Servers ask every client for
//! a certificate: one not signed by the cluster CA fails the handshake, and
//! a client without one reaches only the join routes (the token proves it).
//! A joining node has no CA yet: it pins the CA by the token's digest inside
//! the handshake (`pinned_client`).

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use thiserror::Error;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{self, CryptoProvider};
use tokio_rustls::rustls::server::danger::ClientCertVerifier;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{
    self, client::WebPkiServerVerifier, ClientConfig, DigitallySignedStruct, RootCertStore,
    ServerConfig, SignatureScheme,
};

use crate::pki::{digest_of_der, role_of_ou};
use crate::wire::Role;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("{0}: {1}")]
    Pem(&'static str, String),
    #[error("cannot read {0}: {1}")]
    Io(String, std::io::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("TLS verifier: {0}")]
    Verifier(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(crypto::ring::default_provider())
}

/// Who is on the other end of a control connection, from its verified
/// certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerId {
    pub node_id: String,
    pub role: Role,
    /// The name of the root that signed it (during a CA rotation the
    /// leader counts the nodes on the new root by it).
    pub issuer: String,
}

/// Reads the node id (CN) and role (OU) out of a certificate the handshake
/// has already verified against the cluster CA.
pub fn peer_id(der: &[u8]) -> Option<PeerId> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let cn = subject.iter_common_name().next()?.as_str().ok()?;
    let ou = subject.iter_organizational_unit().next()?.as_str().ok()?;
    Some(PeerId {
        node_id: cn.to_string(),
        role: role_of_ou(ou)?,
        issuer: cert.issuer().to_string(),
    })
}

/// A node's TLS identity: its certificate and key, and the cluster CA.
/// During a CA rotation `ca_pem` holds both roots, and `cert_pem` a
/// certificate of the new root followed by the new root cross-signed by
/// the old one (so nodes still on the old root alone accept it).
#[derive(Clone)]
pub struct Identity {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Every certificate of a PEM bundle, in order.
fn certs_of(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(what, e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Pem(what, "no certificate".into()));
    }
    Ok(certs)
}

impl Identity {
    pub const CA: &'static str = "ca.crt";
    pub const CERT: &'static str = "node.crt";
    pub const KEY: &'static str = "node.key";

    pub fn load(dir: &Path) -> Result<Self, TlsError> {
        let read = |f: &str| {
            let p = dir.join(f);
            std::fs::read_to_string(&p).map_err(|e| TlsError::Io(p.display().to_string(), e))
        };
        Ok(Self {
            ca_pem: read(Self::CA)?,
            cert_pem: read(Self::CERT)?,
            key_pem: read(Self::KEY)?,
        })
    }

    /// Writes the three files (the key mode 0600).
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::write(dir.join(Self::CA), &self.ca_pem)?;
        std::fs::write(dir.join(Self::CERT), &self.cert_pem)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(dir.join(Self::KEY))?;
        std::io::Write::write_all(&mut f, self.key_pem.as_bytes())
    }

    pub fn remove(dir: &Path) {
        for f in [Self::CA, Self::CERT, Self::KEY] {
            let _ = std::fs::remove_file(dir.join(f));
        }
    }

    /// This node's own id and role, as its certificate states them.
    #[cfg(test)]
    pub fn me(&self) -> Result<PeerId, TlsError> {
        let der = CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .map_err(|e| TlsError::Pem("node certificate", e.to_string()))?;
        peer_id(&der).ok_or_else(|| TlsError::Pem("node certificate", "no CN/OU".into()))
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        for ca in certs_of(&self.ca_pem, "CA certificate")? {
            roots.add(ca)?;
        }
        Ok(Arc::new(roots))
    }

    /// The chain presented: the node certificate (and the cross-signed
    /// root, mid-rotation), then the roots (so a joining node can pin the
    /// CA by digest during the handshake).
    fn chain(&self) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
        let mut chain = certs_of(&self.cert_pem, "node certificate")?;
        chain.extend(certs_of(&self.ca_pem, "CA certificate")?);
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| TlsError::Pem("node key", e.to_string()))?;
        Ok((chain, key))
    }

    /// The cluster CA's client verifier: a certificate of another CA (or
    /// expired) fails the handshake, none at all is let through to the
    /// join routes.
    pub fn client_verifier(&self) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
        WebPkiClientVerifier::builder_with_provider(self.roots()?, provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))
    }

    /// Server side, with `verifier` deciding on client certificates.
    pub fn server_config_with(
        &self,
        verifier: Arc<dyn ClientCertVerifier>,
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let (chain, key) = self.chain()?;
        Ok(Arc::new(
            ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()?
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain, key)?,
        ))
    }

    /// Server side with the cluster CA's verifier alone.
    #[cfg(test)]
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        self.server_config_with(self.client_verifier()?)
    }

    /// Client side: verifies the server against the cluster CA and presents
    /// this node's certificate.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let (chain, key) = self.chain()?;
        Ok(Arc::new(
            ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()?
                .with_root_certificates(self.roots()?)
                .with_client_auth_cert(chain, key)?,
        ))
    }
}

/// A manager whose CA is not the one a join token pins: typed, so the
/// joining node can say so without reading the TLS library's words.
#[derive(Debug, thiserror::Error)]
#[error("the manager's CA does not match the join token's digest")]
pub struct PinMismatch;

/// Whether a failed TLS connect was refused by the join token's pin.
pub fn is_pin_mismatch(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|i| i.downcast_ref::<rustls::Error>())
        .is_some_and(|r| {
            matches!(r, rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o))
                if o.0.downcast_ref::<PinMismatch>().is_some())
        })
}

/// A client for a node that has only a join token: the server's chain must
/// carry a CA whose digest is the token's, and the server certificate must
/// be signed by it. No client certificate.
pub fn pinned_client(ca_digest: &str) -> Result<Arc<ClientConfig>, TlsError> {
    let verifier = PinnedCa {
        digest: ca_digest.to_string(),
        provider: provider(),
    };
    Ok(Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth(),
    ))
}

/// Pins the cluster CA by digest: the certificate verification itself is
/// rustls' WebPKI verifier, rooted at the pinned CA.
#[derive(Debug)]
struct PinnedCa {
    digest: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| digest_of_der(c) == self.digest)
            .ok_or_else(|| {
                rustls::Error::InvalidCertificate(rustls::CertificateError::Other(
                    rustls::OtherError(Arc::new(PinMismatch)),
                ))
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        // The rest may hold the cross-signed root: mid-rotation a manager's
        // certificate of the new root reaches a token's old root through it.
        let rest: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .filter(|c| digest_of_der(c) != self.digest)
            .cloned()
            .collect();
        inner.verify_server_cert(end_entity, &rest, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::ClusterCa;

    fn identity(ca: &ClusterCa, id: &str, role: Role) -> Identity {
        let (cert_pem, key_pem) = ca
            .issue(
                id,
                role,
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

    #[test]
    fn certificates_carry_node_id_and_role() {
        let ca = ClusterCa::generate("c1").unwrap();
        let me = identity(&ca, "abc", Role::Worker).me().unwrap();
        assert_eq!(
            me,
            PeerId {
                node_id: "abc".into(),
                role: Role::Worker,
                issuer: "CN=swarm-ca, O=c1".into(),
            }
        );
        let m = identity(&ca, "def", Role::Manager);
        assert_eq!(m.me().unwrap().role, Role::Manager);
        m.server_config().unwrap();
        m.client_config().unwrap();
        pinned_client(&ca.digest()).unwrap();
    }
}

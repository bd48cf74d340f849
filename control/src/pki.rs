//! The cluster's PKI: the CA that `swarm init`
//! creates, node certificates for mutual TLS on 2377, and Docker-shaped
//! join tokens, `SWMTKN-1-<CA digest>-<secret>`: a joining node pins the CA
//! by the digest and proves it holds the secret.

use std::fmt;
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use rand::Rng;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use sha2::{Digest, Sha256};

use crate::wire::Role;

const DIGEST_LEN: usize = 50;
const SECRET_LEN: usize = 25;

/// Base-36 digits of a big-endian number, left-padded to `width`. Written
/// by hand: Docker's token alphabet, a dozen lines, no crate needed.
fn base36(bytes: &[u8], width: usize) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut n = bytes.to_vec();
    let mut out = Vec::new();
    while n.iter().any(|b| *b != 0) {
        let mut rem = 0u32;
        for b in n.iter_mut() {
            let cur = (rem << 8) | *b as u32;
            *b = (cur / 36) as u8;
            rem = cur % 36;
        }
        out.push(DIGITS[rem as usize]);
    }
    while out.len() < width {
        out.push(b'0');
    }
    out.reverse();
    String::from_utf8(out).expect("ascii digits")
}

/// The cluster CA: self-signed, kept by the managers.
pub struct ClusterCa {
    pub cert_pem: String,
    pub key_pem: String,
    cert_der: Vec<u8>,
    cluster_id: String,
}

/// A root's subject: CN swarm-ca, O the cluster; a rotated root also has
/// an OU of its own, so two roots of one cluster never share a name (a
/// node tells which root signed its certificate by the issuer name).
fn ca_params(cluster_id: &str, unit: Option<&str>) -> Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "swarm-ca");
    if let Some(u) = unit {
        dn.push(DnType::OrganizationalUnitName, u);
    }
    dn.push(DnType::OrganizationName, cluster_id);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

impl ClusterCa {
    pub fn generate(cluster_id: &str) -> Result<Self> {
        let key = KeyPair::generate()?;
        let cert = ca_params(cluster_id, None)?.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
            cluster_id: cluster_id.to_string(),
        })
    }

    /// The next root of a CA rotation, and its cross-signed twin: the new
    /// root's name and key certified by this (old) root. A certificate of
    /// the new root, presented with the twin, chains to the old root too,
    /// so nodes that trust only the old root accept it while the swarm
    /// moves over (swarmkit's way).
    pub fn rotated(&self) -> Result<(ClusterCa, String)> {
        let key = KeyPair::generate()?;
        let unit = format!("swarm-ca-{:08x}", rand::rng().random::<u32>());
        let params = ca_params(&self.cluster_id, Some(&unit))?;
        let cert = params.self_signed(&key)?;
        let old_key = KeyPair::from_pem(&self.key_pem)?;
        let old = Issuer::from_ca_cert_pem(&self.cert_pem, &old_key)?;
        let cross = params.signed_by(&key, &old)?;
        let new = Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
            cluster_id: self.cluster_id.clone(),
        };
        Ok((new, cross.pem()))
    }

    pub fn from_pem(cluster_id: &str, cert_pem: &str, key_pem: &str) -> Result<Self> {
        let der = pem_der(cert_pem).context("CA certificate")?;
        KeyPair::from_pem(key_pem).context("CA key")?;
        Ok(Self {
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
            cert_der: der,
            cluster_id: cluster_id.into(),
        })
    }

    /// What join tokens carry: base-36 SHA-256 of the CA certificate (DER).
    pub fn digest(&self) -> String {
        digest_of_der(&self.cert_der)
    }

    /// A certificate and its new key for a node, both made here: only for
    /// the node that runs this CA (`swarm init`'s own) and tests; every
    /// other node sends a CSR (`sign`) and keeps its key.
    pub fn issue(
        &self,
        node_id: &str,
        role: Role,
        addr: Ipv4Addr,
        validity: Duration,
    ) -> Result<(String, String)> {
        let key = KeyPair::generate()?;
        let cert = self.sign_key(&key, node_id, role, addr, validity)?;
        Ok((cert, key.serialize_pem()))
    }

    /// Signs a node's CSR (PEM): its signature must verify (it holds the
    /// key); what it asks for is ignored: CN = node id, OU = the role the
    /// state gives it, O = cluster, SAN = its address, as `issue`; valid
    /// for `validity` from now.
    pub fn sign(
        &self,
        csr_pem: &str,
        node_id: &str,
        role: Role,
        addr: Ipv4Addr,
        validity: Duration,
    ) -> Result<String> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| anyhow::anyhow!("the certificate request is invalid: {e}"))?;
        self.sign_key(&csr.public_key, node_id, role, addr, validity)
    }

    /// A node certificate for `key`: CN = node id, OU = its role, O =
    /// cluster; usable as TLS client and server on its control address;
    /// a random serial; valid from a minute ago (clocks differ a little)
    /// for `validity`.
    fn sign_key(
        &self,
        key: &impl rcgen::PublicKeyData,
        node_id: &str,
        role: Role,
        addr: Ipv4Addr,
        validity: Duration,
    ) -> Result<String> {
        let ca_key = KeyPair::from_pem(&self.key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &ca_key)?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node_id);
        dn.push(DnType::OrganizationalUnitName, role_ou(role));
        dn.push(DnType::OrganizationName, self.cluster_id.as_str());
        p.distinguished_name = dn;
        p.subject_alt_names = vec![
            SanType::IpAddress(addr.into()),
            SanType::DnsName(node_id.try_into()?),
        ];
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::minutes(1);
        p.not_after = now + validity;
        let mut serial: [u8; 16] = rand::rng().random();
        serial[0] &= 0x7f; // a positive INTEGER
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let cert = p.signed_by(key, &issuer)?;
        Ok(cert.pem())
    }
}

/// When a certificate (PEM) starts and stops being valid.
pub fn validity_of_pem(cert_pem: &str) -> Result<(SystemTime, SystemTime)> {
    let der = pem_der(cert_pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| anyhow::anyhow!("not an X.509 certificate: {e}"))?;
    let at = |t: x509_parser::time::ASN1Time| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64)
    };
    let v = cert.validity();
    Ok((at(v.not_before), at(v.not_after)))
}

/// A node's new private key and the CSR it sends with it (both PEM): the
/// key never leaves the node.
pub fn new_key_and_csr() -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    let csr = CertificateParams::new(Vec::<String>::new())?
        .serialize_request(&key)?
        .pem()?;
    Ok((key.serialize_pem(), csr))
}

pub fn role_ou(role: Role) -> &'static str {
    match role {
        Role::Manager => "swarm-manager",
        Role::Worker => "swarm-worker",
    }
}

pub fn role_of_ou(ou: &str) -> Option<Role> {
    match ou {
        "swarm-manager" => Some(Role::Manager),
        "swarm-worker" => Some(Role::Worker),
        _ => None,
    }
}

/// The subject name of a PEM certificate (the first of a bundle).
pub fn subject_of_pem(cert_pem: &str) -> Result<String> {
    let der = pem_der(cert_pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| anyhow::anyhow!("not an X.509 certificate: {e}"))?;
    Ok(cert.subject().to_string())
}

/// The issuer name of a PEM certificate (the first of a chain): which
/// root signed a node's certificate.
pub fn issuer_of_pem(cert_pem: &str) -> Result<String> {
    let der = pem_der(cert_pem)?;
    issuer_of_der(&der)
}

pub fn issuer_of_der(der: &[u8]) -> Result<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| anyhow::anyhow!("not an X.509 certificate: {e}"))?;
    Ok(cert.issuer().to_string())
}

/// The digest of every certificate of a PEM bundle (a joining node looks
/// for its token's among the roots a manager trusts).
pub fn digests_of_bundle(pem: &str) -> Result<Vec<String>> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| {
            c.map(|d| digest_of_der(&d))
                .map_err(|e| anyhow::anyhow!("not a PEM certificate: {e}"))
        })
        .collect()
}

/// The digest of a PEM certificate (what a joining node compares with its
/// token before trusting a manager).
pub fn digest_of_pem(cert_pem: &str) -> Result<String> {
    Ok(digest_of_der(&pem_der(cert_pem)?))
}

pub fn digest_of_der(der: &[u8]) -> String {
    base36(&Sha256::digest(der), DIGEST_LEN)
}

fn pem_der(pem: &str) -> Result<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("not a PEM certificate: {e}"))?;
    Ok(der.to_vec())
}

/// `SWMTKN-1-<CA digest>-<secret>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinToken {
    pub ca_digest: String,
    pub secret: String,
}

impl JoinToken {
    pub fn generate(ca_digest: &str) -> Self {
        let bytes: [u8; 16] = rand::rng().random();
        Self {
            ca_digest: ca_digest.into(),
            secret: base36(&bytes, SECRET_LEN),
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.trim().split('-').collect();
        let ok = |p: &str, n: usize| {
            p.len() == n
                && p.bytes()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
        };
        match parts.as_slice() {
            ["SWMTKN", "1", d, s] if ok(d, DIGEST_LEN) && ok(s, SECRET_LEN) => Ok(Self {
                ca_digest: d.to_string(),
                secret: s.to_string(),
            }),
            ["SWMTKN", v, ..] if *v != "1" => bail!("unsupported join token version {v}"),
            _ => crate::fail!(
                Invalid,
                "invalid join token (want SWMTKN-1-<50 characters>-<25 characters>)"
            ),
        }
    }

    /// Constant-time comparison of the secrets.
    pub fn secret_matches(&self, other: &JoinToken) -> bool {
        let (a, b) = (self.secret.as_bytes(), other.secret.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SWMTKN-1-{}-{}", self.ca_digest, self.secret)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn base36_pads_and_converts() {
        assert_eq!(base36(&[0], 3), "000");
        assert_eq!(base36(&[35], 1), "z");
        assert_eq!(base36(&[1, 0], 1), "74"); // 256 = 7*36 + 4
        assert_eq!(base36(&[0xff; 32], 50).len(), 50);
    }

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let ca = ClusterCa::generate("c1").unwrap();
        let t = JoinToken::generate(&ca.digest());
        let s = t.to_string();
        assert!(
            s.starts_with("SWMTKN-1-") && s.len() == 9 + 50 + 1 + 25,
            "{s}"
        );
        assert_eq!(JoinToken::parse(&s).unwrap(), t);
        assert!(t.secret_matches(&JoinToken::parse(&s).unwrap()));
        assert!(!t.secret_matches(&JoinToken::generate(&ca.digest())));
        for bad in [
            "",
            "SWMTKN",
            "SWMTKN-2-abc-def",
            "SWMTKN-1-short-short",
            &s.to_uppercase(),
            &format!("{s}-x"),
        ] {
            assert!(JoinToken::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn digest_pins_the_ca() {
        let ca = ClusterCa::generate("c1").unwrap();
        let other = ClusterCa::generate("c1").unwrap();
        assert_eq!(ca.digest().len(), 50);
        assert_eq!(digest_of_pem(&ca.cert_pem).unwrap(), ca.digest());
        assert_ne!(ca.digest(), other.digest());
        let again = ClusterCa::from_pem("c1", &ca.cert_pem, &ca.key_pem).unwrap();
        assert_eq!(again.digest(), ca.digest());
    }

    #[test]
    fn issues_node_certificates() {
        let ca = ClusterCa::generate("c1").unwrap();
        let (cert, key) = ca
            .issue(
                "abcdefghijklmnopqrstuvwxy",
                Role::Manager,
                "198.18.0.1".parse().unwrap(),
                DAY,
            )
            .unwrap();
        assert!(cert.contains("BEGIN CERTIFICATE") && key.contains("PRIVATE KEY"));
        let (cert2, _) = ca
            .issue("zzz", Role::Worker, "198.18.0.2".parse().unwrap(), DAY)
            .unwrap();
        assert_ne!(
            digest_of_pem(&cert).unwrap(),
            digest_of_pem(&cert2).unwrap()
        );
        // Valid from a minute ago for the lifetime asked for.
        let (cert3, _) = ca
            .issue(
                "zzz",
                Role::Worker,
                "198.18.0.2".parse().unwrap(),
                Duration::from_secs(7200),
            )
            .unwrap();
        let (from, until) = validity_of_pem(&cert3).unwrap();
        let now = SystemTime::now();
        let ago = now.duration_since(from).unwrap().as_secs();
        let left = until.duration_since(now).unwrap().as_secs();
        assert!((55..=65).contains(&ago), "{ago}");
        assert!((7190..=7200).contains(&left), "{left}");
    }

    /// What a node's certificate says about its key and identity.
    fn subject_and_key(cert_pem: &str) -> (String, Vec<u8>) {
        use x509_parser::prelude::*;
        let der = pem_der(cert_pem).unwrap();
        let (_, c) = X509Certificate::from_der(&der).unwrap();
        (
            c.subject().to_string(),
            c.public_key().subject_public_key.data.to_vec(),
        )
    }

    #[test]
    fn a_csr_is_signed_for_its_key_with_the_identity_the_manager_gives() {
        let ca = ClusterCa::generate("c1").unwrap();
        let (key_pem, csr) = new_key_and_csr().unwrap();
        let cert = ca
            .sign(
                &csr,
                "node1",
                Role::Worker,
                "198.18.0.2".parse().unwrap(),
                DAY,
            )
            .unwrap();
        let (subject, key) = subject_and_key(&cert);
        assert!(
            subject.contains("CN=node1") && subject.contains("OU=swarm-worker"),
            "{subject}"
        );
        let kp = KeyPair::from_pem(&key_pem).unwrap();
        assert_eq!(
            key,
            kp.public_key_raw(),
            "the certificate is for the node's own key"
        );
        // A request asking for another identity gets the manager's anyway.
        let other = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["evil".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, "manager-x");
        p.distinguished_name
            .push(DnType::OrganizationalUnitName, "swarm-manager");
        let asks = p.serialize_request(&other).unwrap().pem().unwrap();
        let cert = ca
            .sign(
                &asks,
                "node2",
                Role::Worker,
                "198.18.0.3".parse().unwrap(),
                DAY,
            )
            .unwrap();
        let (subject, _) = subject_and_key(&cert);
        assert!(
            subject.contains("CN=node2") && subject.contains("OU=swarm-worker"),
            "{subject}"
        );
        // Garbage, and a request whose signature does not verify, are refused.
        assert!(ca
            .sign(
                "garbage",
                "n",
                Role::Worker,
                "198.18.0.4".parse().unwrap(),
                DAY
            )
            .is_err());
        // One base64 digit of the signature (the last full line) changed.
        let mut lines: Vec<String> = csr.lines().map(String::from).collect();
        let at = lines.len() - 3;
        let c = lines[at].remove(10);
        lines[at].insert(10, if c == 'A' { 'B' } else { 'A' });
        let bad_pem = lines.join("\n");
        let e = ca
            .sign(
                &bad_pem,
                "n",
                Role::Worker,
                "198.18.0.4".parse().unwrap(),
                DAY,
            )
            .unwrap_err();
        assert!(
            e.to_string().contains("the certificate request is invalid"),
            "{e}"
        );
    }
}

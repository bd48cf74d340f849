//! A node's certificate over time: it renews by itself at a random point
//! in the last half of its lifetime (as swarmkit's nodes do), with a new
//! key made here and a CSR sent over its current mutual-TLS session; the
//! new certificate applies from the next handshake (`LiveTls`), so no
//! session drops. A certificate the managers refuse (expired, revoked) is
//! said once in the log, in one line.

use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Result};
use rand::Rng;
use tracing::{info, warn};

use super::join::renew_identity;
use crate::agent::Agent;
use crate::control_port::client::call;
use crate::control_port::tls::Identity;
use crate::pki::{issuer_of_pem, validity_of_pem};
use crate::wire::{CertReply, CertRequest};

/// When this node's certificate expires, and when it renews.
#[derive(Clone, Debug)]
pub struct CertClock {
    pub not_after: SystemTime,
    pub renew_at: SystemTime,
    /// The name of the root that signed it (None: unreadable).
    pub issuer: Option<String>,
}

impl CertClock {
    /// A random point in [50%, 90%) of what is left of the lifetime (all
    /// of it for a certificate just signed; the start is backdated a
    /// minute for clock skew, so it is not counted): nodes spread their
    /// renewals, and each has time left to retry before expiry.
    pub fn of(identity: &Identity) -> Result<Self> {
        let (_, not_after) = validity_of_pem(&identity.cert_pem)?;
        let now = SystemTime::now();
        let left = not_after.duration_since(now).unwrap_or(Duration::ZERO);
        let at: f64 = rand::rng().random_range(0.5..0.9);
        Ok(Self {
            not_after,
            renew_at: now + left.mul_f64(at),
            issuer: issuer_of_pem(&identity.cert_pem).ok(),
        })
    }

    pub fn not_after_ms(&self) -> u64 {
        self.not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    pub fn due(&self) -> bool {
        SystemTime::now() >= self.renew_at
    }

    /// Renew now if this certificate outlives the swarm's lifetime from now
    /// (a shortened `--cert-expiry` applies at once, not months later).
    pub fn follow_expiry(&mut self, cert_expiry_ms: u64) {
        let limit = SystemTime::now() + Duration::from_millis(cert_expiry_ms);
        // A certificate signed a moment ago ends a little after `limit`.
        if self.not_after > limit + Duration::from_secs(5) && self.renew_at > SystemTime::now() {
            self.renew_at = SystemTime::now();
        }
    }

    /// Renew now if another root than the one signing now signed this
    /// certificate (a CA rotation is under way).
    pub fn follow_root(&mut self, signing: &str) {
        if self.issuer.as_deref() != Some(signing) && self.renew_at > SystemTime::now() {
            info!(
                root = signing,
                "the swarm's CA is rotating: renewing this node's certificate from the new root"
            );
            self.renew_at = SystemTime::now();
        }
    }
}

impl Agent {
    /// Renews this node's certificate if it is time; a failure is said
    /// and retried 5 s later.
    pub(super) async fn renew_if_due(&self) {
        let Err(e) = self.renew_now_if_due().await else {
            return;
        };
        warn!("renewing this node's certificate: {e:#}; retrying in 5 s");
        if let Some(s) = self.swarm.lock().await.as_mut() {
            s.cert.renew_at = SystemTime::now() + Duration::from_secs(5);
        }
    }

    /// Any manager that answers signs (the last leader first).
    async fn renew_now_if_due(&self) -> Result<()> {
        let (tls, managers, ca_pem) = {
            let g = self.swarm.lock().await;
            let Some(s) = g.as_ref() else { return Ok(()) };
            if !s.cert.due() {
                return Ok(());
            }
            let ca_pem = Identity::load(&self.data_dir)?.ca_pem;
            (s.tls.clone(), s.membership.managers.clone(), ca_pem)
        };
        let client = tls.client();
        let identity = renew_identity(ca_pem, |csr_pem| async move {
            let req = CertRequest { csr_pem };
            let mut last = anyhow!("no managers known");
            for addr in &managers {
                let ttl = Duration::from_secs(5);
                match call::<_, CertReply>(&client, addr, "/swarm/cert", &req, ttl).await {
                    Ok(c) => return Ok(c),
                    Err(f) => last = anyhow!("{addr}: {}", f.msg),
                }
            }
            Err(last)
        })
        .await?;
        let clock = CertClock::of(&identity)?;
        let mut g = self.swarm.lock().await;
        let Some(s) = g.as_mut() else { return Ok(()) };
        // Same role and id as before: the managers sign what the state says.
        identity.save(&self.data_dir)?;
        s.tls.reload(&identity)?;
        info!(
            expires = %humantime::format_rfc3339_seconds(clock.not_after),
            "node certificate renewed"
        );
        s.cert = clock;
        Ok(())
    }

    /// Says once, in one line, that the managers refuse this node's
    /// certificate, and why; `None`: they accept it again.
    pub(super) async fn note_cert_refusal(&self, reason: Option<&str>) {
        let mut g = self.swarm.lock().await;
        let Some(s) = g.as_mut() else { return };
        if s.cert_refused.as_deref() == reason {
            return;
        }
        match reason {
            Some(r) => warn!(
                reason = r,
                "the managers refuse this node's certificate ({r}); if it expired, leave and join the swarm again with a token"
            ),
            None => info!("the managers accept this node's certificate again"),
        }
        s.cert_refused = reason.map(str::to_string);
    }
}

/// The current certificate's clock, or one that renews at once if the
/// certificate cannot be read (a renewal then replaces it).
pub fn clock_or_now(identity: &Identity) -> CertClock {
    CertClock::of(identity).unwrap_or_else(|e| {
        warn!("cannot read this node's certificate dates ({e:#}); renewing it");
        CertClock {
            not_after: SystemTime::now(),
            renew_at: SystemTime::now(),
            issuer: None,
        }
    })
}

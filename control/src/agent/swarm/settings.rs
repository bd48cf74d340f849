//! `shoal swarm inspect`, `shoal swarm update` and `shoal swarm ca`: the
//! swarm's settings in the replicated state (the node certificate
//! lifetime, the root CA and its rotation: `raft/ca_rotation.rs`).

use anyhow::Result;

use super::join::expect_ok;
use crate::agent::Agent;
use crate::raft::ca_rotation;
use crate::wire::{CaProgress, CaView, Command, SwarmUpdate, SwarmView};

impl Agent {
    pub async fn swarm_inspect(&self) -> Result<SwarmView> {
        let (m, _) = self.manager().await?;
        let Some(c) = m.state().cluster else {
            crate::fail!(Unavailable, "the swarm is not initialised yet");
        };
        Ok(SwarmView {
            id: c.cluster_id,
            cert_expiry_ms: c.cert_expiry_ms,
            data_path_port: c.data_path_port,
            gossip_key_rotation_ms: c.gossip_key_rotation_ms,
            revoked: c.revoked.into_keys().collect(),
        })
    }

    /// New certificates get the new lifetime; nodes move to it as they
    /// renew (as in Docker).
    pub async fn swarm_update(&self, req: SwarmUpdate) -> Result<SwarmView> {
        let (m, _) = self.manager().await?;
        if let Some(ms) = req.cert_expiry_ms {
            self.check_cert_expiry(ms)?;
            expect_ok(m.write(Command::ClusterSetCertExpiry { ms }).await?)?;
        }
        self.swarm_inspect().await
    }

    /// The root, and how far a rotation is.
    pub async fn swarm_ca(&self) -> Result<CaView> {
        let (m, _) = self.manager().await?;
        let st = m.state();
        let Some(c) = &st.cluster else {
            crate::fail!(Unavailable, "the swarm is not initialised yet");
        };
        let rotation = c
            .ca_rotation
            .as_ref()
            .zip(st.ca_progress())
            .map(|(r, p)| CaProgress {
                new_root_pem: r.cert_pem.clone(),
                rotated: p.rotated,
                total: p.total,
                waiting: st
                    .ca_waiting()
                    .unwrap_or_default()
                    .iter()
                    .map(|n| n.hostname.clone())
                    .collect(),
            });
        Ok(CaView {
            root_pem: c.ca_cert_pem.clone(),
            rotation,
        })
    }

    /// Starts a CA rotation (`raft/ca_rotation.rs`); nodes move over by
    /// themselves and the leader finishes it.
    pub async fn swarm_ca_rotate(&self) -> Result<CaView> {
        let (m, _) = self.manager().await?;
        let cmd = ca_rotation::start(&m.state(), crate::clock::now_ms())?;
        expect_ok(m.write(cmd).await?)?;
        tracing::info!("CA rotation started: nodes renew their certificates from the new root");
        self.swarm_ca().await
    }
}

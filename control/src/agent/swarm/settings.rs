//! `shoal swarm inspect` and `shoal swarm update`: the swarm's settings in
//! the replicated state (today: the node certificate lifetime).

use anyhow::Result;

use super::join::expect_ok;
use crate::agent::Agent;
use crate::wire::{Command, SwarmUpdate, SwarmView};

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
}

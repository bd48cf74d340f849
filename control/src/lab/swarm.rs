//! A lab's swarm: `swarm init` on n1, then the next M-1 nodes join with the
//! manager token and the rest with the worker token, each through its own
//! daemon's API, exactly as an operator would type it.

use anyhow::{Context, Result};

use super::Lab;
use crate::api::client::Client;
use crate::wire::{JoinTokenReply, SwarmInit, SwarmInitReply, SwarmJoin};

/// The lab swarm's address pool: clear of the lab's own `labnet`
/// (10.0.1.0/24) and of the ingress network (10.0.0.0/24).
pub const SWARM_POOL: &str = "10.10.0.0/16";

pub async fn form(lab: &Lab) -> Result<()> {
    let Some(first) = lab.nodes.first() else {
        return Ok(());
    };
    let c = Client::new(&first.socket());
    let _: SwarmInitReply = c
        .post(
            "/v1/swarm/init",
            &SwarmInit {
                advertise_addr: Some(first.underlay_ip),
                default_addr_pool: Some(SWARM_POOL.parse().expect("valid")),
                default_addr_pool_mask_length: Some(24),
                data_path_port: None,
                gossip_key_rotation_ms: None,
                cert_expiry_ms: None,
            },
        )
        .await
        .with_context(|| format!("swarm init on {}", first.name))?;
    let worker: JoinTokenReply = c.get("/v1/swarm/join-token/worker").await?;
    let manager: JoinTokenReply = c.get("/v1/swarm/join-token/manager").await?;
    for (i, node) in lab.nodes.iter().enumerate().skip(1) {
        let token = if (i as u32) < lab.managers {
            &manager.token
        } else {
            &worker.token
        };
        let req = SwarmJoin {
            token: token.clone(),
            remote: manager.control_addr.clone(),
        };
        let _: crate::wire::SwarmJoinReply = Client::new(&node.socket())
            .post("/v1/swarm/join", &req)
            .await
            .with_context(|| format!("swarm join of {}", node.name))?;
    }
    Ok(())
}

//! The leader's orchestrator: every pass reads the applied state, plans
//! (`plan.rs`, pure) and writes the plan through Raft. It runs on every
//! manager and acts only while leading, so a new leader picks up where the
//! old one stopped, from the replicated state alone.

pub mod plan;
pub mod scheduler;
pub mod sim;
pub mod update;

use std::time::Duration;

use tracing::{debug, warn};

use crate::raft::manager::Manager;
use crate::raft::state::new_id;
use crate::wire::CommandResult;

/// How often the leader reconciles.
pub const PASS: Duration = Duration::from_millis(200);

pub async fn run(m: std::sync::Weak<Manager>) {
    let Some(nodes_changed) = m.upgrade().map(|m| m.nodes_changed()) else {
        return;
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PASS) => {}
            _ = nodes_changed.notified() => {}
        }
        let Some(m) = m.upgrade() else { return };
        if !m.is_leading() {
            continue;
        }
        let st = m.state();
        let cmds = plan::plan(&st, crate::clock::now_ms(), &mut new_id);
        for cmd in cmds {
            debug!(?cmd, "orchestrator");
            match m.write(cmd).await {
                Ok(CommandResult::Error(e)) => warn!("orchestrator: refused: {e}"),
                Ok(_) => {}
                Err(e) => {
                    warn!("orchestrator: {e:#}");
                    break;
                }
            }
        }
    }
}

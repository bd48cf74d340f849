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

/// How often the leader reconciles while the state changes.
pub const PASS: Duration = Duration::from_millis(200);
/// How often it reconciles a state that has not changed since a pass that
/// found nothing to do and named no time it would (`plan::plan_until`: a
/// restart delay ending, a rolling update running). A pass reads every
/// task, which at Swarm2000 size (96,287) kept an idle leader a third of a
/// core busy at PASS; this is the safety net.
pub const IDLE_PASS: Duration = Duration::from_secs(5);

pub async fn run(m: std::sync::Weak<Manager>) {
    let Some(nodes_changed) = m.upgrade().map(|m| m.nodes_changed()) else {
        return;
    };
    // The applied index and time of the last pass that planned nothing,
    // and when time alone would make that state plan something.
    let mut quiet: Option<(u64, std::time::Instant, Option<u64>)> = None;
    loop {
        let nodes = tokio::select! {
            _ = tokio::time::sleep(PASS) => false,
            _ = nodes_changed.notified() => true,
        };
        let Some(m) = m.upgrade() else { return };
        if !m.is_leading() {
            quiet = None;
            continue;
        }
        let applied = m.applied();
        let now = crate::clock::now_ms();
        let unchanged = quiet.is_some_and(|(i, at, due)| {
            i == applied && at.elapsed() < IDLE_PASS && due.is_none_or(|d| now < d)
        });
        if unchanged && !nodes {
            continue;
        }
        let st = m.state();
        let (cmds, due) = plan::plan_until(&st, now, &mut new_id);
        quiet = cmds
            .is_empty()
            .then(|| (applied, std::time::Instant::now(), due));
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

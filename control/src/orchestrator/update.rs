//! The rolling updater, one step per orchestrator pass, as a pure function
//! of the state (so a new leader carries an update on from Raft alone).
//!
//! A task is out of date when its `TaskSpec` differs from the service's, it
//! sits on other networks than the service's, or its node no longer fits the
//! constraints. Out-of-date tasks are replaced in batches of `parallelism`:
//! stop-first stops them and the plan fills the empty slots; start-first
//! asks the plan for a new task beside each old one and stops the old one
//! once the new one runs. A new task counts as updated once it has been
//! running (which implies healthy: see the task runner) for `monitor`; the
//! next batch starts `delay` after the last one counted. A task of the new
//! spec that ends by itself while the update runs is a failure; more than
//! `max_failure_ratio` of the service's tasks failing triggers the failure
//! action (pause, continue, or roll back to the previous spec).

use std::collections::BTreeSet;

use super::scheduler::eligible;
use crate::raft::state::ClusterState;
use crate::wire::Command;
use crate::wire::{DesiredState, TaskRecord, TaskState};
use crate::wire::{FailureAction, TaskSpec, UpdateOrder, UpdateState, UpdateStatus};
use crate::wire::{Mode, ServiceRecord};

/// What one step of an update wants.
#[derive(Debug, Default, PartialEq)]
pub struct Step {
    /// Out-of-date tasks to stop now.
    pub stop: Vec<String>,
    /// Slot keys (see `plan::key`) that get a new task beside their old one
    /// (start-first).
    pub start_beside: BTreeSet<String>,
    /// A verdict to write: paused, completed, rolled back.
    pub status: Option<Command>,
}

/// Whether `t` runs something else than the service asks for now.
pub fn out_of_date(st: &ClusterState, s: &ServiceRecord, t: &TaskRecord) -> bool {
    if t.spec != TaskSpec::of(&s.spec) {
        return true;
    }
    let nets: Vec<&String> = t.networks.iter().map(|a| &a.network_id).collect();
    if nets != s.network_ids.iter().collect::<Vec<_>>() {
        return true;
    }
    // A replicated task whose node no longer fits (global ones are
    // stopped by the plan).
    matches!(s.spec.mode, Mode::Replicated { .. })
        && t.node_id
            .as_ref()
            .and_then(|n| st.nodes.get(n))
            .is_some_and(|n| !eligible(st, s, n) && n.state == crate::wire::NodeState::Ready)
}

pub fn step(
    st: &ClusterState,
    s: &ServiceRecord,
    tasks: &[&TaskRecord],
    key: &dyn Fn(&TaskRecord) -> String,
    now: u64,
) -> Step {
    let mut out = Step::default();
    let Some(status) = s.update_status.as_ref().filter(|u| u.state.is_active()) else {
        return out;
    };
    let rolling_back = status.state.is_rollback();
    let policy = if rolling_back {
        &s.spec.rollback
    } else {
        &s.spec.update
    };
    let verdict =
        |state: UpdateState, message: String, rollback: bool| Command::ServiceUpdateStatus {
            id: s.id.clone(),
            version: s.version,
            status: UpdateStatus {
                state,
                started_at: status.started_at,
                completed_at: matches!(
                    state,
                    UpdateState::Completed | UpdateState::RollbackCompleted
                )
                .then_some(now),
                message,
            },
            rollback,
        };

    // Tasks of the new spec made since the update began.
    let fresh: Vec<&TaskRecord> = tasks
        .iter()
        .copied()
        .filter(|t| t.created_at >= status.started_at && !out_of_date(st, s, t))
        .collect();
    let failed: Vec<&TaskRecord> = fresh
        .iter()
        .copied()
        .filter(|t| {
            matches!(
                t.state,
                TaskState::Failed | TaskState::Rejected | TaskState::Complete
            )
        })
        .collect();
    let total = match s.spec.mode {
        Mode::Replicated { replicas } => replicas,
        Mode::Global => st.nodes.values().filter(|n| eligible(st, s, n)).count() as u64,
    }
    .max(1);
    if let Some(first) = failed.first() {
        if failed.len() as f64 > policy.max_failure_ratio * total as f64 {
            let why = format!("failure or early termination of task {}", first.id);
            match (policy.failure_action, rolling_back) {
                (FailureAction::Continue, _) => {}
                (FailureAction::Rollback, false) => {
                    out.status = Some(verdict(
                        UpdateState::RollbackStarted,
                        format!("update rolled back due to {why}"),
                        true,
                    ));
                    return out;
                }
                (_, rolling_back) => {
                    let (state, what) = if rolling_back {
                        (UpdateState::RollbackPaused, "rollback")
                    } else {
                        (UpdateState::Paused, "update")
                    };
                    out.status = Some(verdict(state, format!("{what} paused due to {why}"), false));
                    return out;
                }
            }
        }
    }

    let live: Vec<&TaskRecord> = tasks
        .iter()
        .copied()
        .filter(|t| t.desired == DesiredState::Running)
        .collect();
    let fresh_live: Vec<&TaskRecord> = live
        .iter()
        .copied()
        .filter(|t| t.created_at >= status.started_at && !out_of_date(st, s, t))
        .collect();
    let settled =
        |t: &TaskRecord| t.state == TaskState::Running && now >= t.state_at + policy.monitor_ms;
    let mut in_flight = fresh_live.iter().filter(|t| !settled(t)).count();
    // A slot left empty (its old task stopped, the new one not made yet,
    // e.g. held by the restart delay) is still being updated.
    if let Mode::Replicated { replicas } = s.spec.mode {
        let filled: BTreeSet<u64> = live.iter().map(|t| t.slot).collect();
        in_flight += (1..=replicas).filter(|i| !filled.contains(i)).count();
    }
    let fresh_keys: BTreeSet<String> = fresh_live.iter().map(|t| key(t)).collect();

    // Start-first: an old task goes once the new one in its slot runs.
    for t in live.iter().filter(|t| out_of_date(st, s, t)) {
        if fresh_live
            .iter()
            .any(|n| key(n) == key(t) && n.state == TaskState::Running)
        {
            out.stop.push(t.id.clone());
        }
    }
    let mut waiting: Vec<&TaskRecord> = live
        .iter()
        .copied()
        .filter(|t| out_of_date(st, s, t) && !fresh_keys.contains(&key(t)))
        .collect();
    waiting.sort_by_key(|t| (t.slot, key(t)));

    if waiting.is_empty() && in_flight == 0 && out.stop.is_empty() {
        let (state, message) = if rolling_back {
            (UpdateState::RollbackCompleted, "rollback completed")
        } else {
            (UpdateState::Completed, "update completed")
        };
        out.status = Some(verdict(state, message.into(), false));
        return out;
    }
    // The next batch: once the last one counted as updated, after the
    // delay (the first one at once).
    let last_done = fresh_live
        .iter()
        .map(|t| t.state_at + policy.monitor_ms)
        .max()
        .unwrap_or(0);
    if in_flight > 0 || now < last_done + policy.delay_ms {
        return out;
    }
    let n = match policy.parallelism {
        0 => waiting.len(),
        p => p as usize,
    };
    for t in waiting.into_iter().take(n) {
        match policy.order {
            UpdateOrder::StopFirst => out.stop.push(t.id.clone()),
            UpdateOrder::StartFirst => {
                out.start_beside.insert(key(t));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;

//! Rolling updates: the policy, the status the updater keeps, and the spec a `service update` reads and sends back.

use serde::{Deserialize, Serialize};

use super::*;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    #[default]
    Pause,
    Continue,
    Rollback,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    #[default]
    StopFirst,
    StartFirst,
}

/// How tasks are replaced; Docker's defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpdatePolicy {
    /// Tasks replaced at once (0: all).
    pub parallelism: u64,
    /// Wait between batches.
    pub delay_ms: u64,
    /// How long a new task must run (healthy) to count as updated.
    pub monitor_ms: u64,
    pub failure_action: FailureAction,
    /// Failures tolerated, as a share of the service's tasks (0..=1).
    pub max_failure_ratio: f64,
    pub order: UpdateOrder,
}

// The ratio is checked to lie in 0..=1 (never NaN), so equality is total.
impl Eq for UpdatePolicy {}

impl Default for UpdatePolicy {
    fn default() -> Self {
        Self {
            parallelism: 1,
            delay_ms: 0,
            monitor_ms: 5000,
            failure_action: FailureAction::Pause,
            max_failure_ratio: 0.0,
            order: UpdateOrder::StopFirst,
        }
    }
}

impl UpdatePolicy {
    pub fn check(&self, what: &str) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.max_failure_ratio) {
            return Err(format!(
                "{what} max failure ratio {} must be between 0 and 1",
                self.max_failure_ratio
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    Updating,
    Paused,
    Completed,
    RollbackStarted,
    RollbackPaused,
    RollbackCompleted,
}

impl UpdateState {
    /// The state's word on the wire: `rollback_started`.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateState::Updating => "updating",
            UpdateState::Paused => "paused",
            UpdateState::Completed => "completed",
            UpdateState::RollbackStarted => "rollback_started",
            UpdateState::RollbackPaused => "rollback_paused",
            UpdateState::RollbackCompleted => "rollback_completed",
        }
    }

    /// The updater has work to do.
    pub fn is_active(self) -> bool {
        matches!(self, UpdateState::Updating | UpdateState::RollbackStarted)
    }

    pub fn is_rollback(self) -> bool {
        matches!(
            self,
            UpdateState::RollbackStarted
                | UpdateState::RollbackPaused
                | UpdateState::RollbackCompleted
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStatus {
    pub state: UpdateState,
    pub started_at: u64,
    pub completed_at: Option<u64>,
    pub message: String,
}

/// What a task runs: the part of the service spec that, when it changes,
/// makes a running task out of date (Docker's TaskSpec).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub command: Vec<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub health: Option<HealthSpec>,
    pub stop_grace_ms: u64,
    pub networks: Vec<NetAttach>,
    /// `service update --force` bumps it, so every task is out of date.
    pub force_update: u64,
}

impl TaskSpec {
    pub fn of(s: &ServiceSpec) -> Self {
        Self {
            command: s.command.clone(),
            env: s.env.clone(),
            workdir: s.workdir.clone(),
            health: s.health.clone(),
            stop_grace_ms: s.stop_grace_ms,
            networks: s.networks.clone(),
            force_update: s.force_update,
        }
    }
}
/// A service's spec at a version: what `service update` reads and sends
/// back (with `rollback`, the spec is the previous one and may be absent).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SpecAt {
    pub version: u64,
    pub spec: Option<ServiceSpec>,
    #[serde(default)]
    pub rollback: bool,
}

//! Rolling updates in the replicated state: the update and rollback
//! policies of a service (Docker's UpdateConfig and RollbackConfig), the
//! update's status, and the commands that start, pause, complete and roll
//! back an update. The leader's updater (`orchestrator/update.rs`) decides
//! when; everything it needs is here, so a new leader carries an update on.

use serde::{Deserialize, Serialize};

use super::services::{NetAttach, ServiceRecord, ServiceSpec};
use super::state::{err, put, Change, ClusterState, Command, CommandResult};

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
    pub health: Option<super::services::HealthSpec>,
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

impl ClusterState {
    /// Applies an update command (see `ClusterState::apply`).
    pub(super) fn apply_update(
        &mut self,
        index: u64,
        cmd: Command,
    ) -> (CommandResult, Vec<Change>) {
        match cmd {
            Command::ServiceUpdate {
                id,
                spec,
                version,
                rollback,
                now,
            } => {
                let Some(mut s) = self.services.get(&id).cloned() else {
                    return err(format!("service {id} not found"));
                };
                if version != 0 && version != s.version {
                    return err(format!(
                        "update out of sequence: service {} changed since it was read; try again",
                        s.spec.name
                    ));
                }
                let (new, status) = if rollback {
                    let Some(prev) = s.previous_spec.clone() else {
                        return err(format!(
                            "service {} does not have a previous spec",
                            s.spec.name
                        ));
                    };
                    (prev, UpdateState::RollbackStarted)
                } else {
                    let Some(spec) = spec else {
                        return err("an update needs a spec".into());
                    };
                    if spec == s.spec {
                        // Nothing to do (Docker: an unchanged spec without
                        // --force changes nothing).
                        return (CommandResult::Service(s), vec![]);
                    }
                    (spec, UpdateState::Updating)
                };
                if let Err(e) = self
                    .check_update(&s, &new)
                    .and_then(|()| self.switch_spec(&mut s, new))
                {
                    return err(e);
                }
                s.update_status = Some(UpdateStatus {
                    state: status,
                    started_at: now,
                    completed_at: None,
                    message: if rollback {
                        "manually requested rollback".into()
                    } else {
                        "update in progress".into()
                    },
                });
                s.updated_at = now;
                s.version = index;
                self.services.insert(id.clone(), s.clone());
                (
                    CommandResult::Service(s.clone()),
                    vec![put(format!("service/{id}"), &s)],
                )
            }
            Command::ServiceUpdateStatus {
                id,
                version,
                status,
                rollback,
            } => {
                let Some(mut s) = self.services.get(&id).cloned() else {
                    return err(format!("service {id} not found"));
                };
                if version != s.version {
                    return err(format!("service {id} changed under the updater"));
                }
                if rollback {
                    let Some(prev) = s.previous_spec.clone() else {
                        return err(format!("service {id} has no previous spec"));
                    };
                    if let Err(e) = self.switch_spec(&mut s, prev) {
                        return err(e);
                    }
                }
                s.update_status = Some(status);
                s.version = index;
                self.services.insert(id.clone(), s.clone());
                (
                    CommandResult::Service(s.clone()),
                    vec![put(format!("service/{id}"), &s)],
                )
            }
            other => unreachable!("not an update command: {other:?}"),
        }
    }

    /// Makes `new` the service's spec (checked, networks resolved, VIPs
    /// re-assigned) and the current one its previous.
    fn switch_spec(&self, s: &mut ServiceRecord, mut new: ServiceSpec) -> Result<(), String> {
        self.assign_published_ports(&mut new, Some(&s.id))?;
        let network_ids = self.check_service(&new, Some(&s.id))?;
        self.reassign_vips(s, &new, &network_ids)?;
        s.network_ids = network_ids;
        s.previous_spec = Some(std::mem::replace(&mut s.spec, new));
        Ok(())
    }

    /// What an update may not change.
    fn check_update(&self, s: &ServiceRecord, new: &ServiceSpec) -> Result<(), String> {
        if new.name != s.spec.name {
            return Err(format!(
                "service {}: the name cannot be changed by an update",
                s.spec.name
            ));
        }
        let global = |m: &super::services::Mode| matches!(m, super::services::Mode::Global);
        if global(&new.mode) != global(&s.spec.mode) {
            return Err(format!(
                "service {}: the service mode cannot be changed",
                s.spec.name
            ));
        }
        new.update.check("update")?;
        new.rollback.check("rollback")
    }

    /// VIPs for the new spec's networks: kept on the networks that stay,
    /// allocated on new ones (vip mode), dropped otherwise (freed with it).
    fn reassign_vips(
        &self,
        s: &mut ServiceRecord,
        new: &ServiceSpec,
        network_ids: &[String],
    ) -> Result<(), String> {
        let mut vips = vec![];
        if new.endpoint_mode == super::services::EndpointMode::Vip {
            for nid in network_ids {
                if let Some(v) = s.vips.iter().find(|v| &v.network_id == nid) {
                    vips.push(v.clone());
                    continue;
                }
                let addr = self
                    .free_addr(nid, &Default::default())
                    .ok_or_else(|| format!("network {nid} has no free address for a VIP"))?;
                vips.push(super::services::Vip {
                    network_id: nid.clone(),
                    addr,
                });
            }
        }
        s.vips = vips;
        Ok(())
    }
}

//! Rolling updates in the replicated state: the update and rollback
//! policies of a service (Docker's UpdateConfig and RollbackConfig), the
//! update's status, and the commands that start, pause, complete and roll
//! back an update. The leader's updater (`orchestrator/update.rs`) decides
//! when; everything it needs is here, so a new leader carries an update on.

use super::state::{err, put, Change, ClusterState};
use crate::wire::WireError;
use crate::wire::{Command, CommandResult};
use crate::wire::{ServiceRecord, ServiceSpec};
use crate::wire::{UpdateState, UpdateStatus};

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
                    return err(WireError::not_found(format!("service {id} not found")));
                };
                if version != 0 && version != s.version {
                    return err(WireError::conflict(format!(
                        "update out of sequence: service {} changed since it was read; try again",
                        s.spec.name
                    )));
                }
                let (new, status) = if rollback {
                    let Some(prev) = s.previous_spec.clone() else {
                        return err(WireError::conflict(format!(
                            "service {} does not have a previous spec",
                            s.spec.name
                        )));
                    };
                    (prev, UpdateState::RollbackStarted)
                } else {
                    let Some(spec) = spec else {
                        return err(WireError::invalid("an update needs a spec"));
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
                    return err(WireError::not_found(format!("service {id} not found")));
                };
                if version != s.version {
                    return err(WireError::conflict(format!(
                        "service {id} changed under the updater"
                    )));
                }
                if rollback {
                    let Some(prev) = s.previous_spec.clone() else {
                        return err(WireError::conflict(format!(
                            "service {id} has no previous spec"
                        )));
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
    fn switch_spec(&self, s: &mut ServiceRecord, mut new: ServiceSpec) -> Result<(), WireError> {
        self.assign_published_ports(&mut new, Some(&s.id))?;
        let network_ids = self.check_service(&new, Some(&s.id))?;
        self.reassign_vips(s, &new, &network_ids)?;
        s.network_ids = network_ids;
        s.previous_spec = Some(std::mem::replace(&mut s.spec, new));
        Ok(())
    }

    /// What an update may not change.
    fn check_update(&self, s: &ServiceRecord, new: &ServiceSpec) -> Result<(), WireError> {
        if new.name != s.spec.name {
            return Err(WireError::invalid(format!(
                "service {}: the name cannot be changed by an update",
                s.spec.name
            )));
        }
        let global = |m: &crate::wire::Mode| matches!(m, crate::wire::Mode::Global);
        if global(&new.mode) != global(&s.spec.mode) {
            return Err(WireError::invalid(format!(
                "service {}: the service mode cannot be changed",
                s.spec.name
            )));
        }
        new.update.check("update").map_err(WireError::invalid)?;
        new.rollback.check("rollback").map_err(WireError::invalid)
    }

    /// VIPs for the new spec's networks: kept on the networks that stay,
    /// allocated on new ones (vip mode), dropped otherwise (freed with it).
    fn reassign_vips(
        &self,
        s: &mut ServiceRecord,
        new: &ServiceSpec,
        network_ids: &[String],
    ) -> Result<(), WireError> {
        let mut vips = vec![];
        if new.endpoint_mode == crate::wire::EndpointMode::Vip {
            for nid in network_ids {
                if let Some(v) = s.vips.iter().find(|v| &v.network_id == nid) {
                    vips.push(v.clone());
                    continue;
                }
                let addr = self.free_addr(nid, &Default::default()).ok_or_else(|| {
                    WireError::conflict(format!("network {nid} has no free address for a VIP"))
                })?;
                vips.push(crate::wire::Vip {
                    network_id: nid.clone(),
                    addr,
                });
            }
        }
        s.vips = vips;
        Ok(())
    }
}

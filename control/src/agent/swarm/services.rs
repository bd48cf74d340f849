//! Networks, services and tasks on a manager: the API's handlers. Reads
//! come from this manager's applied state; changes go through the leader.
//! Views use Docker's JSON field names, so scripts written for Docker read
//! them.

use anyhow::{bail, Result};

use super::docker_views::{network_view, service_row, service_view, task_view};
use super::join::expect_ok;
use super::new_id;
use crate::agent::Agent;
use crate::raft::state::ClusterState;
use crate::wire::{Command, CommandResult};
use crate::wire::{DesiredState, TaskRecord};
use crate::wire::{NetworkInspect, ServiceInspect, ServiceRow, SpecAt, TaskInspect};
use crate::wire::{NetworkRecord, NetworkSpec};
use crate::wire::{ServiceRecord, ServiceSpec};

impl Agent {
    pub async fn network_create(&self, spec: NetworkSpec) -> Result<NetworkInspect> {
        let (m, _) = self.manager().await?;
        if spec.encrypted {
            // Never in clear as a fallback: a network no node can carry
            // is refused, with what the nodes' kernels lack.
            let st = m.state();
            let mut why: Vec<String> = st
                .nodes
                .values()
                .filter_map(|n| n.ipsec.why_not().map(|w| format!("{}: {w}", n.hostname)))
                .collect();
            why.sort();
            if why.len() == st.nodes.len() {
                crate::fail!(
                    Invalid,
                    "no node of the swarm can carry an encrypted network ({})",
                    why.join("; ")
                );
            }
            // Every node is an entry of the routing mesh: an encrypted
            // ingress needs them all able to encrypt.
            if spec.ingress && !why.is_empty() {
                crate::fail!(
                    Invalid,
                    "an encrypted ingress network needs every node able to encrypt ({})",
                    why.join("; ")
                );
            }
        }
        match m
            .write(Command::NetworkCreate {
                id: new_id(),
                spec,
                now: crate::clock::now_ms(),
            })
            .await?
        {
            CommandResult::Network(n) => Ok(network_view(&n)),
            CommandResult::Error(e) => Err(e.into()),
            other => bail!("unexpected reply {other:?}"),
        }
    }

    pub async fn network_list(&self) -> Result<Vec<NetworkInspect>> {
        let (m, _) = self.manager().await?;
        let st = m.state();
        let mut v: Vec<&NetworkRecord> = st.networks.values().collect();
        v.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        Ok(v.into_iter().map(network_view).collect())
    }

    pub async fn network_inspect(&self, key: &str) -> Result<NetworkInspect> {
        let (m, _) = self.manager().await?;
        let st = m.state();
        let n = st
            .network_by_key(key)
            .ok_or_else(|| crate::wire_err!(NotFound, "network {key} not found"))?;
        Ok(network_view(n))
    }

    pub async fn network_rm(&self, key: &str) -> Result<String> {
        let (m, _) = self.manager().await?;
        let n = m
            .state()
            .network_by_key(key)
            .cloned()
            .ok_or_else(|| crate::wire_err!(NotFound, "network {key} not found"))?;
        expect_ok(m.write(Command::NetworkRemove { id: n.id.clone() }).await?)?;
        Ok(n.spec.name)
    }

    pub async fn service_create(&self, spec: ServiceSpec) -> Result<ServiceInspect> {
        let (m, _) = self.manager().await?;
        match m
            .write(Command::ServiceCreate {
                id: new_id(),
                spec,
                now: crate::clock::now_ms(),
            })
            .await?
        {
            CommandResult::Service(s) => Ok(service_view(&m.state(), &s)),
            CommandResult::Error(e) => Err(e.into()),
            other => bail!("unexpected reply {other:?}"),
        }
    }

    /// The spec as stored, for `service update` to edit.
    pub async fn service_spec(&self, key: &str) -> Result<SpecAt> {
        let (m, _) = self.manager().await?;
        let st = m.state();
        let s = st
            .service_by_key(key)
            .ok_or_else(|| crate::wire_err!(NotFound, "service {key} not found"))?;
        Ok(SpecAt {
            version: s.version,
            spec: Some(s.spec.clone()),
            rollback: false,
        })
    }

    /// `service update` / `service rollback`: the new spec goes through
    /// Raft and the leader's updater rolls it out.
    pub async fn service_update(&self, key: &str, u: SpecAt) -> Result<ServiceInspect> {
        let (m, _) = self.manager().await?;
        let id = m
            .state()
            .service_by_key(key)
            .map(|s| s.id.clone())
            .ok_or_else(|| crate::wire_err!(NotFound, "service {key} not found"))?;
        match m
            .write(Command::ServiceUpdate {
                id,
                spec: u.spec,
                version: u.version,
                rollback: u.rollback,
                now: crate::clock::now_ms(),
            })
            .await?
        {
            CommandResult::Service(s) => Ok(service_view(&m.state(), &s)),
            CommandResult::Error(e) => Err(e.into()),
            other => bail!("unexpected reply {other:?}"),
        }
    }

    /// `service ls` rows: id, name, mode, running/desired, ports.
    pub async fn service_list(&self) -> Result<Vec<ServiceRow>> {
        let (m, _) = self.manager().await?;
        let st = m.state();
        let mut v: Vec<&ServiceRecord> = st.services.values().collect();
        v.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        Ok(v.into_iter().map(|s| service_row(&st, s)).collect())
    }

    pub async fn service_inspect(&self, key: &str) -> Result<ServiceInspect> {
        let (m, _) = self.manager().await?;
        let st = m.state();
        let s = st
            .service_by_key(key)
            .ok_or_else(|| crate::wire_err!(NotFound, "service {key} not found"))?;
        Ok(service_view(&st, s))
    }

    /// Tasks of a service (or all), newest first per slot, as `service ps`.
    pub async fn service_tasks(&self, key: Option<&str>) -> Result<Vec<TaskInspect>> {
        let (m, _) = self.manager().await?;
        let st = m.state();
        let sid = match key {
            Some(k) => Some(
                st.service_by_key(k)
                    .ok_or_else(|| crate::wire_err!(NotFound, "service {k} not found"))?
                    .id
                    .clone(),
            ),
            None => None,
        };
        let mut tasks: Vec<&TaskRecord> = st
            .tasks
            .values()
            .filter(|t| sid.as_ref().is_none_or(|s| &t.service_id == s))
            .collect();
        // Per slot (or node, for global tasks): the live task first, then
        // the history, newest first (as Docker lists them).
        tasks.sort_by_key(|t| {
            (
                t.service_name.clone(),
                t.slot,
                if t.slot == 0 { t.node_id.clone() } else { None },
                t.desired != DesiredState::Running,
                std::cmp::Reverse(t.created_at),
            )
        });
        Ok(tasks.into_iter().map(|t| task_view(&st, t)).collect())
    }

    pub async fn service_scale(&self, key: &str, replicas: u64) -> Result<String> {
        let (m, _) = self.manager().await?;
        let s = m
            .state()
            .service_by_key(key)
            .cloned()
            .ok_or_else(|| crate::wire_err!(NotFound, "service {key} not found"))?;
        expect_ok(
            m.write(Command::ServiceScale {
                id: s.id.clone(),
                replicas,
                now: crate::clock::now_ms(),
            })
            .await?,
        )?;
        Ok(s.spec.name)
    }

    pub async fn service_rm(&self, key: &str) -> Result<String> {
        let (m, _) = self.manager().await?;
        let s = m
            .state()
            .service_by_key(key)
            .cloned()
            .ok_or_else(|| crate::wire_err!(NotFound, "service {key} not found"))?;
        expect_ok(m.write(Command::ServiceRemove { id: s.id.clone() }).await?)?;
        Ok(s.spec.name)
    }

    /// A task by id, id prefix, `SERVICE.SLOT.ID` or `SERVICE.SLOT` (the
    /// live one).
    pub async fn task_inspect(&self, key: &str) -> Result<TaskInspect> {
        let (m, _) = self.manager().await?;
        let st = m.state();
        let t = find_task(&st, key)?;
        Ok(task_view(&st, t))
    }
}

pub fn find_task<'a>(st: &'a ClusterState, key: &str) -> Result<&'a TaskRecord> {
    if let Some(t) = st.tasks.get(key) {
        return Ok(t);
    }
    if let Some(t) = st.tasks.values().find(|t| t.name() == key) {
        return Ok(t);
    }
    let live: Vec<&TaskRecord> = st
        .tasks
        .values()
        .filter(|t| t.short_name() == key && t.desired == DesiredState::Running)
        .collect();
    if let [t] = live.as_slice() {
        return Ok(t);
    }
    let hits: Vec<&TaskRecord> = st
        .tasks
        .values()
        .filter(|t| !key.is_empty() && t.id.starts_with(key))
        .collect();
    match hits.as_slice() {
        [t] => Ok(t),
        [] => crate::fail!(NotFound, "no such task: {key}"),
        _ => crate::fail!(Invalid, "task {key} is ambiguous"),
    }
}

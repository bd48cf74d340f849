//! Networks, services and tasks on a manager: the API's handlers. Reads
//! come from this manager's applied state; changes go through the leader.
//! Views use Docker's JSON field names, so scripts written for Docker read
//! them.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::join::expect_ok;
use super::new_id;
use crate::agent::Agent;
use crate::raft::networks::{NetworkRecord, NetworkSpec};
use crate::raft::services::{Mode, ServiceRecord, ServiceSpec};
use crate::raft::state::{ClusterState, Command, CommandResult};
use crate::raft::tasks::{DesiredState, TaskRecord};
use crate::raft::updates::UpdatePolicy;

/// A service's spec at a version: what `service update` reads and sends
/// back (with `rollback`, the spec is the previous one and may be absent).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SpecAt {
    pub version: u64,
    pub spec: Option<ServiceSpec>,
    #[serde(default)]
    pub rollback: bool,
}

pub fn rfc3339(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

pub fn network_view(n: &NetworkRecord) -> Value {
    json!({
        "Name": n.spec.name,
        "Id": n.id,
        "Created": rfc3339(n.created_at),
        "Scope": "swarm",
        "Driver": "overlay",
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Config": [{"Subnet": n.subnet.to_string(), "Gateway": n.gateway.to_string()}]},
        "Internal": n.spec.internal,
        "Attachable": n.spec.attachable,
        "Ingress": n.spec.ingress,
        "Options": {"com.docker.network.driver.overlay.vxlanid_list": n.vni.to_string()},
        "Labels": n.spec.labels,
    })
}

pub fn service_view(st: &ClusterState, s: &ServiceRecord) -> Value {
    let vips: Vec<Value> = s
        .vips
        .iter()
        .map(|v| {
            let prefix = st
                .networks
                .get(&v.network_id)
                .map(|n| n.subnet.prefix_len())
                .unwrap_or(32);
            json!({"NetworkID": v.network_id, "Addr": format!("{}/{}", v.addr, prefix)})
        })
        .collect();
    let mut v = json!({
        "ID": s.id,
        "Version": {"Index": s.version},
        "CreatedAt": rfc3339(s.created_at),
        "UpdatedAt": rfc3339(s.updated_at),
        "Spec": spec_view(&s.spec, &s.network_ids),
        "Endpoint": {"Spec": {"Mode": format!("{:?}", s.spec.endpoint_mode).to_lowercase()}, "Ports": ports_view(&s.spec), "VirtualIPs": vips},
    });
    if let Some(p) = &s.previous_spec {
        v["PreviousSpec"] = spec_view(p, &[]);
    }
    if let Some(u) = &s.update_status {
        // Beyond Docker's fields: how many of the live tasks run the
        // current spec, for the progress line.
        let live: Vec<&TaskRecord> = st
            .tasks
            .values()
            .filter(|t| t.service_id == s.id && t.desired == DesiredState::Running)
            .collect();
        let updated = live
            .iter()
            .filter(|t| {
                t.state == crate::raft::tasks::TaskState::Running
                    && !crate::orchestrator::update::out_of_date(st, s, t)
            })
            .count();
        v["UpdateStatus"] = json!({
            "State": u.state,
            "StartedAt": rfc3339(u.started_at),
            "CompletedAt": u.completed_at.map(rfc3339),
            "Message": u.message,
            "Progress": {"Updated": updated, "Total": live.len()},
        });
    }
    v
}

fn ports_view(spec: &ServiceSpec) -> Vec<Value> {
    spec.ports
        .iter()
        .map(|p| json!({"Protocol": format!("{:?}", p.protocol).to_lowercase(), "TargetPort": p.target, "PublishedPort": p.published, "PublishMode": format!("{:?}", p.mode).to_lowercase()}))
        .collect()
}

fn policy_view(p: &UpdatePolicy) -> Value {
    json!({
        "Parallelism": p.parallelism,
        "Delay": p.delay_ms * 1_000_000,
        "FailureAction": p.failure_action,
        "Monitor": p.monitor_ms * 1_000_000,
        "MaxFailureRatio": p.max_failure_ratio,
        "Order": p.order,
    })
}

/// Docker's ServiceSpec JSON; networks by id where known, else as given.
fn spec_view(spec: &ServiceSpec, network_ids: &[String]) -> Value {
    let mode = match &spec.mode {
        Mode::Replicated { replicas } => json!({"Replicated": {"Replicas": replicas}}),
        Mode::Global => json!({"Global": {}}),
    };
    let networks: Vec<Value> = spec
        .networks
        .iter()
        .enumerate()
        .map(|(i, a)| json!({"Target": network_ids.get(i).unwrap_or(&a.target), "Aliases": a.aliases}))
        .collect();
    json!({
        "Name": spec.name,
        "Labels": spec.labels,
        "TaskTemplate": {
            "ContainerSpec": {"Command": spec.command, "Env": spec.env, "Dir": spec.workdir, "StopGracePeriod": spec.stop_grace_ms * 1_000_000, "Healthcheck": spec.health},
            "RestartPolicy": {"Condition": spec.restart.condition, "Delay": spec.restart.delay_ms * 1_000_000, "MaxAttempts": spec.restart.max_attempts},
            "Placement": {"Constraints": spec.constraints, "Preferences": spec.placement_prefs, "MaxReplicas": spec.max_per_node},
            "Networks": networks,
            "ForceUpdate": spec.force_update,
        },
        "Mode": mode,
        "UpdateConfig": policy_view(&spec.update),
        "RollbackConfig": policy_view(&spec.rollback),
        "EndpointSpec": {"Mode": format!("{:?}", spec.endpoint_mode).to_lowercase(), "Ports": ports_view(spec)},
    })
}

pub fn task_view(st: &ClusterState, t: &TaskRecord) -> Value {
    let attachments: Vec<Value> = t
        .networks
        .iter()
        .map(|a| {
            let n = st.networks.get(&a.network_id);
            json!({
                "Network": {"ID": a.network_id, "Spec": {"Name": n.map(|n| n.spec.name.clone())}},
                "Addresses": [format!("{}/{}", a.addr, n.map(|n| n.subnet.prefix_len()).unwrap_or(32))],
            })
        })
        .collect();
    let node = t.node_id.as_ref().and_then(|n| st.nodes.get(n));
    json!({
        "ID": t.id,
        "Name": t.name(),
        "ServiceID": t.service_id,
        "ServiceName": t.service_name,
        "Slot": t.slot,
        "NodeID": t.node_id,
        "Node": node.map(|n| n.hostname.clone()),
        "DesiredState": match t.desired { DesiredState::Running => "running", DesiredState::Shutdown => "shutdown" },
        "Status": {"State": t.state, "Timestamp": rfc3339(t.state_at), "TimestampMs": t.state_at, "Err": t.err, "ContainerStatus": {"ExitCode": t.exit_code}},
        "CreatedAt": rfc3339(t.created_at),
        "Spec": {"ContainerSpec": {"Command": t.spec.command, "Env": t.spec.env}},
        "NetworksAttachments": attachments,
    })
}

impl Agent {
    pub async fn network_create(&self, spec: NetworkSpec) -> Result<Value> {
        let (m, _) = self.manager().await?;
        if spec.ingress {
            bail!("the ingress network is created by `swarm init`");
        }
        match m
            .write(Command::NetworkCreate {
                id: new_id(),
                spec,
                now: crate::now_ms(),
            })
            .await?
        {
            CommandResult::Network(n) => Ok(network_view(&n)),
            CommandResult::Error(e) => bail!("{e}"),
            other => bail!("unexpected reply {other:?}"),
        }
    }

    pub async fn network_list(&self) -> Result<Vec<Value>> {
        let (m, _) = self.manager().await?;
        let st = m.state();
        let mut v: Vec<&NetworkRecord> = st.networks.values().collect();
        v.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        Ok(v.into_iter().map(network_view).collect())
    }

    pub async fn network_inspect(&self, key: &str) -> Result<Value> {
        let (m, _) = self.manager().await?;
        let st = m.state();
        let n = st
            .network_by_key(key)
            .with_context(|| format!("network {key} not found"))?;
        Ok(network_view(n))
    }

    pub async fn network_rm(&self, key: &str) -> Result<String> {
        let (m, _) = self.manager().await?;
        let n = m
            .state()
            .network_by_key(key)
            .cloned()
            .with_context(|| format!("network {key} not found"))?;
        expect_ok(m.write(Command::NetworkRemove { id: n.id.clone() }).await?)?;
        Ok(n.spec.name)
    }

    pub async fn service_create(&self, spec: ServiceSpec) -> Result<Value> {
        let (m, _) = self.manager().await?;
        match m
            .write(Command::ServiceCreate {
                id: new_id(),
                spec,
                now: crate::now_ms(),
            })
            .await?
        {
            CommandResult::Service(s) => Ok(service_view(&m.state(), &s)),
            CommandResult::Error(e) => bail!("{e}"),
            other => bail!("unexpected reply {other:?}"),
        }
    }

    /// The spec as stored, for `service update` to edit.
    pub async fn service_spec(&self, key: &str) -> Result<SpecAt> {
        let (m, _) = self.manager().await?;
        let st = m.state();
        let s = st
            .service_by_key(key)
            .with_context(|| format!("service {key} not found"))?;
        Ok(SpecAt {
            version: s.version,
            spec: Some(s.spec.clone()),
            rollback: false,
        })
    }

    /// `service update` / `service rollback`: the new spec goes through
    /// Raft and the leader's updater rolls it out.
    pub async fn service_update(&self, key: &str, u: SpecAt) -> Result<Value> {
        let (m, _) = self.manager().await?;
        let id = m
            .state()
            .service_by_key(key)
            .map(|s| s.id.clone())
            .with_context(|| format!("service {key} not found"))?;
        match m
            .write(Command::ServiceUpdate {
                id,
                spec: u.spec,
                version: u.version,
                rollback: u.rollback,
                now: crate::now_ms(),
            })
            .await?
        {
            CommandResult::Service(s) => Ok(service_view(&m.state(), &s)),
            CommandResult::Error(e) => bail!("{e}"),
            other => bail!("unexpected reply {other:?}"),
        }
    }

    /// `service ls` rows: id, name, mode, running/desired, ports.
    pub async fn service_list(&self) -> Result<Vec<Value>> {
        let (m, _) = self.manager().await?;
        let st = m.state();
        let mut v: Vec<&ServiceRecord> = st.services.values().collect();
        v.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        Ok(v.into_iter()
            .map(|s| {
                let running = st
                    .tasks
                    .values()
                    .filter(|t| {
                        t.service_id == s.id
                            && t.desired == DesiredState::Running
                            && t.state == crate::raft::tasks::TaskState::Running
                    })
                    .count();
                let (mode, desired) = match &s.spec.mode {
                    Mode::Replicated { replicas } => ("replicated", *replicas as usize),
                    Mode::Global => (
                        "global",
                        st.tasks
                            .values()
                            .filter(|t| t.service_id == s.id && t.desired == DesiredState::Running)
                            .count(),
                    ),
                };
                let ports: Vec<String> = s
                    .spec
                    .ports
                    .iter()
                    .map(|p| format!("*:{}->{}/{}", p.published, p.target, format!("{:?}", p.protocol).to_lowercase()))
                    .collect();
                json!({"ID": s.id, "Name": s.spec.name, "Mode": mode, "Replicas": format!("{running}/{desired}"), "Ports": ports.join(", "), "Labels": s.spec.labels})
            })
            .collect())
    }

    pub async fn service_inspect(&self, key: &str) -> Result<Value> {
        let (m, _) = self.manager().await?;
        let st = m.state();
        let s = st
            .service_by_key(key)
            .with_context(|| format!("service {key} not found"))?;
        Ok(service_view(&st, s))
    }

    /// Tasks of a service (or all), newest first per slot, as `service ps`.
    pub async fn service_tasks(&self, key: Option<&str>) -> Result<Vec<Value>> {
        let (m, _) = self.manager().await?;
        let st = m.state();
        let sid = match key {
            Some(k) => Some(
                st.service_by_key(k)
                    .with_context(|| format!("service {k} not found"))?
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
            .with_context(|| format!("service {key} not found"))?;
        expect_ok(
            m.write(Command::ServiceScale {
                id: s.id.clone(),
                replicas,
                now: crate::now_ms(),
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
            .with_context(|| format!("service {key} not found"))?;
        expect_ok(m.write(Command::ServiceRemove { id: s.id.clone() }).await?)?;
        Ok(s.spec.name)
    }

    /// A task by id, id prefix, `SERVICE.SLOT.ID` or `SERVICE.SLOT` (the
    /// live one).
    pub async fn task_inspect(&self, key: &str) -> Result<Value> {
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
        [] => bail!("no such task: {key}"),
        _ => bail!("task {key} is ambiguous"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::rfc3339(1_795_651_200_123),
            "2026-11-26T00:00:00.123Z"
        );
    }
}

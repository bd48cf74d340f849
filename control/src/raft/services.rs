//! Services in the replicated state: Docker's service spec (what to run,
//! how many, where, on which networks, with which ports), and the record
//! the leader keeps (VIPs per network, allocated when it is applied).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::state::{err, put, Change, Command, CommandResult};
use super::state::{ClusterState, NodeRecord, Role};
use super::tasks::DesiredState;
use super::updates::{UpdatePolicy, UpdateStatus};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Replicated { replicas: u64 },
    Global,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    #[default]
    Vip,
    Dnsrr,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetAttach {
    /// Network name or id, as given.
    pub target: String,
    #[serde(default)]
    pub aliases: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    #[default]
    Ingress,
    Host,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    pub published: u16,
    pub target: u16,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub mode: PublishMode,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    None,
    OnFailure,
    #[default]
    Any,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    pub condition: RestartCondition,
    /// Docker's default is 5 s.
    pub delay_ms: u64,
    /// 0: unlimited.
    pub max_attempts: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            condition: RestartCondition::Any,
            delay_ms: 5000,
            max_attempts: 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSpec {
    /// Run with `sh -c` inside the task's namespaces.
    pub cmd: String,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub retries: u64,
    pub start_period_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    pub mode: Mode,
    /// The task's process: argv.
    pub command: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub networks: Vec<NetAttach>,
    #[serde(default)]
    pub endpoint_mode: EndpointMode,
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    #[serde(default)]
    pub constraints: Vec<String>,
    #[serde(default)]
    pub placement_prefs: Vec<String>,
    #[serde(default)]
    pub max_per_node: u64,
    #[serde(default)]
    pub restart: RestartPolicy,
    #[serde(default)]
    pub health: Option<HealthSpec>,
    /// Docker's default is 10 s.
    pub stop_grace_ms: u64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub update: UpdatePolicy,
    #[serde(default)]
    pub rollback: UpdatePolicy,
    /// Bumped by `service update --force`: every task is replaced.
    #[serde(default)]
    pub force_update: u64,
}

/// A service's virtual IP on one of its networks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vip {
    pub network_id: String,
    pub addr: Ipv4Addr,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub id: String,
    pub spec: ServiceSpec,
    /// The networks' ids, in the spec's order.
    pub network_ids: Vec<String>,
    pub vips: Vec<Vip>,
    pub created_at: u64,
    pub updated_at: u64,
    pub version: u64,
    /// The spec before the last update (what a rollback returns to).
    #[serde(default)]
    pub previous_spec: Option<ServiceSpec>,
    #[serde(default)]
    pub update_status: Option<UpdateStatus>,
}

/// A placement constraint: `node.KEY==VALUE` or `!=`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Constraint {
    pub key: String,
    pub equal: bool,
    pub value: String,
}

impl Constraint {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (k, v, equal) = if let Some((k, v)) = s.split_once("!=") {
            (k, v, false)
        } else if let Some((k, v)) = s.split_once("==") {
            (k, v, true)
        } else {
            return Err(format!("constraint {s:?}: want KEY==VALUE or KEY!=VALUE"));
        };
        let (k, v) = (k.trim(), v.trim());
        let known = matches!(
            k,
            "node.id" | "node.hostname" | "node.role" | "node.platform.os"
        ) || k
            .strip_prefix("node.labels.")
            .is_some_and(|l| !l.is_empty());
        if !known || v.is_empty() {
            return Err(format!(
                "constraint {s:?}: unknown key {k:?} (node.id, node.hostname, node.role, node.platform.os, node.labels.KEY)"
            ));
        }
        Ok(Self {
            key: k.into(),
            equal,
            value: v.into(),
        })
    }

    pub fn matches(&self, n: &NodeRecord) -> bool {
        let actual = match self.key.as_str() {
            "node.id" => Some(n.id.clone()),
            "node.hostname" => Some(n.hostname.clone()),
            "node.role" => Some(
                match n.role {
                    Role::Manager => "manager",
                    Role::Worker => "worker",
                }
                .to_string(),
            ),
            "node.platform.os" => Some(std::env::consts::OS.to_string()),
            k => k
                .strip_prefix("node.labels.")
                .and_then(|l| n.labels.get(l).cloned()),
        };
        (actual.as_deref() == Some(self.value.as_str())) == self.equal
    }
}

impl ClusterState {
    pub fn service_by_key(&self, key: &str) -> Option<&ServiceRecord> {
        super::state::find_by_key(&self.services, key, |s| (&s.id, &s.spec.name))
    }

    /// Checks a spec against the state (names, networks, ports,
    /// constraints) and resolves its networks. `except`: the service being
    /// updated.
    pub fn check_service(
        &self,
        spec: &ServiceSpec,
        except: Option<&str>,
    ) -> Result<Vec<String>, String> {
        if spec.name.is_empty()
            || spec.name.len() > 63
            || !spec
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            || spec.name.starts_with('-')
        {
            return Err(format!("invalid service name {:?}", spec.name));
        }
        if self
            .services
            .values()
            .any(|s| s.spec.name == spec.name && Some(s.id.as_str()) != except)
        {
            return Err(format!("service {} already exists", spec.name));
        }
        if spec.command.is_empty() {
            return Err("a service needs a command to run (after --)".into());
        }
        spec.update.check("update")?;
        spec.rollback.check("rollback")?;
        for c in &spec.constraints {
            Constraint::parse(c)?;
        }
        let mut ids = vec![];
        for a in &spec.networks {
            let n = self
                .network_by_key(&a.target)
                .ok_or_else(|| format!("network {} not found", a.target))?;
            if n.spec.ingress {
                return Err(format!(
                    "network {} is the ingress network; publish ports to use it",
                    n.spec.name
                ));
            }
            if ids.contains(&n.id) {
                return Err(format!("network {} is attached twice", n.spec.name));
            }
            ids.push(n.id.clone());
        }
        let ingress_ports = spec.ports.iter().any(|p| p.mode == PublishMode::Ingress);
        if ingress_ports && spec.endpoint_mode == EndpointMode::Dnsrr {
            return Err(
                "ports published in ingress mode need a VIP: not with --endpoint-mode dnsrr".into(),
            );
        }
        if ingress_ports {
            // The routing mesh: the tasks join the ingress network (with a
            // VIP there, whose Maglev table every node uses).
            let ingress = self
                .networks
                .values()
                .find(|n| n.spec.ingress)
                .ok_or("no ingress network (was the swarm made by `swarm init`?)")?;
            ids.push(ingress.id.clone());
        }
        for (i, p) in spec.ports.iter().enumerate() {
            if p.published == 0 || p.target == 0 {
                return Err("ports must be 1-65535".into());
            }
            if spec.ports[..i]
                .iter()
                .any(|q| q.published == p.published && q.protocol == p.protocol)
            {
                return Err(format!("port {} is published twice", p.published));
            }
            if let Some(s) = self.services.values().find(|s| {
                Some(s.id.as_str()) != except
                    && s.spec.ports.iter().any(|q| {
                        q.published == p.published
                            && q.protocol == p.protocol
                            && q.mode == PublishMode::Ingress
                    })
            }) {
                if p.mode == PublishMode::Ingress {
                    return Err(format!(
                        "port {}/{:?} is already published by service {}",
                        p.published, p.protocol, s.spec.name
                    )
                    .to_lowercase());
                }
            }
        }
        Ok(ids)
    }
}

/// Docker's range for ports published without a number.
pub const DYNAMIC_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

impl ClusterState {
    /// Gives each ingress port published as 0 the lowest port of
    /// `DYNAMIC_PORTS` no other service (nor this spec) publishes.
    pub fn assign_published_ports(
        &self,
        spec: &mut ServiceSpec,
        except: Option<&str>,
    ) -> Result<(), String> {
        let mut used: std::collections::BTreeSet<(u16, Protocol)> = self
            .services
            .values()
            .filter(|s| Some(s.id.as_str()) != except)
            .flat_map(|s| s.spec.ports.iter())
            .chain(spec.ports.iter())
            .map(|p| (p.published, p.protocol))
            .collect();
        for p in spec
            .ports
            .iter_mut()
            .filter(|p| p.published == 0 && p.mode == PublishMode::Ingress)
        {
            let port = DYNAMIC_PORTS
                .clone()
                .find(|n| !used.contains(&(*n, p.protocol)))
                .ok_or("no free port left in 30000-32767")?;
            p.published = port;
            used.insert((port, p.protocol));
        }
        Ok(())
    }

    /// Applies a service command (see `ClusterState::apply`).
    pub(super) fn apply_service(
        &mut self,
        index: u64,
        cmd: Command,
    ) -> (CommandResult, Vec<Change>) {
        match cmd {
            Command::ServiceCreate { id, mut spec, now } => {
                if let Err(e) = self.assign_published_ports(&mut spec, None) {
                    return err(e);
                }
                let network_ids = match self.check_service(&spec, None) {
                    Ok(ids) => ids,
                    Err(e) => return err(e),
                };
                if self.services.contains_key(&id) {
                    return err(format!("service {id} already exists"));
                }
                let mut vips = vec![];
                if spec.endpoint_mode == super::services::EndpointMode::Vip {
                    for nid in &network_ids {
                        match self.free_addr(nid, &Default::default()) {
                            Some(addr) => vips.push(Vip {
                                network_id: nid.clone(),
                                addr,
                            }),
                            None => {
                                return err(format!("network {nid} has no free address for a VIP"))
                            }
                        }
                    }
                }
                let s = ServiceRecord {
                    id: id.clone(),
                    spec,
                    network_ids,
                    vips,
                    created_at: now,
                    updated_at: now,
                    version: index,
                    previous_spec: None,
                    update_status: None,
                };
                self.services.insert(id.clone(), s.clone());
                (
                    CommandResult::Service(s.clone()),
                    vec![put(format!("service/{id}"), &s)],
                )
            }
            Command::ServiceScale { id, replicas, now } => {
                let Some(mut s) = self.services.get(&id).cloned() else {
                    return err(format!("service {id} not found"));
                };
                if s.spec.mode == Mode::Global {
                    return err(format!(
                        "{}: scale can only be used with replicated mode",
                        s.spec.name
                    ));
                }
                s.spec.mode = Mode::Replicated { replicas };
                s.updated_at = now;
                s.version = index;
                self.services.insert(id.clone(), s.clone());
                (
                    CommandResult::Service(s.clone()),
                    vec![put(format!("service/{id}"), &s)],
                )
            }
            Command::ServiceRemove { id } => {
                let Some(s) = self.services.remove(&id) else {
                    return err(format!("service {id} not found"));
                };
                // Its tasks are told to stop; the orchestrator removes them
                // once they have.
                let mut changes = vec![Change::Delete(format!("service/{id}"))];
                let ids: Vec<String> = self
                    .tasks
                    .values()
                    .filter(|t| t.service_id == id)
                    .map(|t| t.id.clone())
                    .collect();
                changes.extend(self.set_desired(&ids, DesiredState::Shutdown, index));
                (CommandResult::Service(s), changes)
            }
            other => unreachable!("not a service command: {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraints_parse_and_match() {
        let c = Constraint::parse("node.labels.zone == b").unwrap();
        let mut n = NodeRecord {
            id: "x".into(),
            raft_id: None,
            hostname: "n2".into(),
            addr: "198.18.0.2".parse().unwrap(),
            role: Role::Worker,
            availability: super::super::state::Availability::Active,
            labels: Default::default(),
            state: super::super::state::NodeState::Ready,
            version: 0,
        };
        assert!(!c.matches(&n));
        n.labels.insert("zone".into(), "b".into());
        assert!(c.matches(&n));
        assert!(Constraint::parse("node.role!=manager").unwrap().matches(&n));
        assert!(Constraint::parse("node.hostname==n2").unwrap().matches(&n));
        for bad in [
            "node.role",
            "node.color==red",
            "node.labels.==x",
            "node.role==",
        ] {
            assert!(Constraint::parse(bad).is_err(), "{bad}");
        }
    }
}

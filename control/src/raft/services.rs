//! Services in the replicated state: Docker's service spec (what to run,
//! how many, where, on which networks, with which ports), and the record
//! the leader keeps (VIPs per network, allocated when it is applied).

use super::state::ClusterState;
use super::state::{err, put, Change};
use crate::wire::DesiredState;
use crate::wire::WireError;
use crate::wire::{Command, CommandResult};
use crate::wire::{EndpointMode, Mode, Protocol, PublishMode, ServiceRecord, ServiceSpec, Vip};
use crate::wire::{NodeRecord, Role};

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
    ) -> Result<Vec<String>, WireError> {
        if spec.name.is_empty()
            || spec.name.len() > 63
            || !spec
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            || spec.name.starts_with('-')
        {
            return Err(WireError::invalid(format!(
                "invalid service name {:?}",
                spec.name
            )));
        }
        if self
            .services
            .values()
            .any(|s| s.spec.name == spec.name && Some(s.id.as_str()) != except)
        {
            return Err(WireError::conflict(format!(
                "service {} already exists",
                spec.name
            )));
        }
        if spec.command.is_empty() {
            return Err(WireError::invalid(
                "a service needs a command to run (after --)",
            ));
        }
        spec.update.check("update").map_err(WireError::invalid)?;
        spec.rollback
            .check("rollback")
            .map_err(WireError::invalid)?;
        for c in &spec.constraints {
            Constraint::parse(c).map_err(WireError::invalid)?;
        }
        let mut ids = vec![];
        for a in &spec.networks {
            let n = self
                .network_by_key(&a.target)
                .ok_or_else(|| WireError::not_found(format!("network {} not found", a.target)))?;
            if n.spec.ingress {
                return Err(WireError::invalid(format!(
                    "network {} is the ingress network; publish ports to use it",
                    n.spec.name
                )));
            }
            if ids.contains(&n.id) {
                return Err(WireError::invalid(format!(
                    "network {} is attached twice",
                    n.spec.name
                )));
            }
            ids.push(n.id.clone());
        }
        let ingress_ports = spec.ports.iter().any(|p| p.mode == PublishMode::Ingress);
        if ingress_ports && spec.endpoint_mode == EndpointMode::Dnsrr {
            return Err(WireError::invalid(
                "ports published in ingress mode need a VIP: not with --endpoint-mode dnsrr",
            ));
        }
        if ingress_ports {
            // The routing mesh: the tasks join the ingress network (with a
            // VIP there, whose Maglev table every node uses).
            let ingress = self
                .networks
                .values()
                .find(|n| n.spec.ingress)
                .ok_or_else(|| {
                    WireError::unavailable(
                        "no ingress network (was the swarm made by `swarm init`?)",
                    )
                })?;
            ids.push(ingress.id.clone());
        }
        for (i, p) in spec.ports.iter().enumerate() {
            if p.published == 0 || p.target == 0 {
                return Err(WireError::invalid("ports must be 1-65535"));
            }
            if spec.ports[..i]
                .iter()
                .any(|q| q.published == p.published && q.protocol == p.protocol)
            {
                return Err(WireError::invalid(format!(
                    "port {} is published twice",
                    p.published
                )));
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
                    return Err(WireError::conflict(
                        format!(
                            "port {}/{:?} is already published by service {}",
                            p.published, p.protocol, s.spec.name
                        )
                        .to_lowercase(),
                    ));
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
    ) -> Result<(), WireError> {
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
                .ok_or_else(|| WireError::conflict("no free port left in 30000-32767"))?;
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
                    return err(WireError::conflict(format!("service {id} already exists")));
                }
                let mut vips = vec![];
                if spec.endpoint_mode == crate::wire::EndpointMode::Vip {
                    for nid in &network_ids {
                        match self.free_addr(nid, &Default::default()) {
                            Some(addr) => vips.push(Vip {
                                network_id: nid.clone(),
                                addr,
                            }),
                            None => {
                                return err(WireError::conflict(format!(
                                    "network {nid} has no free address for a VIP"
                                )))
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
                    return err(WireError::not_found(format!("service {id} not found")));
                };
                if s.spec.mode == Mode::Global {
                    return err(WireError::invalid(format!(
                        "{}: scale can only be used with replicated mode",
                        s.spec.name
                    )));
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
                    return err(WireError::not_found(format!("service {id} not found")));
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
            ipsec: Default::default(),
            cert_not_after_ms: None,
            cert_issuer: None,
            id: "x".into(),
            raft_id: None,
            hostname: "n2".into(),
            addr: "198.18.0.2".parse().unwrap(),
            role: Role::Worker,
            availability: crate::wire::Availability::Active,
            labels: Default::default(),
            state: crate::wire::NodeState::Ready,
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

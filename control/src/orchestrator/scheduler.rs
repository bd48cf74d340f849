//! Where a new task goes: nodes that are ready and active, satisfy the
//! service's constraints and have room under its max-per-node; among them
//! the one with the fewest tasks of this service, then the fewest tasks
//! overall, then by hostname (stable). Placement preferences
//! (`spread=node.labels.KEY`) first pick the label value with the fewest
//! tasks of the service. A node where a port the service publishes in host
//! mode is taken (by any task) is no candidate, and takes one such task at
//! most.

use std::collections::{BTreeMap, BTreeSet};

use crate::raft::services::Constraint;
use crate::raft::state::ClusterState;
use crate::wire::{Availability, NodeRecord, NodeState};
use crate::wire::{Protocol, PublishMode, ServiceRecord};

/// Running-or-coming tasks per node: of this service, and of all.
#[derive(Default, Clone)]
pub struct Load {
    pub of_service: BTreeMap<String, BTreeMap<String, u64>>,
    pub total: BTreeMap<String, u64>,
    /// Host-mode ports taken per node.
    pub host_ports: BTreeMap<String, BTreeSet<(u16, Protocol)>>,
}

/// The ports a service publishes in host mode.
pub fn host_ports(s: &ServiceRecord) -> BTreeSet<(u16, Protocol)> {
    s.spec
        .ports
        .iter()
        .filter(|p| p.mode == PublishMode::Host)
        .map(|p| (p.published, p.protocol))
        .collect()
}

impl Load {
    pub fn of(st: &ClusterState) -> Self {
        let mut l = Load::default();
        for t in st.tasks.values() {
            if t.desired != crate::wire::DesiredState::Running || t.state.is_terminal() {
                continue;
            }
            if let Some(n) = &t.node_id {
                match st.services.get(&t.service_id) {
                    Some(s) => l.add_task(s, n),
                    None => l.add(&t.service_id, n),
                }
            }
        }
        l
    }

    /// A task of `s` placed on `node`: its load and its host ports.
    pub fn add_task(&mut self, s: &ServiceRecord, node: &str) {
        self.add(&s.id, node);
        let ports = host_ports(s);
        if !ports.is_empty() {
            self.host_ports
                .entry(node.to_string())
                .or_default()
                .extend(ports);
        }
    }

    /// Whether `s`'s host-mode ports are free on `node`.
    fn ports_free(&self, s: &ServiceRecord, node: &str) -> bool {
        let want = host_ports(s);
        want.is_empty()
            || self
                .host_ports
                .get(node)
                .is_none_or(|taken| taken.is_disjoint(&want))
    }

    pub fn add(&mut self, service: &str, node: &str) {
        *self
            .of_service
            .entry(service.to_string())
            .or_default()
            .entry(node.to_string())
            .or_default() += 1;
        *self.total.entry(node.to_string()).or_default() += 1;
    }

    fn service_on(&self, service: &str, node: &str) -> u64 {
        self.of_service
            .get(service)
            .and_then(|m| m.get(node))
            .copied()
            .unwrap_or(0)
    }
}

/// Whether `n` may take a new task of `s` at all (ignoring load).
pub fn eligible(st: &ClusterState, s: &ServiceRecord, n: &NodeRecord) -> bool {
    fits(&constraints(s), n) && (!needs_ipsec(st, s) || n.ipsec.why_not().is_none())
}

/// Whether one of `s`'s networks is encrypted: its tasks go only to nodes
/// that can encrypt (never in clear as a fallback).
fn needs_ipsec(st: &ClusterState, s: &ServiceRecord) -> bool {
    s.spec.networks.iter().any(|a| {
        st.network_by_key(&a.target)
            .is_some_and(|n| n.spec.encrypted)
    })
}

/// Why no ready node can encrypt, if none can: the first one's reason.
fn no_ipsec(st: &ClusterState, s: &ServiceRecord) -> Option<String> {
    if !needs_ipsec(st, s) {
        return None;
    }
    let ready: Vec<&NodeRecord> = st
        .nodes
        .values()
        .filter(|n| n.state == NodeState::Ready)
        .collect();
    if ready.iter().any(|n| n.ipsec.why_not().is_none()) {
        return None;
    }
    let first = ready
        .first()
        .and_then(|n| n.ipsec.why_not().map(|w| format!("{}: {w}", n.hostname)))
        .unwrap_or_else(|| "no node is ready".into());
    Some(format!(
        "no suitable node (an encrypted network's tasks need IPsec; no ready node can encrypt: {first})"
    ))
}

/// The service's constraints (validated when the service was created).
fn constraints(s: &ServiceRecord) -> Vec<Constraint> {
    s.spec
        .constraints
        .iter()
        .filter_map(|c| Constraint::parse(c).ok())
        .collect()
}

fn fits(cs: &[Constraint], n: &NodeRecord) -> bool {
    n.state == NodeState::Ready
        && n.availability == Availability::Active
        && cs.iter().all(|c| c.matches(n))
}

/// Places the tasks of one service within one pass: the eligible nodes in
/// an ordered set keyed by (tasks of the service, tasks in all, hostname),
/// so each placement is O(log nodes) instead of a scan (Swarm2000 scale).
/// Services with placement preferences use `pick` instead.
pub struct Placer {
    set: std::collections::BTreeSet<(u64, u64, String, String)>,
    max_per_node: u64,
    reason: String,
}

impl Placer {
    pub fn new(st: &ClusterState, s: &ServiceRecord, load: &Load) -> Self {
        let cs = constraints(s);
        let ipsec = needs_ipsec(st, s);
        let set = st
            .nodes
            .values()
            .filter(|n| fits(&cs, n) && (!ipsec || n.ipsec.why_not().is_none()))
            .map(|n| {
                (
                    load.service_on(&s.id, &n.id),
                    load.total.get(&n.id).copied().unwrap_or(0),
                    n.hostname.clone(),
                    n.id.clone(),
                )
            })
            .filter(|e| s.spec.max_per_node == 0 || e.0 < s.spec.max_per_node)
            .filter(|e| load.ports_free(s, &e.3))
            .collect();
        let ready = st
            .nodes
            .values()
            .filter(|n| n.state == NodeState::Ready)
            .count();
        let host = !host_ports(s).is_empty();
        Self {
            set,
            // Host-mode ports: one task per node.
            max_per_node: if host { 1 } else { s.spec.max_per_node },
            reason: no_ipsec(st, s).unwrap_or_else(|| no_node(s, ready)),
        }
    }

    pub fn pick(&mut self) -> Result<String, String> {
        let Some((svc, total, host, id)) = self.set.pop_first() else {
            return Err(self.reason.clone());
        };
        if self.max_per_node == 0 || svc + 1 < self.max_per_node {
            self.set.insert((svc + 1, total + 1, host, id.clone()));
        }
        Ok(id)
    }
}

fn no_node(s: &ServiceRecord, ready: usize) -> String {
    if !host_ports(s).is_empty() {
        format!("no suitable node (host-mode port already in use on {ready} nodes)")
    } else if s.spec.max_per_node > 0 {
        format!(
            "no suitable node (max replicas per node limit exceed; scheduling constraints not satisfied on {ready} nodes)"
        )
    } else {
        format!("no suitable node (scheduling constraints not satisfied on {ready} nodes)")
    }
}

/// The node for a new task of `s`, or why there is none (Docker's words).
pub fn pick(st: &ClusterState, s: &ServiceRecord, load: &Load) -> Result<String, String> {
    let fits: Vec<&NodeRecord> = st
        .nodes
        .values()
        .filter(|n| eligible(st, s, n))
        .filter(|n| s.spec.max_per_node == 0 || load.service_on(&s.id, &n.id) < s.spec.max_per_node)
        .filter(|n| load.ports_free(s, &n.id))
        .collect();
    if let (true, Some(why)) = (fits.is_empty(), no_ipsec(st, s)) {
        return Err(why);
    }
    if fits.is_empty() {
        let ready = st
            .nodes
            .values()
            .filter(|n| n.state == NodeState::Ready)
            .count();
        return Err(if !host_ports(s).is_empty() {
            no_node(s, ready)
        } else if s.spec.max_per_node > 0 {
            format!(
                "no suitable node (max replicas per node limit exceed; scheduling constraints not satisfied on {ready} nodes)"
            )
        } else {
            format!("no suitable node (scheduling constraints not satisfied on {ready} nodes)")
        });
    }
    // Spread over a label's values first, if asked.
    let mut candidates = fits;
    for pref in &s.spec.placement_prefs {
        let Some(key) = pref.strip_prefix("spread=node.labels.") else {
            continue;
        };
        let mut per_value: BTreeMap<Option<&String>, u64> = BTreeMap::new();
        for n in st.nodes.values() {
            *per_value.entry(n.labels.get(key)).or_default() += load.service_on(&s.id, &n.id);
        }
        let best = candidates
            .iter()
            .map(|n| per_value.get(&n.labels.get(key)).copied().unwrap_or(0))
            .min()
            .unwrap_or(0);
        candidates.retain(|n| per_value.get(&n.labels.get(key)).copied().unwrap_or(0) == best);
    }
    candidates
        .into_iter()
        .min_by_key(|n| {
            (
                load.service_on(&s.id, &n.id),
                load.total.get(&n.id).copied().unwrap_or(0),
                n.hostname.clone(),
            )
        })
        .map(|n| n.id.clone())
        .ok_or_else(|| "no suitable node".into())
}

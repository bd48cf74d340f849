//! Where a new task goes: nodes that are ready and active, satisfy the
//! service's constraints and have room under its max-per-node; among them
//! the one with the fewest tasks of this service, then the fewest tasks
//! overall, then by hostname (stable). Placement preferences
//! (`spread=node.labels.KEY`) first pick the label value with the fewest
//! tasks of the service.

use std::collections::BTreeMap;

use crate::raft::services::{Constraint, ServiceRecord};
use crate::raft::state::{Availability, ClusterState, NodeRecord, NodeState};

/// Running-or-coming tasks per node: of this service, and of all.
#[derive(Default, Clone)]
pub struct Load {
    pub of_service: BTreeMap<String, BTreeMap<String, u64>>,
    pub total: BTreeMap<String, u64>,
}

impl Load {
    pub fn of(st: &ClusterState) -> Self {
        let mut l = Load::default();
        for t in st.tasks.values() {
            if t.desired != crate::raft::tasks::DesiredState::Running || t.state.is_terminal() {
                continue;
            }
            if let Some(n) = &t.node_id {
                l.add(&t.service_id, n);
            }
        }
        l
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
pub fn eligible(s: &ServiceRecord, n: &NodeRecord) -> bool {
    fits(&constraints(s), n)
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
        let set = st
            .nodes
            .values()
            .filter(|n| fits(&cs, n))
            .map(|n| {
                (
                    load.service_on(&s.id, &n.id),
                    load.total.get(&n.id).copied().unwrap_or(0),
                    n.hostname.clone(),
                    n.id.clone(),
                )
            })
            .filter(|e| s.spec.max_per_node == 0 || e.0 < s.spec.max_per_node)
            .collect();
        let ready = st
            .nodes
            .values()
            .filter(|n| n.state == NodeState::Ready)
            .count();
        Self {
            set,
            max_per_node: s.spec.max_per_node,
            reason: no_node(s, ready),
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
    if s.spec.max_per_node > 0 {
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
        .filter(|n| eligible(s, n))
        .filter(|n| s.spec.max_per_node == 0 || load.service_on(&s.id, &n.id) < s.spec.max_per_node)
        .collect();
    if fits.is_empty() {
        let ready = st
            .nodes
            .values()
            .filter(|n| n.state == NodeState::Ready)
            .count();
        return Err(if s.spec.max_per_node > 0 {
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

//! Tasks in the replicated state: one per replica slot (or per node, for
//! global services), with swarmkit's states, the node it runs on, and its
//! address on each of the service's networks.

use std::net::Ipv4Addr;

use super::state::{err, put, Change, ClusterState, Command, CommandResult};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// swarmkit's task states, in the order a task moves through them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    New,
    Pending,
    Assigned,
    Accepted,
    Preparing,
    Starting,
    Running,
    Complete,
    Shutdown,
    Failed,
    Rejected,
    Orphaned,
}

impl TaskState {
    /// Finished: the process is gone (or never came).
    pub fn is_terminal(self) -> bool {
        self >= TaskState::Complete
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    Running,
    Shutdown,
}

/// A task's address on one network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskAddr {
    pub network_id: String,
    pub addr: Ipv4Addr,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub id: String,
    pub service_id: String,
    pub service_name: String,
    /// Replica slot (1..N); 0 for global tasks (one per node).
    pub slot: u64,
    pub node_id: Option<String>,
    pub desired: DesiredState,
    pub state: TaskState,
    /// Why it is in this state (a scheduling refusal, an exit code).
    pub err: Option<String>,
    pub exit_code: Option<i32>,
    pub networks: Vec<TaskAddr>,
    pub created_at: u64,
    /// When `state` last changed (ms since the epoch).
    pub state_at: u64,
    pub version: u64,
    /// What it runs (its service's spec when it was made).
    #[serde(default)]
    pub spec: super::updates::TaskSpec,
}

impl TaskRecord {
    /// Docker's task name: `SERVICE.SLOT.ID` (global: `SERVICE.NODEID.ID`).
    pub fn name(&self) -> String {
        let slot = if self.slot == 0 {
            self.node_id.clone().unwrap_or_default()
        } else {
            self.slot.to_string()
        };
        format!("{}.{}.{}", self.service_name, slot, self.id)
    }

    /// `web.1` (or `web.NODEID` for global tasks), as `service ps` shows.
    pub fn short_name(&self) -> String {
        if self.slot == 0 {
            format!(
                "{}.{}",
                self.service_name,
                self.node_id.clone().unwrap_or_default()
            )
        } else {
            format!("{}.{}", self.service_name, self.slot)
        }
    }
}

/// A new task the orchestrator asks for (addresses are allocated when the
/// command is applied).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTask {
    pub id: String,
    pub service_id: String,
    pub slot: u64,
    pub node_id: Option<String>,
    /// Why it has no node, if it has none.
    pub err: Option<String>,
}

/// A node's report of one of its tasks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskReport {
    pub id: String,
    pub state: TaskState,
    pub err: Option<String>,
    pub exit_code: Option<i32>,
}

impl ClusterState {
    /// Applies a task command (see `ClusterState::apply`).
    pub(super) fn apply_task(&mut self, index: u64, cmd: Command) -> (CommandResult, Vec<Change>) {
        match cmd {
            Command::TaskCreate { tasks, now } => self.create_tasks(index, tasks, now),
            Command::TaskAssign { id, node_id, now } => {
                let Some(mut t) = self.tasks.get(&id).cloned() else {
                    return err(format!("no such task: {id}"));
                };
                if t.state != TaskState::Pending {
                    return err(format!("task {id} is not pending"));
                }
                let nets: Vec<String> = t.networks.iter().map(|a| a.network_id.clone()).collect();
                let mut changes = self.ensure_lb_addrs(&node_id, &nets);
                t.node_id = Some(node_id);
                t.state = TaskState::Assigned;
                t.err = None;
                t.state_at = now;
                t.version = index;
                self.tasks.insert(id.clone(), t.clone());
                changes.push(put(format!("task/{id}"), &t));
                (CommandResult::Ok, changes)
            }
            Command::TaskDesired { ids, desired } => {
                (CommandResult::Ok, self.set_desired(&ids, desired, index))
            }
            Command::TaskReports { reports, now } => {
                let mut changes = vec![];
                for r in reports {
                    let Some(t) = self.tasks.get_mut(&r.id) else {
                        continue;
                    };
                    // States only move forward (a late report of an older
                    // state is ignored).
                    if r.state <= t.state {
                        continue;
                    }
                    t.state = r.state;
                    t.err = r.err;
                    t.exit_code = r.exit_code;
                    t.state_at = now;
                    t.version = index;
                    changes.push(put(format!("task/{}", t.id), &*t));
                }
                (CommandResult::Ok, changes)
            }
            Command::TaskRemove { ids } => (CommandResult::Ok, self.remove_tasks(&ids)),
            other => unreachable!("not a task command: {other:?}"),
        }
    }

    pub(super) fn set_desired(
        &mut self,
        ids: &[String],
        desired: DesiredState,
        index: u64,
    ) -> Vec<Change> {
        let mut changes = vec![];
        for id in ids {
            if let Some(t) = self.tasks.get_mut(id) {
                if t.desired != desired {
                    t.desired = desired;
                    t.version = index;
                    changes.push(put(format!("task/{id}"), &*t));
                }
            }
        }
        changes
    }

    /// Removes tasks, and the balancer addresses of nodes left without a
    /// task on a network.
    pub(super) fn remove_tasks(&mut self, ids: &[String]) -> Vec<Change> {
        let mut changes: Vec<Change> = ids
            .iter()
            .filter(|id| self.tasks.remove(*id).is_some())
            .map(|id| Change::Delete(format!("task/{id}")))
            .collect();
        if !changes.is_empty() && !self.lb_addrs.is_empty() {
            let ingress = self.ingress_id();
            let in_use: BTreeSet<(&str, &str)> = self
                .tasks
                .values()
                .filter_map(|t| Some((t, t.node_id.as_deref()?)))
                .flat_map(|(t, n)| t.networks.iter().map(move |a| (a.network_id.as_str(), n)))
                .collect();
            let gone: BTreeSet<String> = self
                .lb_addrs
                .iter()
                .filter(|(_, a)| Some(&a.network_id) != ingress.as_ref())
                .filter(|(_, a)| !in_use.contains(&(a.network_id.as_str(), a.node_id.as_str())))
                .map(|(k, _)| k.clone())
                .collect();
            changes.extend(self.drop_lb_addrs(|a| {
                gone.contains(&super::lb_addrs::key(&a.network_id, &a.node_id))
            }));
        }
        changes
    }

    /// New tasks with an address on each of their service's networks.
    fn create_tasks(
        &mut self,
        index: u64,
        tasks: Vec<NewTask>,
        now: u64,
    ) -> (CommandResult, Vec<Change>) {
        let mut changes = vec![];
        // Per network in this batch: the used set (computed once) and where
        // the lowest-free scan resumes (allocations only go up within a
        // batch), so a batch is linear in the network's size.
        let mut pools: BTreeMap<String, (BTreeSet<Ipv4Addr>, Ipv4Addr)> = BTreeMap::new();
        let mut lb_wanted: BTreeSet<(String, Vec<String>)> = BTreeSet::new();
        for nt in tasks {
            let Some(s) = self.services.get(&nt.service_id).cloned() else {
                continue;
            };
            if self.tasks.contains_key(&nt.id) {
                continue;
            }
            let mut networks = vec![];
            for nid in &s.network_ids {
                let Some(net) = self.networks.get(nid) else {
                    return err(format!("network {nid} not found"));
                };
                let subnet = net.subnet;
                let (used, from) = pools
                    .entry(nid.clone())
                    .or_insert_with(|| (self.used_addrs(nid), subnet.network()));
                let last_host = u32::from(subnet.broadcast()).saturating_sub(1);
                let found = (u32::from(*from) + 1..=last_host)
                    .map(Ipv4Addr::from)
                    .find(|a| !used.contains(a));
                match found {
                    Some(addr) => {
                        used.insert(addr);
                        *from = addr;
                        networks.push(TaskAddr {
                            network_id: nid.clone(),
                            addr,
                        })
                    }
                    None => return err(format!("network {nid} has no free address")),
                }
            }
            let nt_node = nt.node_id.clone();
            let t = TaskRecord {
                id: nt.id.clone(),
                service_id: s.id.clone(),
                service_name: s.spec.name.clone(),
                slot: nt.slot,
                state: if nt.node_id.is_some() {
                    TaskState::Assigned
                } else {
                    TaskState::Pending
                },
                node_id: nt.node_id,
                desired: DesiredState::Running,
                err: nt.err,
                exit_code: None,
                networks,
                created_at: now,
                state_at: now,
                version: index,
                spec: super::updates::TaskSpec::of(&s.spec),
            };
            changes.push(put(format!("task/{}", t.id), &t));
            self.tasks.insert(t.id.clone(), t);
            lb_wanted.extend(nt_node.map(|n| (n, s.network_ids.clone())));
        }
        // After the batch: its task addresses come first, in order.
        for (node, nets) in lb_wanted {
            changes.extend(self.ensure_lb_addrs(&node, &nets));
        }
        (CommandResult::Ok, changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_order_and_words() {
        assert!(TaskState::Running < TaskState::Complete);
        assert!(TaskState::Failed.is_terminal() && !TaskState::Running.is_terminal());
        assert_eq!(
            serde_json::to_string(&TaskState::Running).unwrap(),
            "\"running\""
        );
    }
}

/// A network as a node needs it to attach a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignedNet {
    pub name: String,
    pub vni: u32,
    pub subnet: ipnet::Ipv4Net,
    pub gateway: Ipv4Addr,
    pub addr: Ipv4Addr,
    pub aliases: Vec<String>,
    /// The service's VIP on this network.
    pub vip: Option<Ipv4Addr>,
    /// This node's balancer address on the network (IPVS mode).
    #[serde(default)]
    pub lb_addr: Option<Ipv4Addr>,
}

/// What a node is told about one of its tasks at each heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub task: TaskRecord,
    pub command: Vec<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub stop_grace_ms: u64,
    pub networks: Vec<AssignedNet>,
    #[serde(default)]
    pub health: Option<super::services::HealthSpec>,
    /// Ports the service publishes in host mode: on this node, straight to
    /// this task.
    #[serde(default)]
    pub host_ports: Vec<super::services::PortSpec>,
}

impl super::state::ClusterState {
    /// The tasks `node_id` should run or stop, with what it needs for them.
    pub fn assignments(&self, node_id: &str) -> Vec<Assignment> {
        self.tasks
            .values()
            .filter(|t| t.node_id.as_deref() == Some(node_id))
            .filter(|t| t.desired == DesiredState::Running || !t.state.is_terminal())
            .map(|t| {
                let s = self.services.get(&t.service_id);
                let networks = t
                    .networks
                    .iter()
                    .filter_map(|a| {
                        let n = self.networks.get(&a.network_id)?;
                        // The task's networks are its spec's, in order.
                        let aliases = t
                            .networks
                            .iter()
                            .position(|x| x.network_id == a.network_id)
                            .and_then(|i| t.spec.networks.get(i))
                            .map(|att| att.aliases.clone())
                            .unwrap_or_default();
                        let vip = s.and_then(|s| {
                            s.vips
                                .iter()
                                .find(|v| v.network_id == a.network_id)
                                .map(|v| v.addr)
                        });
                        Some(AssignedNet {
                            vip,
                            lb_addr: self.lb_addr(&a.network_id, node_id),
                            name: n.spec.name.clone(),
                            vni: n.vni,
                            subnet: n.subnet,
                            gateway: n.gateway,
                            addr: a.addr,
                            aliases,
                        })
                    })
                    .collect();
                Assignment {
                    task: t.clone(),
                    command: t.spec.command.clone(),
                    env: t.spec.env.clone(),
                    workdir: t.spec.workdir.clone(),
                    stop_grace_ms: t.spec.stop_grace_ms,
                    networks,
                    health: t.spec.health.clone(),
                    host_ports: s
                        .map(|s| {
                            s.spec
                                .ports
                                .iter()
                                .filter(|p| p.mode == super::services::PublishMode::Host)
                                .cloned()
                                .collect()
                        })
                        .unwrap_or_default(),
                }
            })
            .collect()
    }
}

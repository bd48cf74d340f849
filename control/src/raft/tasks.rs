//! Tasks in the replicated state: one per replica slot (or per node, for
//! global services), with swarmkit's states, the node it runs on, and its
//! address on each of the service's networks.

use std::net::Ipv4Addr;

use super::state::{err, put, Change, ClusterState};
use crate::wire::WireError;
use crate::wire::{
    AssignedNet, Assignment, DesiredState, NewTask, TaskAddr, TaskRecord, TaskState,
};
use crate::wire::{Command, CommandResult};
use std::collections::{BTreeMap, BTreeSet};

impl ClusterState {
    /// Applies a task command (see `ClusterState::apply`).
    pub(super) fn apply_task(&mut self, index: u64, cmd: Command) -> (CommandResult, Vec<Change>) {
        match cmd {
            Command::TaskCreate { tasks, now } => self.create_tasks(index, tasks, now),
            Command::TaskAssign { id, node_id, now } => {
                let Some(mut t) = self.tasks.get(&id).cloned() else {
                    return err(WireError::not_found(format!("no such task: {id}")));
                };
                if t.state != TaskState::Pending {
                    return err(WireError::conflict(format!("task {id} is not pending")));
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
        if !changes.is_empty() {
            changes.extend(self.prune_lb_addrs());
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
                    return err(WireError::not_found(format!("network {nid} not found")));
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
                    None => {
                        return err(WireError::conflict(format!(
                            "network {nid} has no free address"
                        )))
                    }
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
                spec: crate::wire::TaskSpec::of(&s.spec),
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
                            encrypted: n.spec.encrypted,
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
                                .filter(|p| p.mode == crate::wire::PublishMode::Host)
                                .cloned()
                                .collect()
                        })
                        .unwrap_or_default(),
                }
            })
            .collect()
    }
}

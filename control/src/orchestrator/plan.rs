//! One reconciliation pass of the leader, as a pure function of the state:
//! which tasks to stop, create, assign and forget, as Raft commands.
//!
//! - A replicated service keeps one live task in each slot 1..N; a global
//!   one keeps one on every eligible node.
//! - A task stops (desired shutdown) when its node is down, drained or
//!   gone, when it no longer fits a global service's constraints, when its
//!   slot is above the replica count, or when it ended by itself.
//! - An empty slot gets a new task at once if its previous task was moved
//!   (node down, drain); after the restart delay if it ended by itself, and
//!   only as the restart policy allows.
//! - A task that fits nowhere stays pending with the scheduler's reason and
//!   is assigned when a node fits.
//! - A service being updated has its out-of-date tasks replaced in batches
//!   (`update.rs`).
//! - Finished tasks are kept as history, 5 per slot (Docker's default), and
//!   tasks of removed services are forgotten once they stopped.

use std::collections::{BTreeMap, BTreeSet};

use super::scheduler::{eligible, pick, Load, Placer};
use super::update;
use crate::raft::state::ClusterState;
use crate::wire::{Availability, Command, NodeState};
use crate::wire::{DesiredState, NewTask, TaskRecord, TaskState};
use crate::wire::{Mode, RestartCondition, ServiceRecord};

/// Finished tasks kept per slot.
pub const HISTORY: usize = 5;

/// New tasks per `TaskCreate` (a task is about half a kilobyte of JSON).
pub const MAX_TASKS_PER_CREATE: usize = 1000;

/// Task ids per `TaskDesired` or `TaskRemove`.
pub const MAX_IDS_PER_COMMAND: usize = 5000;

/// The commands that bring the state closer to the specs.
pub fn plan(st: &ClusterState, now: u64, new_id: &mut dyn FnMut() -> String) -> Vec<Command> {
    plan_until(st, now, new_id).0
}

/// [`plan`], and when the same state would next plan something because
/// time moved (a restart delay ending; while a rolling update runs, its
/// monitor and delay: at once), or None if only a change of the state
/// can make it plan more.
pub fn plan_until(
    st: &ClusterState,
    now: u64,
    new_id: &mut dyn FnMut() -> String,
) -> (Vec<Command>, Option<u64>) {
    let mut due: Option<u64> = None;
    let mut due_at = |t: u64| due = Some(due.map_or(t, |d| d.min(t)));
    let mut stop: Vec<String> = vec![];
    let mut create: Vec<NewTask> = vec![];
    let mut assign: Vec<Command> = vec![];
    let mut forget: Vec<String> = vec![];
    let mut verdicts: Vec<Command> = vec![];
    let mut load = Load::of(st);
    // Addresses still free per network, counted as new tasks take them.
    let mut free: BTreeMap<String, usize> = BTreeMap::new();

    for s in st.services.values() {
        let tasks: Vec<&TaskRecord> = st.tasks.values().filter(|t| t.service_id == s.id).collect();
        // Slot key: the replica number, or the node for global services.
        let key = |t: &TaskRecord| -> String {
            if t.slot == 0 {
                t.node_id.clone().unwrap_or_default()
            } else {
                t.slot.to_string()
            }
        };
        let mut occupied: BTreeSet<String> = BTreeSet::new();
        let mut placer: Option<Placer> = None;
        let upd = update::step(st, s, &tasks, &key, now);
        if s.update_status
            .as_ref()
            .is_some_and(|u| u.state.is_active())
        {
            due_at(now);
        }
        verdicts.extend(upd.status);
        for t in tasks.iter().filter(|t| t.desired == DesiredState::Running) {
            if upd.stop.contains(&t.id) {
                stop.push(t.id.clone());
                continue;
            }
            let node = t.node_id.as_ref().and_then(|n| st.nodes.get(n));
            let node_gone = t.node_id.is_some()
                && node.is_none_or(|n| {
                    n.state == NodeState::Down || n.availability == Availability::Drain
                });
            let misfit = match (&s.spec.mode, node) {
                (Mode::Global, Some(n)) => !eligible(st, s, n) && n.state == NodeState::Ready,
                (Mode::Replicated { replicas }, _) => t.slot > *replicas,
                _ => false,
            };
            if node_gone || misfit || t.state.is_terminal() {
                stop.push(t.id.clone());
            } else {
                occupied.insert(key(t));
                if t.state == TaskState::Pending && t.node_id.is_none() {
                    if let Ok(node_id) = place(&mut placer, st, s, &load) {
                        load.add_task(s, &node_id);
                        assign.push(Command::TaskAssign {
                            id: t.id.clone(),
                            node_id,
                            now,
                        });
                    }
                }
            }
        }
        let wanted: Vec<(u64, Option<String>)> = match &s.spec.mode {
            Mode::Replicated { replicas } => (1..=*replicas).map(|i| (i, None)).collect(),
            Mode::Global => st
                .nodes
                .values()
                .filter(|n| eligible(st, s, n))
                .map(|n| (0, Some(n.id.clone())))
                .collect(),
        };
        for (slot, node) in wanted {
            let k = if slot == 0 {
                node.clone().unwrap_or_default()
            } else {
                slot.to_string()
            };
            let beside = upd.start_beside.contains(&k);
            if occupied.contains(&k) && !beside {
                continue;
            }
            if !beside {
                match may_restart(s, tasks.iter().copied().filter(|t| key(t) == k), now) {
                    Restart::Now => {}
                    Restart::At(t) => {
                        due_at(t);
                        continue;
                    }
                    Restart::Never => continue,
                }
            }
            // Only as many new tasks as their networks have addresses:
            // `TaskCreate` refuses a batch it cannot allocate whole, and
            // proposing it again every pass filled the Raft log (2.6 GB
            // in five minutes with 10,000 replicas on a /24). The rest
            // wait until addresses are free (`service ls` shows the
            // shortfall).
            let left = |nid: &String, free: &mut BTreeMap<String, usize>| {
                *free
                    .entry(nid.clone())
                    .or_insert_with(|| st.free_addr_count(nid))
            };
            if s.network_ids.iter().any(|nid| left(nid, &mut free) == 0) {
                continue;
            }
            for nid in &s.network_ids {
                if let Some(n) = free.get_mut(nid) {
                    *n -= 1;
                }
            }
            let (node_id, err) = match node {
                Some(n) => (Some(n), None),
                None => match place(&mut placer, st, s, &load) {
                    Ok(n) => (Some(n), None),
                    Err(e) => (None, Some(e)),
                },
            };
            if let Some(n) = &node_id {
                load.add_task(s, n);
            }
            create.push(NewTask {
                id: new_id(),
                service_id: s.id.clone(),
                slot,
                node_id,
                err,
            });
        }
        // History: the newest finished tasks per slot.
        let mut by_slot: BTreeMap<String, Vec<&TaskRecord>> = BTreeMap::new();
        for t in tasks
            .iter()
            .filter(|t| t.desired == DesiredState::Shutdown && t.state.is_terminal())
        {
            by_slot.entry(key(t)).or_default().push(t);
        }
        for (_, mut old) in by_slot {
            old.sort_by_key(|t| std::cmp::Reverse((t.state_at, t.version)));
            forget.extend(old.iter().skip(HISTORY).map(|t| t.id.clone()));
        }
    }
    // Tasks of removed services: forgotten once stopped (or their node is
    // gone, or they never had one).
    for t in st
        .tasks
        .values()
        .filter(|t| !st.services.contains_key(&t.service_id))
    {
        let node_down = t
            .node_id
            .as_ref()
            .and_then(|n| st.nodes.get(n))
            .is_none_or(|n| n.state == NodeState::Down);
        if t.state.is_terminal() || node_down {
            forget.push(t.id.clone());
        } else if t.desired == DesiredState::Running {
            stop.push(t.id.clone());
        }
    }
    // Bounded batches: each command is one Raft entry, and an entry must
    // reach every manager in one AppendEntries body (`raft::RAFT_BODY_LIMIT`
    // over `max_payload_entries` of them). One TaskCreate of 96,287 tasks
    // was tens of megabytes, and no follower could take it.
    let mut cmds = vec![];
    for ids in stop.chunks(MAX_IDS_PER_COMMAND) {
        cmds.push(Command::TaskDesired {
            ids: ids.to_vec(),
            desired: DesiredState::Shutdown,
        });
    }
    let mut create = create.into_iter().peekable();
    while create.peek().is_some() {
        let tasks: Vec<NewTask> = create.by_ref().take(MAX_TASKS_PER_CREATE).collect();
        cmds.push(Command::TaskCreate { tasks, now });
    }
    cmds.extend(assign);
    for ids in forget.chunks(MAX_IDS_PER_COMMAND) {
        cmds.push(Command::TaskRemove { ids: ids.to_vec() });
    }
    cmds.extend(verdicts);
    (cmds, due)
}

/// A node for a new task of `s`: the fast placer, or the scan when the
/// service spreads by placement preference.
fn place(
    placer: &mut Option<Placer>,
    st: &ClusterState,
    s: &ServiceRecord,
    load: &Load,
) -> Result<String, String> {
    if !s.spec.placement_prefs.is_empty() {
        return pick(st, s, load);
    }
    placer
        .get_or_insert_with(|| Placer::new(st, s, load))
        .pick()
}

/// Whether a slot may get a new task.
enum Restart {
    Now,
    /// Once its restart delay has run out.
    At(u64),
    Never,
}

/// Whether a slot whose previous tasks are `history` may get a new one now.
fn may_restart<'a>(
    s: &ServiceRecord,
    history: impl Iterator<Item = &'a TaskRecord>,
    now: u64,
) -> Restart {
    let ended: Vec<&TaskRecord> = history
        .filter(|t| {
            matches!(
                t.state,
                TaskState::Complete | TaskState::Failed | TaskState::Rejected
            )
        })
        .collect();
    let Some(last) = ended.iter().max_by_key(|t| t.state_at) else {
        return Restart::Now; // new slot, or the last task was moved: at once
    };
    let r = &s.spec.restart;
    let allowed = match r.condition {
        RestartCondition::None => false,
        RestartCondition::OnFailure => last.state != TaskState::Complete,
        RestartCondition::Any => true,
    };
    let attempts = ended.len() as u64;
    let at = last.state_at + r.delay_ms;
    match allowed && (r.max_attempts == 0 || attempts <= r.max_attempts) {
        false => Restart::Never,
        true if now >= at => Restart::Now,
        true => Restart::At(at),
    }
}

#[cfg(test)]
pub(crate) mod tests;

//! The updater over simulated time: the plan runs every 100 ms and a fake
//! node reports every assigned task running (or failed, for `false`) at
//! once.

use std::collections::BTreeMap;

use crate::orchestrator::plan::plan;
use crate::raft::state::ClusterState;
use crate::wire::Command;
use crate::wire::{DesiredState, TaskReport, TaskState};
use crate::wire::{FailureAction, UpdateOrder, UpdateState};
use crate::wire::{Mode, ServiceSpec};

fn cluster() -> ClusterState {
    crate::orchestrator::plan::tests::cluster(&["n1", "n2", "n3"])
}

fn web(cmd: &str) -> ServiceSpec {
    serde_json::from_value(serde_json::json!({
        "name": "web", "mode": {"replicated": {"replicas": 4}},
        "command": [cmd], "stop_grace_ms": 0,
        "networks": [{"target": "appnet"}],
    }))
    .unwrap()
}

struct Sim {
    st: ClusterState,
    now: u64,
    index: u64,
    ids: u64,
    /// Fewest tasks running at any step.
    min_running: usize,
}

impl Sim {
    fn new(spec: ServiceSpec) -> Self {
        let mut s = Self {
            st: cluster(),
            now: 1000,
            index: 10,
            ids: 0,
            min_running: usize::MAX,
        };
        s.apply(Command::ServiceCreate {
            id: "s".into(),
            spec,
            now: 1000,
        });
        s.run(3000);
        s.min_running = usize::MAX;
        s
    }

    fn apply(&mut self, c: Command) {
        self.index += 1;
        self.st.apply(self.index, c);
    }

    /// `ms` of simulated time in 100 ms steps.
    fn run(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.now += 100;
            let mut ids = self.ids;
            let cmds = plan(&self.st, self.now, &mut || {
                ids += 1;
                format!("t{ids:04}")
            });
            self.ids = ids;
            for c in cmds {
                self.apply(c);
            }
            let reports: Vec<TaskReport> = self
                .st
                .tasks
                .values()
                .filter(|t| t.node_id.is_some() && !t.state.is_terminal())
                .map(|t| TaskReport {
                    id: t.id.clone(),
                    state: match (t.desired, t.spec.command[0].as_str()) {
                        (DesiredState::Shutdown, _) => TaskState::Shutdown,
                        (_, "false") => TaskState::Failed,
                        _ => TaskState::Running,
                    },
                    err: None,
                    exit_code: None,
                })
                .filter(|r| {
                    r.state != TaskState::Running
                        || self.st.tasks[&r.id].state != TaskState::Running
                })
                .collect();
            self.apply(Command::TaskReports {
                reports,
                now: self.now,
            });
            let running = self
                .st
                .tasks
                .values()
                .filter(|t| t.state == TaskState::Running)
                .count();
            self.min_running = self.min_running.min(running);
        }
    }

    fn update(&mut self, f: impl FnOnce(&mut ServiceSpec)) {
        let mut spec = self.st.services["s"].spec.clone();
        f(&mut spec);
        self.apply(Command::ServiceUpdate {
            id: "s".into(),
            spec: Some(spec),
            version: 0,
            rollback: false,
            now: self.now,
        });
    }

    fn state(&self) -> UpdateState {
        self.st.services["s"].update_status.as_ref().unwrap().state
    }

    /// Commands of the live tasks.
    fn commands(&self) -> Vec<String> {
        self.st
            .tasks
            .values()
            .filter(|t| t.desired == DesiredState::Running)
            .map(|t| t.spec.command[0].clone())
            .collect()
    }
}

#[test]
fn batches_follow_parallelism_delay_and_monitor_then_rollback_restores() {
    let mut sim = Sim::new(web("old"));
    let t0 = sim.now;
    sim.update(|s| {
        s.command = vec!["new".into()];
        s.update.parallelism = 2;
        s.update.delay_ms = 1000;
        s.update.monitor_ms = 2000;
    });
    // While it runs, the leader must keep re-planning as time moves.
    let due = crate::orchestrator::plan::plan_until(&sim.st, sim.now, &mut || "x".into()).1;
    assert_eq!(due, Some(sim.now));
    sim.run(20_000);
    assert_eq!(sim.state(), UpdateState::Completed);
    let due = crate::orchestrator::plan::plan_until(&sim.st, sim.now, &mut || "x".into()).1;
    assert_eq!(due, None, "completed: nothing more by itself");
    assert_eq!(sim.commands(), vec!["new"; 4]);
    // Two batches of two: the second starts after the first ran for the
    // monitor period, plus the delay.
    let mut batches: BTreeMap<u64, usize> = BTreeMap::new();
    for t in sim.st.tasks.values().filter(|t| t.spec.command[0] == "new") {
        *batches.entry(t.created_at).or_default() += 1;
    }
    let starts: Vec<(&u64, &usize)> = batches.iter().collect();
    assert_eq!(starts.len(), 2, "{batches:?}");
    assert_eq!((*starts[0].1, *starts[1].1), (2, 2));
    assert!(*starts[0].0 - t0 <= 200);
    assert!(*starts[1].0 - *starts[0].0 >= 3000, "{batches:?}");
    assert!(*starts[1].0 - *starts[0].0 <= 3400, "{batches:?}");
    // The replaced tasks are kept, desired shutdown.
    assert_eq!(
        sim.st
            .tasks
            .values()
            .filter(|t| t.spec.command[0] == "old" && t.desired == DesiredState::Shutdown)
            .count(),
        4
    );
    // An unchanged spec changes nothing.
    let v = sim.st.services["s"].version;
    sim.update(|_| {});
    assert_eq!(sim.st.services["s"].version, v);

    sim.apply(Command::ServiceUpdate {
        id: "s".into(),
        spec: None,
        version: 0,
        rollback: true,
        now: sim.now,
    });
    assert_eq!(sim.state(), UpdateState::RollbackStarted);
    sim.run(40_000);
    assert_eq!(sim.state(), UpdateState::RollbackCompleted);
    assert_eq!(sim.commands(), vec!["old"; 4]);
}

#[test]
fn start_first_never_runs_fewer_than_the_replicas() {
    let mut sim = Sim::new(web("old"));
    sim.update(|s| {
        s.command = vec!["new".into()];
        s.update.order = UpdateOrder::StartFirst;
        s.update.monitor_ms = 500;
    });
    sim.run(20_000);
    assert_eq!(sim.state(), UpdateState::Completed);
    assert_eq!(sim.commands(), vec!["new"; 4]);
    assert!(sim.min_running >= 4, "{}", sim.min_running);
}

#[test]
fn failures_pause_or_roll_back_and_force_replaces_everything() {
    let mut sim = Sim::new(web("old"));
    sim.update(|s| s.command = vec!["false".into()]);
    sim.run(10_000);
    assert_eq!(sim.state(), UpdateState::Paused);
    let msg = &sim.st.services["s"].update_status.as_ref().unwrap().message;
    assert!(msg.starts_with("update paused due to failure"), "{msg}");
    // Only the first batch (one task) was touched.
    assert_eq!(
        sim.commands().iter().filter(|c| *c == "old").count(),
        3,
        "{:?}",
        sim.commands()
    );

    let mut sim = Sim::new(web("old"));
    sim.update(|s| {
        s.command = vec!["false".into()];
        s.update.failure_action = FailureAction::Rollback;
    });
    sim.run(20_000);
    assert_eq!(sim.state(), UpdateState::RollbackCompleted);
    assert_eq!(sim.commands(), vec!["old"; 4]);
    assert_eq!(sim.st.services["s"].spec.command, ["old"]);

    let before: Vec<String> = sim
        .st
        .tasks
        .values()
        .filter(|t| t.desired == DesiredState::Running)
        .map(|t| t.id.clone())
        .collect();
    sim.update(|s| {
        s.force_update += 1;
        s.update.parallelism = 0;
        s.update.monitor_ms = 0;
    });
    sim.run(5_000);
    assert_eq!(sim.state(), UpdateState::Completed);
    assert!(sim
        .st
        .tasks
        .values()
        .filter(|t| t.desired == DesiredState::Running)
        .all(|t| !before.contains(&t.id)));
}

#[test]
fn mode_and_name_cannot_change_and_bad_ratios_are_refused() {
    let mut sim = Sim::new(web("old"));
    for (f, needle) in [
        (
            Box::new(|s: &mut ServiceSpec| s.mode = Mode::Global) as Box<dyn Fn(&mut ServiceSpec)>,
            "mode",
        ),
        (Box::new(|s: &mut ServiceSpec| s.name = "x".into()), "name"),
        (
            Box::new(|s: &mut ServiceSpec| s.update.max_failure_ratio = 1.5),
            "ratio",
        ),
    ] {
        let mut spec = sim.st.services["s"].spec.clone();
        f(&mut spec);
        let (r, _) = sim.st.apply(
            99,
            Command::ServiceUpdate {
                id: "s".into(),
                spec: Some(spec),
                version: 0,
                rollback: false,
                now: 0,
            },
        );
        assert!(
            matches!(&r, crate::wire::CommandResult::Error(e) if e.message.contains(needle)),
            "{r:?}"
        );
    }
    // A stale version is refused.
    let spec = web("other");
    let (r, _) = sim.st.apply(
        99,
        Command::ServiceUpdate {
            id: "s".into(),
            spec: Some(spec),
            version: 1,
            rollback: false,
            now: 0,
        },
    );
    assert!(
        matches!(r, crate::wire::CommandResult::Error(e) if e.message.contains("out of sequence"))
    );
    sim.run(100);
}

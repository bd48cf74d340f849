//! Watching a service: progress until it converges (with each slot's
//! latest task error, as Docker's progress shows them), and its logs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::api::client::Client;
use crate::wire::{ModeView, ServiceInspect, ServiceRow, TaskInspect, UpdateState};

/// The error of each slot's current task, each printed once: a task that
/// cannot start (or keeps failing) says why while the CLI waits, instead
/// of a bare `0 out of 2 tasks` until the deadline.
#[derive(Debug, Default)]
pub(super) struct SlotErrors {
    /// Slot (`1`, or a global task's node) -> the error last printed.
    shown: BTreeMap<String, String>,
}

impl SlotErrors {
    /// Lines for the slots whose current task (the first of its slot in
    /// the API's order) has an error not printed yet: `1/2: cannot start
    /// "prog": ...` (a global task: `n1: ...`). `replicas`: the service's
    /// count, for replicated services.
    pub(super) fn news(&mut self, tasks: &[TaskInspect], replicas: Option<u64>) -> Vec<String> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = vec![];
        for t in tasks {
            let (key, label) = match (t.slot, replicas) {
                (0, _) | (_, None) => {
                    let node = t.node.clone().or(t.node_id.clone()).unwrap_or_default();
                    (format!("node {node}"), node)
                }
                (slot, Some(n)) => (slot.to_string(), format!("{slot}/{n}")),
            };
            if !seen.insert(key.clone()) {
                continue;
            }
            let Some(err) = t.status.err.as_deref().filter(|e| !e.is_empty()) else {
                continue;
            };
            if self.shown.get(&key).map(String::as_str) != Some(err) {
                self.shown.insert(key, err.to_string());
                out.push(format!("{label}: {err}"));
            }
        }
        out
    }

    /// Polls the service's tasks and prints what is new.
    fn poll(
        &mut self,
        rt: &tokio::runtime::Runtime,
        client: &Client,
        name: &str,
        replicas: Option<u64>,
    ) -> anyhow::Result<()> {
        let tasks: Vec<TaskInspect> =
            rt.block_on(client.get(&format!("/v1/tasks?service={name}")))?;
        for l in self.news(&tasks, replicas) {
            println!("{l}");
        }
        Ok(())
    }
}

/// Waits until every task of the service runs (Docker's progress without
/// `--detach`).
pub(super) fn converge(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    name: &str,
) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let mut last = String::new();
    let mut errors = SlotErrors::default();
    loop {
        let services: Vec<ServiceRow> = rt.block_on(client.get("/v1/services"))?;
        let Some(s) = services.iter().find(|s| s.row.name == name) else {
            bail!("service {name} disappeared");
        };
        let (run, want) = s.row.replicas.split_once('/').unwrap_or(("0", "0"));
        let line = format!("overall progress: {run} out of {want} tasks");
        if line != last {
            println!("{line}");
            last = line;
        }
        if run == want && want != "0" {
            println!("verify: Service {name} converged");
            return Ok(());
        }
        let replicas = (s.row.mode == "replicated").then(|| want.parse().unwrap_or(0));
        errors.poll(rt, client, name, replicas)?;
        if t0.elapsed() > Duration::from_secs(120) {
            bail!("service {name} did not converge within 120 s (see `shoal service ps {name}`)");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Follows an update (Docker's progress without `--detach`) until it
/// completes (ok), pauses or rolls back by itself (error). `rollback`: the
/// user asked for the rollback.
pub(super) fn follow_update(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    name: &str,
    rollback: bool,
) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let mut last = String::new();
    let mut errors = SlotErrors::default();
    // The reason of a rollback the updater started.
    let mut why: Option<String> = None;
    loop {
        let v: ServiceInspect = rt.block_on(client.get(&format!("/v1/services/{name}")))?;
        let replicas = match v.spec.mode {
            ModeView::Replicated { replicas } => Some(replicas),
            ModeView::Global {} => None,
        };
        // No status yet: the manager has not started the update.
        if let Some(u) = &v.update_status {
            let (state, msg) = (u.state, u.message.as_str());
            let line = format!(
                "overall progress: {} out of {} tasks updated ({})",
                u.progress.updated,
                u.progress.total,
                state.as_str()
            );
            if line != last {
                println!("{line}");
                last = line;
            }
            match state {
                UpdateState::Completed => {
                    println!("verify: Service {name} converged");
                    return Ok(());
                }
                UpdateState::Paused | UpdateState::RollbackPaused => {
                    bail!("service {name}: {msg}")
                }
                UpdateState::RollbackCompleted if !rollback => {
                    bail!(
                        "service {name} rolled back: {}",
                        why.as_deref().unwrap_or(msg)
                    )
                }
                UpdateState::RollbackCompleted => {
                    println!("rollback: {msg}\nverify: Service {name} converged");
                    return Ok(());
                }
                UpdateState::RollbackStarted if why.is_none() => {
                    println!("rollback: {msg}");
                    why = Some(msg.to_string());
                }
                _ => {}
            }
        }
        errors.poll(rt, client, name, replicas)?;
        if t0.elapsed() > Duration::from_secs(600) {
            bail!("service {name}: the update is still running after 10 minutes (see `shoal service inspect {name}`)");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Pages through a service's logs; with `follow`, forever (a page returns
/// within about a second: the nodes answer with their next heartbeat).
pub(super) fn logs(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    service: &str,
    tail: u64,
    follow: bool,
    timestamps: bool,
) -> anyhow::Result<()> {
    use std::io::Write;
    let mut q = crate::wire::LogsQuery {
        tail,
        timestamps,
        cursors: Default::default(),
    };
    let mut told = std::collections::BTreeSet::new();
    loop {
        let page: crate::wire::LogsPage =
            rt.block_on(client.post(&format!("/v1/services/{service}/logs"), &q))?;
        let mut out = std::io::stdout().lock();
        for l in &page.lines {
            writeln!(out, "{l}")?;
        }
        for s in page.silent {
            if told.insert(s.clone()) {
                eprintln!("no logs from {s}");
            }
        }
        out.flush()?;
        q.cursors = page.cursors;
        if !follow && !page.more {
            return Ok(());
        }
        if !page.more && page.lines.is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(slot: u64, node: &str, err: Option<&str>) -> TaskInspect {
        serde_json::from_value(serde_json::json!({
            "ID": "t", "Name": "web.1.t", "ServiceID": "s", "ServiceName": "web",
            "Slot": slot, "NodeID": format!("id-{node}"), "Node": node,
            "DesiredState": "running",
            "Status": {"State": "rejected", "Timestamp": "", "TimestampMs": 0,
                       "Err": err, "ContainerStatus": {"ExitCode": null}},
            "CreatedAt": "", "Spec": {"ContainerSpec": {"Command": [], "Env": []}},
            "NetworksAttachments": [],
        }))
        .unwrap()
    }

    #[test]
    fn each_slots_current_error_is_printed_once() {
        let nope = r#"cannot start "prog": No such file or directory (os error 2)"#;
        let mut e = SlotErrors::default();
        // Slot 1's current task failed; its history is not looked at.
        let tasks = [
            task(1, "n1", Some(nope)),
            task(1, "n1", Some("older")),
            task(2, "n2", None),
        ];
        assert_eq!(e.news(&tasks, Some(2)), [format!("1/2: {nope}")]);
        assert!(e.news(&tasks, Some(2)).is_empty(), "only when it changes");
        // A replacement that starts clean prints nothing; the same error
        // again is not news; another one is.
        assert!(e.news(&[task(1, "n1", None)], Some(2)).is_empty());
        assert!(e.news(&[task(1, "n1", Some(nope))], Some(2)).is_empty());
        let other = [
            task(1, "n1", None),
            task(2, "n3", Some("task: non-zero exit (3)")),
        ];
        assert_eq!(e.news(&other, Some(2)), ["2/2: task: non-zero exit (3)"]);
        // Global tasks are named by their node.
        assert_eq!(
            SlotErrors::default().news(&[task(0, "n2", Some(nope))], None),
            [format!("n2: {nope}")]
        );
    }
}

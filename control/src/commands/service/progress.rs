//! Watching a service: progress until it converges, and its logs.

use std::time::{Duration, Instant};

use anyhow::bail;

use crate::api::client::Client;
use crate::wire::{ServiceInspect, ServiceRow, UpdateState};

/// Waits until every task of the service runs (Docker's progress without
/// `--detach`).
pub(super) fn converge(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    name: &str,
) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let mut last = String::new();
    loop {
        let services: Vec<ServiceRow> = rt.block_on(client.get("/v1/services"))?;
        let Some(s) = services.iter().find(|s| s.name == name) else {
            bail!("service {name} disappeared");
        };
        let (run, want) = s.replicas.split_once('/').unwrap_or(("0", "0"));
        let line = format!("overall progress: {run} out of {want} tasks");
        if line != last {
            println!("{line}");
            last = line;
        }
        if run == want && want != "0" {
            println!("verify: Service {name} converged");
            return Ok(());
        }
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
    // The reason of a rollback the updater started.
    let mut why: Option<String> = None;
    loop {
        let v: ServiceInspect = rt.block_on(client.get(&format!("/v1/services/{name}")))?;
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

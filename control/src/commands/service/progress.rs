//! Watching a service: progress until it converges, and its logs.

use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::Value;

use crate::api::client::Client;

/// "5 seconds ago", as Docker words it.
pub(super) fn ago(ms: u64) -> String {
    let s = crate::clock::now_ms().saturating_sub(ms) / 1000;
    match s {
        0 => "Less than a second ago".into(),
        1 => "1 second ago".into(),
        2..=59 => format!("{s} seconds ago"),
        60..=119 => "About a minute ago".into(),
        120..=3599 => format!("{} minutes ago", s / 60),
        _ => format!("{} hours ago", s / 3600),
    }
}

/// `running` -> `Running`, as Docker shows states.
pub(super) fn capitalized(w: &str) -> String {
    let mut c = w.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
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
    loop {
        let services: Vec<Value> = rt.block_on(client.get("/v1/services"))?;
        let Some(s) = services.iter().find(|s| s["Name"] == name) else {
            bail!("service {name} disappeared");
        };
        let r = s["Replicas"].as_str().unwrap_or("0/0").to_string();
        let (run, want) = r.split_once('/').unwrap_or(("0", "0"));
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
        let v: Value = rt.block_on(client.get(&format!("/v1/services/{name}")))?;
        let u = &v["UpdateStatus"];
        let state = u["State"].as_str().unwrap_or_default();
        let msg = u["Message"].as_str().unwrap_or_default();
        let line = format!(
            "overall progress: {} out of {} tasks updated ({state})",
            u["Progress"]["Updated"], u["Progress"]["Total"]
        );
        if line != last {
            println!("{line}");
            last = line;
        }
        match state {
            "completed" => {
                println!("verify: Service {name} converged");
                return Ok(());
            }
            "paused" | "rollback_paused" => bail!("service {name}: {msg}"),
            "rollback_completed" if !rollback => {
                bail!(
                    "service {name} rolled back: {}",
                    why.as_deref().unwrap_or(msg)
                )
            }
            "rollback_completed" => {
                println!("rollback: {msg}\nverify: Service {name} converged");
                return Ok(());
            }
            "rollback_started" if why.is_none() => {
                println!("rollback: {msg}");
                why = Some(msg.to_string());
            }
            _ => {}
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

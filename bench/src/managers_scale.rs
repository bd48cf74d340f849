//! The managers at Swarm2000 size: a 3-node lab whose leader holds
//! `--tasks` tasks (default 96,287), all pending (a `/15` network and a
//! constraint no node meets, so nothing runs: this measures the managers,
//! not the nodes). Reported beside the same measures on the same lab
//! before the tasks exist (the reference, same run):
//!
//! - a committed write (a node label) and `node ls`, sent to the leader;
//! - the leader's memory and its CPU while nothing changes;
//! - creating the tasks (until `service ps` lists them all);
//! - label writes until the leader's snapshot holds every task and the
//!   log behind it is compacted, then promoting each worker until its own
//!   state calls it a manager (the snapshot sent, installed and read),
//!   with `node ls` on the leader timed throughout (the longest answer);
//! - the leader killed, until the next one accepts a write.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use anyhow::{bail, Context, Result};
use clap::Parser;
use common::{on, stats, LabGuard};
use serde_json::{json, Value};

#[derive(Parser, Debug)]
struct Args {
    /// Tasks the leader holds (Swarm2000 ran 96,287 containers).
    #[arg(long, default_value_t = 96_287)]
    tasks: u64,
    /// Writes and reads per series.
    #[arg(long, default_value_t = 20)]
    writes: u32,
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    #[arg(long)]
    shoal: Option<std::path::PathBuf>,
}

const LAB: &str = "bms";

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// `n` timed runs of `args` on n1 (the leader), in ms.
fn series(shoal: &Path, n: u32, args: impl Fn(u32) -> Vec<String>) -> Result<Vec<f64>> {
    (0..n)
        .map(|i| {
            let a = args(i);
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            let t = Instant::now();
            on(shoal, LAB, "n1", &a)?;
            Ok(ms(t))
        })
        .collect()
}

/// The pid of a lab node's daemon.
fn daemon_pid(node: &str) -> Result<u32> {
    let dir = format!("/run/shoal/lab/{LAB}/nodes/{node}");
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(" daemon ") && cmd.contains(&dir) {
            return Ok(pid);
        }
    }
    bail!("no daemon of {node}")
}

fn rss_mb(pid: u32) -> Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("VmRSS")?;
    Ok(kb / 1024.0)
}

/// The share of one core `pid` used over `secs` seconds.
fn cpu_share(pid: u32, secs: u64) -> Result<f64> {
    let ticks = || -> Result<f64> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // After the command name's closing parenthesis: utime and stime
        // are fields 14 and 15 of the line.
        let rest = s.rsplit_once(')').context("stat")?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        Ok(f[11].parse::<f64>()? + f[12].parse::<f64>()?)
    };
    let a = ticks()?;
    std::thread::sleep(Duration::from_secs(secs));
    let hz = 100.0; // USER_HZ on Linux
    Ok((ticks()? - a) / hz / secs as f64)
}

/// Measures on the current state: label writes, `node ls`, memory, idle
/// CPU.
fn steady(shoal: &Path, writes: u32, tag: &str) -> Result<Value> {
    let w = series(shoal, writes, |i| {
        vec![
            "node".into(),
            "update".into(),
            "--label-add".into(),
            format!("{tag}{i}=v"),
            "n2".into(),
        ]
    })?;
    let r = series(shoal, writes, |_| vec!["node".into(), "ls".into()])?;
    let pid = daemon_pid("n1")?;
    Ok(json!({
        "label_write": stats(w),
        "node_ls": stats(r),
        "leader_rss_mb": (rss_mb(pid)? * 10.0).round() / 10.0,
        "leader_idle_cpu": (cpu_share(pid, 10)? * 100.0).round() / 100.0,
    }))
}

fn task_count(shoal: &Path) -> usize {
    on(
        shoal,
        LAB,
        "n1",
        &["service", "ps", "many", "--format", "json"],
    )
    .map(|o| o.lines().count())
    .unwrap_or(0)
}

/// Until `node`'s own state calls it a manager, in s.
fn until_manager(shoal: &Path, node: &str, t: Instant) -> Result<f64> {
    while t.elapsed() < Duration::from_secs(300) {
        if let Ok(o) = on(shoal, LAB, node, &["node", "ls"]) {
            if o.lines()
                .any(|l| l.contains('*') && (l.contains("Reachable") || l.contains("Leader")))
            {
                return Ok(t.elapsed().as_secs_f64());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{node} was not a manager after 300 s")
}

fn main() -> Result<()> {
    let a = Args::parse();
    let shoal = common::shoal_path(a.shoal.clone());
    let _lab = LabGuard::fresh(&shoal, LAB);
    common::run(Command::new(&shoal).args(["lab", "up", "--name", LAB, "--nodes", "3"]))?;
    on(
        &shoal,
        LAB,
        "n1",
        &["network", "create", "--subnet", "10.128.0.0/15", "big"],
    )?;
    eprintln!("reference: the same measures before the tasks exist");
    let before = steady(&shoal, a.writes, "a")?;

    let t = Instant::now();
    let replicas = a.tasks.to_string();
    on(
        &shoal,
        LAB,
        "n1",
        &[
            "service",
            "create",
            "-d",
            "--name",
            "many",
            "--replicas",
            &replicas,
            "--network",
            "big",
            "--constraint",
            "node.labels.nowhere==yes",
            "--",
            "sleep",
            "1000",
        ],
    )?;
    while (task_count(&shoal) as u64) < a.tasks {
        if t.elapsed() > Duration::from_secs(300) {
            bail!("the tasks did not all exist within 300 s");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let created_s = t.elapsed().as_secs_f64();
    eprintln!("{} tasks in {created_s:.1} s", a.tasks);
    let after = steady(&shoal, a.writes, "b")?;

    // node ls on the leader, timed from here to the last promotion.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (shoal, stop) = (shoal.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut worst: f64 = 0.0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                let _ = on(&shoal, LAB, "n1", &["node", "ls"]);
                worst = worst.max(ms(t));
                std::thread::sleep(Duration::from_millis(50));
            }
            worst
        })
    };
    // A snapshot that holds the tasks: label writes until the leader's
    // snapshot passes the last task entry, so the log behind it is
    // compacted and the promotions below must install the snapshot.
    let raft_n1 = || -> Result<Value> {
        Ok(serde_json::from_str(&on(
            &shoal,
            LAB,
            "n1",
            &["debug", "raft", "--format", "json"],
        )?)?)
    };
    let last_task_entry = raft_n1()?["last_log_index"].as_u64().unwrap_or(0);
    let t = Instant::now();
    let mut writes = 0u32;
    let mut worst_write: f64 = 0.0;
    let snapshot_s = loop {
        let r = raft_n1()?;
        if r["snapshot"].as_u64().unwrap_or(0) >= last_task_entry
            && r["purged"].as_u64().unwrap_or(0) >= last_task_entry.saturating_sub(100)
        {
            break t.elapsed().as_secs_f64();
        }
        if t.elapsed() > Duration::from_secs(300) {
            bail!("no snapshot past entry {last_task_entry} within 300 s: {r}");
        }
        for _ in 0..20 {
            writes += 1;
            let label = format!("s{writes}=v");
            let w = Instant::now();
            on(
                &shoal,
                LAB,
                "n1",
                &["node", "update", "--label-add", &label, "n2"],
            )?;
            worst_write = worst_write.max(ms(w));
        }
    };
    let snap = raft_n1()?;
    eprintln!(
        "snapshot at {} after {writes} writes ({snapshot_s:.1} s), the longest write meanwhile {worst_write:.0} ms",
        snap["snapshot"]
    );

    // Promotions: each new manager installs the snapshot.
    let mut promote = vec![];
    for n in ["n2", "n3"] {
        let t = Instant::now();
        on(&shoal, LAB, "n1", &["node", "promote", n])?;
        let s = until_manager(&shoal, n, t)?;
        eprintln!("promote {n}: {s:.2} s");
        // What it installed: its own snapshot's index.
        let r: Value =
            serde_json::from_str(&on(&shoal, LAB, n, &["debug", "raft", "--format", "json"])?)?;
        promote.push(json!({
            "node": n,
            "s": (s * 100.0).round() / 100.0,
            "its_snapshot": r["snapshot"],
        }));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let worst_ls = poller.join().map_err(|_| anyhow::anyhow!("poller"))?;

    let t = Instant::now();
    common::run(Command::new(&shoal).args(["lab", "kill", "--name", LAB, "n1"]))?;
    let failover_s = loop {
        if on(
            &shoal,
            LAB,
            "n2",
            &["node", "update", "--label-add", "after=failover", "n3"],
        )
        .is_ok()
        {
            break t.elapsed().as_secs_f64();
        }
        if t.elapsed() > Duration::from_secs(120) {
            bail!("no write accepted within 120 s of the leader's death");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("failover: {failover_s:.2} s");

    let report = json!({
        "benchmark": "managers_scale",
        "tasks": a.tasks,
        "writes": a.writes,
        "reference_before_tasks": before,
        "with_tasks": after,
        "create_all_tasks_s": (created_s * 100.0).round() / 100.0,
        "snapshot": {
            "last_task_entry": last_task_entry,
            "label_writes_to_pass_it": writes,
            "seconds": (snapshot_s * 100.0).round() / 100.0,
            "longest_label_write_meanwhile_ms": worst_write.round(),
            "raft": snap,
        },
        "promote_until_manager": promote,
        "longest_node_ls_on_leader_during_snapshot_and_promotions_ms": worst_ls.round(),
        "leader_killed_until_write_accepted_s": (failover_s * 100.0).round() / 100.0,
    });
    println!("managers with {} pending tasks (3-node lab)", a.tasks);
    println!(
        "{:<34} {:>14} {:>14}",
        "", "no tasks (ref)", "with the tasks"
    );
    let f = |v: &Value, k: &str, s: &str| v[k][s].as_f64().unwrap_or(0.0);
    for (label, k) in [
        ("label write, ms (median)", "label_write"),
        ("node ls, ms (median)", "node_ls"),
    ] {
        println!(
            "{label:<34} {:>14.1} {:>14.1}",
            f(&before, k, "median_ms"),
            f(&after, k, "median_ms")
        );
        println!(
            "{:<34} {:>14.1} {:>14.1}",
            "  max",
            f(&before, k, "max_ms"),
            f(&after, k, "max_ms")
        );
    }
    for (label, k) in [
        ("leader RSS, MB", "leader_rss_mb"),
        ("leader idle CPU, cores", "leader_idle_cpu"),
    ] {
        println!(
            "{label:<34} {:>14.2} {:>14.2}",
            before[k].as_f64().unwrap_or(0.0),
            after[k].as_f64().unwrap_or(0.0)
        );
    }
    let promoted: Vec<String> = promote
        .iter()
        .map(|p| {
            format!(
                "{} {} s (installed snapshot {})",
                p["node"].as_str().unwrap_or("?"),
                p["s"],
                p["its_snapshot"]
            )
        })
        .collect();
    println!(
        "tasks created in {created_s:.1} s; promoted until manager: {}",
        promoted.join(", ")
    );
    println!(
        "longest node ls on the leader during the snapshot and promotions {worst_ls:.0} ms; leader killed -> write accepted {failover_s:.2} s"
    );
    let chart = common::chart::Chart::new(format!(
        "Managers with {} pending tasks: before (reference) and with them",
        a.tasks
    ))
    .panel(
        "median, ms (lower is better)",
        vec![
            (
                "label write, no tasks".into(),
                f(&before, "label_write", "median_ms"),
            ),
            (
                "label write, with tasks".into(),
                f(&after, "label_write", "median_ms"),
            ),
            (
                "node ls, no tasks".into(),
                f(&before, "node_ls", "median_ms"),
            ),
            (
                "node ls, with tasks".into(),
                f(&after, "node_ls", "median_ms"),
            ),
        ],
    );
    common::emit(&report, a.json.as_deref(), &chart)
}

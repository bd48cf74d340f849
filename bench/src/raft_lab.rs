//! The manager core on a 3-manager lab (plus 2 workers): the latency of a
//! state change committed through Raft (a node label update), sent to the
//! leader's local API and to a follower's (which forwards it), against a
//! read from the same API in the same run (the API round trip without Raft);
//! then leader failover over N kill -9s: time from the kill until another
//! manager reports a new leader, and until a write is accepted again.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use anyhow::{bail, Context, Result};
use clap::Parser;
use common::{stats, LabGuard};
use serde::Serialize;
use serde_json::Value;

#[derive(Parser, Debug)]
struct Args {
    /// Writes per series.
    #[arg(long, default_value_t = 200)]
    writes: u32,
    /// Leader kills.
    #[arg(long, default_value_t = 10)]
    kills: u32,
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long)]
    shoal: Option<PathBuf>,
}

const LAB: &str = "bra";
const MANAGERS: [&str; 3] = ["n1", "n2", "n3"];

fn socket(node: &str) -> PathBuf {
    PathBuf::from(format!("/run/shoal/lab/{LAB}/nodes/{node}/shoal.sock"))
}

/// One HTTP/1.1 request on the daemon's Unix socket. Hand-written (a few
/// lines, `Connection: close`) so the bench times the daemon, not a client
/// library's pool.
fn api(node: &str, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
    let mut s = UnixStream::connect(socket(node)).with_context(|| format!("socket of {node}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: shoal\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Ok((status, body))
}

fn write_label(node: &str, value: u32) -> Result<bool> {
    let body = format!(r#"{{"labels_add":{{"bench":"{value}"}}}}"#);
    Ok(api(node, "POST", "/v1/nodes/n4/update", &body)?.0 == 200)
}

fn raft(node: &str) -> Option<Value> {
    let (status, body) = api(node, "GET", "/v1/debug/raft", "").ok()?;
    (status == 200).then(|| serde_json::from_str(&body).ok())?
}

#[derive(Serialize)]
struct Lat {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn lat(mut v: Vec<f64>) -> Lat {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    Lat {
        p50_ms: round(at(0.5)),
        p99_ms: round(at(0.99)),
        max_ms: round(*v.last().unwrap()),
    }
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn series(n: u32, mut f: impl FnMut(u32) -> Result<bool>) -> Result<Vec<f64>> {
    let mut v = vec![];
    for i in 0..n {
        let t0 = Instant::now();
        if !f(i)? {
            bail!("request {i} failed");
        }
        v.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    Ok(v)
}

fn shoal_ok(shoal: &PathBuf, args: &[&str]) -> Result<()> {
    let out = Command::new(shoal).args(args).output()?;
    if !out.status.success() {
        bail!("{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// The hostname of the leader, as `from` sees it.
fn leader_name(from: &str) -> Option<String> {
    let r = raft(from)?;
    let leader = r["leader"].as_u64()?;
    MANAGERS
        .iter()
        .find(|m| raft(m).and_then(|v| v["id"].as_u64()) == Some(leader))
        .map(|m| m.to_string())
}

fn main() -> Result<()> {
    let a = Args::parse();
    let shoal = common::shoal_path(a.shoal.clone());
    let _lab = LabGuard::fresh(&shoal, LAB);
    shoal_ok(
        &shoal,
        &[
            "lab",
            "up",
            "--name",
            LAB,
            "--nodes",
            "5",
            "--managers",
            "3",
            "--endpoints",
            "1",
        ],
    )?;
    let lead = leader_name("n1").context("no leader")?;
    let follower = MANAGERS.iter().find(|m| **m != lead).unwrap().to_string();
    eprintln!("leader {lead}, follower {follower}");
    let read = series(a.writes, |_| {
        Ok(api(&lead, "GET", "/v1/nodes", "")?.0 == 200)
    })?;
    let on_leader = series(a.writes, |i| write_label(&lead, i))?;
    let via_follower = series(a.writes, |i| write_label(&follower, 10_000 + i))?;

    let (mut elected, mut writable) = (vec![], vec![]);
    for k in 0..a.kills {
        let old = leader_name(MANAGERS[0])
            .or_else(|| leader_name(MANAGERS[1]))
            .context("no leader before the kill")?;
        let others: Vec<&str> = MANAGERS.iter().copied().filter(|m| *m != old).collect();
        let old_id = raft(&old).and_then(|r| r["id"].as_u64());
        shoal_ok(&shoal, &["lab", "kill", "--name", LAB, &old])?;
        let t0 = Instant::now();
        let mut t_elect = None;
        let mut t_write = None;
        while t0.elapsed() < Duration::from_secs(30) && t_write.is_none() {
            if t_elect.is_none()
                && others.iter().any(|m| {
                    raft(m)
                        .and_then(|r| r["leader"].as_u64())
                        .is_some_and(|l| Some(l) != old_id)
                })
            {
                t_elect = Some(t0.elapsed());
            }
            if t_elect.is_some() && write_label(others[0], 20_000 + k).unwrap_or(false) {
                t_write = Some(t0.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let (Some(e), Some(w)) = (t_elect, t_write) else {
            bail!("kill {}: no new leader within 30 s", k + 1);
        };
        eprintln!(
            "kill {} of {old}: new leader after {:.0} ms, write accepted after {:.0} ms",
            k + 1,
            e.as_secs_f64() * 1e3,
            w.as_secs_f64() * 1e3
        );
        elected.push(e.as_secs_f64() * 1e3);
        writable.push(w.as_secs_f64() * 1e3);
        shoal_ok(&shoal, &["lab", "start", "--name", LAB, &old])?;
        // Back as a voter that follows the new leader before the next kill.
        let t0 = Instant::now();
        while raft(&old).and_then(|r| r["leader"].as_u64()).is_none() {
            if t0.elapsed() > Duration::from_secs(30) {
                bail!("{old} did not rejoin");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let report = serde_json::json!({
        "benchmark": "raft_lab",
        "managers": 3,
        "workers": 2,
        "writes": a.writes,
        "kills": a.kills,
        "raft_heartbeat_ms": 150,
        "raft_election_timeout_ms": [750, 1000],
        "reference_api_read": lat(read),
        "write_on_leader": lat(on_leader),
        "write_via_follower": lat(via_follower),
        "failover_new_leader": stats(elected),
        "failover_write_accepted": stats(writable),
    });
    println!("\nRaft managers, 3-manager lab (heartbeat 150 ms, election timeout 750-1000 ms)\n");
    println!("{:<46} {:>8} {:>8} {:>8}", "", "p50 ms", "p99 ms", "max ms");
    let latency = [
        (
            "reference: API read (node ls, no Raft)",
            "reference_api_read",
        ),
        ("label update committed, on the leader", "write_on_leader"),
        (
            "label update committed, via a follower",
            "write_via_follower",
        ),
    ];
    for (label, key) in latency {
        let s = &report[key];
        let f = |k: &str| s[k].as_f64().unwrap_or(0.0);
        println!(
            "{label:<46} {:>8.2} {:>8.2} {:>8.2}",
            f("p50_ms"),
            f("p99_ms"),
            f("max_ms")
        );
    }
    println!(
        "\n{:<46} {:>8} {:>8} {:>8}",
        "leader kill -9, over runs", "median", "max", "min"
    );
    let failover = [
        (
            "-> another manager reports a new leader",
            "failover_new_leader",
        ),
        ("-> a write is accepted again", "failover_write_accepted"),
    ];
    common::print_stats(&report, &failover, 46, 0);
    let chart = common::chart::Chart::new("Raft managers, 3-manager lab")
        .panel(
            "p50, ms (lower is better)",
            common::median_bars(&report, &latency),
        )
        .panel(
            "leader kill -9: median, ms",
            common::median_bars(&report, &failover),
        );
    common::emit(&report, a.json.as_deref(), &chart)?;
    Ok(())
}

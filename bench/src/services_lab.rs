//! Services on a 3-node lab (n1 manager, n2 n3 workers), 5 runs each:
//! (a) `service create --replicas 12 -d` until all 12 tasks run and answer
//! HTTP (curl from a probe namespace on the overlay, every task);
//! reference, same run: the same 12 whoami processes started by hand, each
//! in a namespace created through the node's local endpoint API (no Raft, no
//! scheduling, no sessions); (b) kill -9 a worker running 6 tasks of a
//! service until all 6 run elsewhere (the knobs: heartbeat 500 ms, down
//! after 3 s). Then the in-process scheduling of 96,287 tasks over 2,384
//! simulated nodes (`shoal debug schedule-sim`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use anyhow::{bail, Context, Result};
use clap::Parser;
use common::{run, stats, LabGuard};
use serde_json::Value;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value_t = 5)]
    runs: u32,
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long)]
    shoal: Option<PathBuf>,
}

const LAB: &str = "bsv";

fn on(shoal: &Path, node: &str, args: &[&str]) -> Result<String> {
    common::on(shoal, LAB, node, args)
}

/// `service create` on n1 of a whoami service on appnet.
fn whoami_service(shoal: &Path, name: &str, extra: &[&str], port: &str) -> Result<String> {
    let bin = shoal.to_string_lossy().into_owned();
    let mut args = vec!["service", "create", "--name", name, "--network", "appnet"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", &bin, "whoami", "--port", port]);
    on(shoal, "n1", &args)
}

/// (task id, node, state) of a service's desired-running tasks, from its
/// `service ps` rows (Docker's: `"CurrentState":"Running 2 seconds ago"`).
fn tasks(shoal: &Path, service: &str) -> Result<Vec<(String, String, String)>> {
    let out = on(
        shoal,
        "n1",
        &["service", "ps", service, "--no-trunc", "--format", "json"],
    )?;
    Ok(out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["DesiredState"] == "Running")
        .map(|v| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            let state = s(&v["CurrentState"]);
            let state = state.split(' ').next().unwrap_or_default().to_lowercase();
            (s(&v["ID"]), s(&v["Node"]), state)
        })
        .collect())
}

/// The tasks' addresses on their first network (`shoal inspect`: the
/// rows carry none, as Docker's); asked only once the rows say running, so
/// polling stays one call.
fn task_ips(shoal: &Path, ts: &[(String, String, String)]) -> Result<Vec<String>> {
    let mut args = vec!["inspect"];
    args.extend(ts.iter().map(|t| t.0.as_str()));
    let all: Vec<Value> = serde_json::from_str(&on(shoal, "n1", &args)?)?;
    Ok(all.iter().map(common::task_ip).collect())
}

fn answers(netns: &str, ip: &str) -> bool {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            netns,
            "curl",
            "-s",
            "-m",
            "1",
            "-o",
            "/dev/null",
        ])
        .arg(format!("http://{ip}/"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn main() -> Result<()> {
    let a = Args::parse();
    let shoal = common::shoal_path(a.shoal.clone());
    let _lab = LabGuard::fresh(&shoal, LAB);
    run(Command::new(&shoal).args([
        "lab",
        "up",
        "--name",
        LAB,
        "--nodes",
        "3",
        "--endpoints",
        "1",
    ]))?;
    on(&shoal, "n1", &["network", "create", "appnet"])?;
    // A probe on appnet: a 1-replica service on n1 whose namespace we curl from.
    whoami_service(
        &shoal,
        "probe",
        &["--constraint", "node.hostname==n1"],
        "81",
    )?;
    let probe = tasks(&shoal, "probe")?;
    let probe_ns = format!("{LAB}-n1-t{}", &probe[0].0[..12]);

    let (mut create, mut reference) = (vec![], vec![]);
    for r in 0..a.runs {
        let t0 = Instant::now();
        whoami_service(&shoal, "web", &["-d", "--replicas", "12"], "80")?;
        loop {
            let ts = tasks(&shoal, "web")?;
            if ts.len() == 12
                && ts.iter().all(|t| t.2 == "running")
                && task_ips(&shoal, &ts)?
                    .iter()
                    .all(|ip| answers(&probe_ns, ip))
            {
                break;
            }
            if t0.elapsed() > Duration::from_secs(60) {
                bail!("run {r}: 12 tasks not answering within 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        create.push(t0.elapsed().as_secs_f64() * 1e3);
        on(&shoal, "n1", &["service", "rm", "web"])?;
        // Wait for the cleanup before the reference, so runs do not overlap.
        let t = Instant::now();
        while !tasks(&shoal, "web").map(|t| t.is_empty()).unwrap_or(true)
            || Command::new("ip")
                .args(["netns", "list"])
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .matches(&format!("{LAB}-n"))
                        .count()
                        > 4
                })
                .unwrap_or(false)
        {
            if t.elapsed() > Duration::from_secs(30) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }

        // Reference: the same 12 processes by hand on labnet (4 per node).
        let t0 = Instant::now();
        let mut children = vec![];
        for i in 0..12u32 {
            let node = format!("n{}", i % 3 + 1);
            let ip = format!("10.0.1.{}", 100 + i);
            let name = format!("{LAB}-r{i}");
            on(
                &shoal,
                &node,
                &[
                    "endpoint",
                    "create",
                    "--network",
                    "labnet",
                    "--ip",
                    &format!("{ip}/24"),
                    "--name",
                    &name,
                ],
            )?;
            children.push(
                Command::new("ip")
                    .args(["netns", "exec", &name])
                    .arg(&shoal)
                    .args(["whoami", "--port", "80"])
                    .spawn()
                    .context("reference whoami")?,
            );
        }
        let lab_ep = format!("{LAB}-n1-e1");
        while !(0..12).all(|i| answers(&lab_ep, &format!("10.0.1.{}", 100 + i))) {
            if t0.elapsed() > Duration::from_secs(60) {
                bail!("reference: not answering");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        reference.push(t0.elapsed().as_secs_f64() * 1e3);
        for mut c in children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for i in 0..12u32 {
            let node = format!("n{}", i % 3 + 1);
            on(&shoal, &node, &["endpoint", "rm", &format!("{LAB}-r{i}")])?;
        }
        eprintln!(
            "run {}: service of 12 answering after {:.0} ms; by hand {:.0} ms",
            r + 1,
            create[r as usize],
            reference[r as usize]
        );
    }

    // Node loss: 6 tasks, kill the worker holding some, until all run elsewhere.
    whoami_service(&shoal, "move", &["--replicas", "6"], "80")?;
    let mut moved = vec![];
    for r in 0..a.runs.min(3) {
        let victim = if r % 2 == 0 { "n3" } else { "n2" };
        run(Command::new(&shoal).args(["lab", "kill", "--name", LAB, victim]))?;
        let t0 = Instant::now();
        loop {
            let ts = tasks(&shoal, "move")?;
            if ts.len() == 6 && ts.iter().all(|t| t.1 != victim && t.2 == "running") {
                break;
            }
            if t0.elapsed() > Duration::from_secs(60) {
                bail!("tasks not moved within 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        moved.push(t0.elapsed().as_secs_f64() * 1e3);
        eprintln!(
            "kill {} of {victim}: all 6 running elsewhere after {:.0} ms",
            r + 1,
            moved[r as usize]
        );
        run(Command::new(&shoal).args(["lab", "start", "--name", LAB, victim]))?;
        // Let it come back Ready before the next kill (tasks do not move back).
        std::thread::sleep(Duration::from_secs(5));
        on(&shoal, "n1", &["service", "scale", "-d", "move=0"])?;
        std::thread::sleep(Duration::from_secs(2));
        on(&shoal, "n1", &["service", "scale", "move=6"])?;
    }

    let sim: Value =
        serde_json::from_slice(&run(Command::new(&shoal).args(["debug", "schedule-sim"]))?.stdout)?;
    let report = serde_json::json!({
        "benchmark": "services_lab",
        "runs": a.runs,
        "replicas": 12,
        "reference_by_hand_12_processes": stats(reference),
        "service_create_to_12_answering": stats(create),
        "node_kill_to_tasks_running_elsewhere": stats(moved),
        "knobs": {"heartbeat_ms": 500, "down_after_ms": 3000, "orchestrator_pass_ms": 200},
        "schedule_sim": sim,
    });
    println!("\nServices, 3-node lab ({} runs)\n", a.runs);
    println!(
        "{:<52} {:>9} {:>9} {:>9}",
        "", "median ms", "max ms", "min ms"
    );
    let rows = [
        (
            "reference: 12 whoami started by hand (no Raft)",
            "reference_by_hand_12_processes",
        ),
        (
            "service create --replicas 12 -> all answer",
            "service_create_to_12_answering",
        ),
        (
            "worker kill -9 -> its tasks running elsewhere",
            "node_kill_to_tasks_running_elsewhere",
        ),
    ];
    common::print_stats(&report, &rows, 52, 0);
    println!(
        "\nIn-process: {} tasks over {} nodes ({}, max {} per node): plan {:.0} ms, apply {:.0} ms, {}..{} per node, {} pending, peak RSS {:.0} MB",
        sim["tasks"], sim["nodes"], sim["constraint"].as_str().unwrap_or(""), sim["max_per_node"],
        sim["plan_ms"].as_f64().unwrap_or(0.0), sim["apply_ms"].as_f64().unwrap_or(0.0),
        sim["per_node_min"], sim["per_node_max"], sim["pending"], sim["peak_rss_mb"].as_f64().unwrap_or(0.0)
    );
    let chart = common::medians_chart("Services, 3-node lab", &report, &rows);
    common::emit(&report, a.json.as_deref(), &chart)?;
    Ok(())
}

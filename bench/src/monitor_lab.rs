//! The cost of being watched, in one run on a 2-node lab: a client task on
//! n1 and a server task on n2; overlay throughput (iperf3 to the task's
//! address) and new connections per second through the service's VIP,
//! with `shoal debug monitor` off, listening for drops only, and tracing
//! every forwarded packet (a monitor on each node, its output discarded).
//! Alternating rounds, medians. Target: drops-only costs < 2 %.

use std::path::Path;
use std::process::{Child, Command, Stdio};

mod common;

use anyhow::{Context, Result};
use clap::Parser;
use common::{
    conn_rate, create_service, iperf, on, run, service_vip, stats, task_ip, task_netns, tasks_of,
    LabGuard,
};
use serde_json::{json, Value};

#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    lab: common::LabArgs,
}

const LAB: &str = "bmo";
const MODES: [&str; 3] = ["off", "drops", "trace"];

/// Monitors on both nodes for `mode` (none when off), killed when dropped.
struct Monitors(Vec<Child>);

impl Monitors {
    fn start(shoal: &Path, mode: &str) -> Result<Self> {
        let mut v = vec![];
        if mode != "off" {
            for node in ["n1", "n2"] {
                let kind = if mode == "drops" { "drop" } else { "trace" };
                v.push(
                    Command::new(shoal)
                        .args(["debug", "--lab", LAB, "--node", node, "monitor"])
                        .args(["--type", kind])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()?,
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        Ok(Self(v))
    }
}

impl Drop for Monitors {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // SIGINT: the monitor switches reporting off as it leaves.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGINT,
            );
            let _ = c.wait();
        }
    }
}

fn main() -> Result<()> {
    let a = Args::parse();
    if let Some(done) = a.lab.internal_role() {
        return done;
    }
    let shoal = common::shoal_path(a.lab.shoal.clone());
    let bin = shoal.to_string_lossy().into_owned();
    let _lab = LabGuard::fresh(&shoal, LAB);
    run(Command::new(&shoal).args(["lab", "up", "--name", LAB, "--nodes", "2"]))?;
    on(&shoal, LAB, "n1", &["network", "create", "appnet"])?;
    let server = format!("iperf3 -s -p 5201 & exec {bin} whoami --port 80");
    create_service(
        &shoal,
        LAB,
        "srv",
        &[
            "--constraint",
            "node.hostname==n2",
            "--",
            "sh",
            "-c",
            &server,
        ],
    )?;
    create_service(
        &shoal,
        LAB,
        "client",
        &["--constraint", "node.hostname==n1", "--", "sleep", "100000"],
    )?;
    let srv = tasks_of(&shoal, LAB, "srv")?;
    let client = tasks_of(&shoal, LAB, "client")?;
    let direct = task_ip(srv.first().context("no server task")?);
    let vip = service_vip(&shoal, LAB, "srv")?;
    let ns = task_netns(LAB, "n1", client.first().context("no client task")?);
    std::thread::sleep(std::time::Duration::from_secs(2));

    let mut tput: [Vec<f64>; 3] = Default::default();
    let mut conns: [Vec<f64>; 3] = Default::default();
    for r in 0..a.lab.rounds {
        // Each round starts with another mode: the machine drifts during a
        // run, and a fixed order would charge the drift to the later modes.
        for k in 0..MODES.len() {
            let i = (k + r as usize) % MODES.len();
            let mode = MODES[i];
            let _m = Monitors::start(&shoal, mode)?;
            tput[i].push(iperf(&ns, &direct, 5201)?);
            conns[i].push(conn_rate(&ns, &vip, 80)?);
            eprintln!(
                "round {}: monitor {mode}: {:.2} Gbit/s, {:.0} conn/s",
                r + 1,
                tput[i][r as usize],
                conns[i][r as usize]
            );
        }
    }
    let med = |v: &Vec<f64>| stats(v.clone())["median_ms"].as_f64().unwrap_or(0.0);
    let rows: Vec<Value> = MODES
        .iter()
        .enumerate()
        .map(|(i, m)| {
            json!({
                "monitor": m,
                "overlay_throughput_gbit": med(&tput[i]),
                "vip_new_connections_per_s": med(&conns[i]),
                "throughput_cost_pct": 100.0 * (1.0 - med(&tput[i]) / med(&tput[0])),
                "connection_cost_pct": 100.0 * (1.0 - med(&conns[i]) / med(&conns[0])),
            })
        })
        .collect();
    println!(
        "\nThe cost of being watched (2-node lab, medians of {} alternating rounds)\n",
        a.lab.rounds
    );
    println!(
        "{:<10} {:>14} {:>8} {:>14} {:>8}",
        "monitor", "overlay Gbit/s", "cost", "VIP conn/s", "cost"
    );
    for r in &rows {
        println!(
            "{:<10} {:>14.2} {:>7.1}% {:>14.0} {:>7.1}%",
            r["monitor"].as_str().unwrap_or(""),
            r["overlay_throughput_gbit"].as_f64().unwrap_or(0.0),
            r["throughput_cost_pct"].as_f64().unwrap_or(0.0),
            r["vip_new_connections_per_s"].as_f64().unwrap_or(0.0),
            r["connection_cost_pct"].as_f64().unwrap_or(0.0),
        );
    }
    println!(
        "\nTarget: drops-only costs < 2 % (the reference is the same run with the monitor off)."
    );
    let report = json!({"benchmark": "monitor_lab", "rounds": a.lab.rounds, "modes": rows});
    let chart = common::rows_chart(
        "The cost of being watched (monitor off, drops only, full tracing)",
        &rows.iter().collect::<Vec<_>>(),
        "monitor",
        &[
            ("overlay TCP, Gbit/s", "overlay_throughput_gbit"),
            ("VIP new connections per s", "vip_new_connections_per_s"),
        ],
    );
    common::emit(&report, a.lab.json.as_deref(), &chart)
}

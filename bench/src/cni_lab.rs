//! Containers on Shoal through its CNI plugin, in one run on a 2-node lab:
//!
//! - CNI ADD and DEL latency over `--containers` namespaces (200), each
//!   call timed as a runtime makes it (a process per call, the
//!   configuration on stdin), Shoal's `shoal-cni` alternating with the
//!   stock `bridge` + `host-local` plugins (containernetworking-plugins)
//!   called the same way in the same node's namespace: p50, p99, max.
//! - Single-stream TCP throughput (iperf3) from a container attached by
//!   the plugin on n1 to a task on n2, alternating with a task on n1 to
//!   the same task: every round and the medians.
//!
//! Needs root, iperf3, /usr/lib/cni (containernetworking-plugins).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

mod common;

use anyhow::{bail, Context, Result};
use clap::Parser;
use common::{create_service, iperf, on, run, sh, task_ip, task_netns, tasks_of, LabGuard};
use serde_json::{json, Value};

#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    lab: common::LabArgs,
    /// Namespaces attached and detached by each plugin.
    #[arg(long, default_value_t = 200)]
    containers: usize,
}

const LAB: &str = "bcni";
const STOCK: &str = "/usr/lib/cni";

/// One plugin call as a runtime makes it, in the node's namespace; its
/// wall time in ms.
fn call(plugin: &Path, cni_path: &str, env: &[(&str, &str)], conf: &str) -> Result<f64> {
    let t = Instant::now();
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{LAB}-n1"))
        .arg(plugin)
        .env_clear()
        .env("CNI_PATH", cni_path)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(conf.as_bytes())?;
    let o = child.wait_with_output()?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if !o.status.success() {
        bail!(
            "{} {:?}: {}",
            plugin.display(),
            env,
            String::from_utf8_lossy(&o.stdout)
        );
    }
    Ok(ms)
}

fn percentiles(mut v: Vec<f64>) -> Value {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    let r = |x: f64| (x * 100.0).round() / 100.0;
    json!({"p50_ms": r(at(0.5)), "p99_ms": r(at(0.99)), "max_ms": r(at(1.0)), "n": v.len()})
}

/// ADD then DEL of `n` namespaces with both plugins, alternating.
fn latency(shoal_cni: &Path, n: usize, dir: &Path) -> Result<Value> {
    let socket = format!("/run/shoal/lab/{LAB}/nodes/n1/shoal.sock");
    let shoal_conf = json!({"cniVersion": "1.0.0", "name": "appnet", "type": "shoal-cni",
        "network": "appnet", "socket": socket})
    .to_string();
    let bridge_conf = json!({"cniVersion": "1.0.0", "name": "bench-bridge", "type": "bridge",
        "bridge": "bcnibr0", "ipam": {"type": "host-local", "subnet": "10.99.0.0/16",
        "dataDir": dir.join("host-local")}})
    .to_string();
    let shoal_path = shoal_cni
        .parent()
        .context("plugin dir")?
        .display()
        .to_string();
    let bridge = PathBuf::from(STOCK).join("bridge");
    let mut t: [[Vec<f64>; 2]; 2] = Default::default(); // [plugin][add, del]
    let ns = |p: usize, i: usize| format!("{LAB}-c{p}x{i}");
    for i in 0..n {
        for p in 0..2 {
            sh(&format!("ip netns add {}", ns(p, i)))?;
        }
    }
    for (step, cmd) in ["ADD", "DEL"].iter().enumerate() {
        for i in 0..n {
            for (p, times) in t.iter_mut().enumerate() {
                let id = format!("c{p}x{i}");
                let path = format!("/run/netns/{}", ns(p, i));
                let env = [
                    ("CNI_COMMAND", *cmd),
                    ("CNI_CONTAINERID", id.as_str()),
                    ("CNI_NETNS", path.as_str()),
                    ("CNI_IFNAME", "eth0"),
                ];
                let ms = match p {
                    0 => call(shoal_cni, &shoal_path, &env, &shoal_conf)?,
                    _ => call(&bridge, STOCK, &env, &bridge_conf)?,
                };
                times[step].push(ms);
            }
        }
        eprintln!("{cmd} of {n} containers done with both plugins");
    }
    for i in 0..n {
        for p in 0..2 {
            let _ = sh(&format!("ip netns del {}", ns(p, i)));
        }
    }
    let (sa, sd) = (percentiles(t[0][0].clone()), percentiles(t[0][1].clone()));
    let (ba, bd) = (percentiles(t[1][0].clone()), percentiles(t[1][1].clone()));
    let ratio = |a: &Value, b: &Value, k: &str| {
        ((a[k].as_f64().unwrap_or(0.0) / b[k].as_f64().unwrap_or(1.0)) * 100.0).round() / 100.0
    };
    Ok(json!({
        "shoal": {"add": sa, "del": sd},
        "bridge_host_local": {"add": ba, "del": bd},
        "add_p99_ratio": ratio(&sa, &ba, "p99_ms"),
        "add_p50_ratio": ratio(&sa, &ba, "p50_ms"),
        "del_p99_ratio": ratio(&sd, &bd, "p99_ms"),
    }))
}

/// A container on n1 (attached by the plugin) and a task on n1, each to
/// a task on n2: every round.
fn throughput(shoal: &Path, shoal_cni: &Path, rounds: u32) -> Result<Value> {
    let bin = shoal.to_string_lossy().into_owned();
    create_service(
        shoal,
        LAB,
        "srv",
        &[
            "--constraint",
            "node.hostname==n2",
            "--",
            "iperf3",
            "-s",
            "-p",
            "5201",
        ],
    )?;
    create_service(
        shoal,
        LAB,
        "cli",
        &[
            "--constraint",
            "node.hostname==n1",
            "--",
            &bin,
            "whoami",
            "--port",
            "80",
        ],
    )?;
    let server = task_ip(tasks_of(shoal, LAB, "srv")?.first().context("no server")?);
    let task_ns = task_netns(
        LAB,
        "n1",
        tasks_of(shoal, LAB, "cli")?.first().context("no client")?,
    );
    let ns = format!("{LAB}-ctr");
    sh(&format!("ip netns add {ns}; ip -n {ns} link set lo up"))?;
    let socket = format!("/run/shoal/lab/{LAB}/nodes/n1/shoal.sock");
    let conf = json!({"cniVersion": "1.0.0", "name": "appnet", "type": "shoal-cni",
        "network": "appnet", "socket": socket})
    .to_string();
    let path = format!("/run/netns/{ns}");
    let env = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "tput"),
        ("CNI_NETNS", path.as_str()),
        ("CNI_IFNAME", "eth0"),
    ];
    let dir = shoal_cni.parent().context("dir")?.display().to_string();
    call(shoal_cni, &dir, &env, &conf)?;
    std::thread::sleep(std::time::Duration::from_secs(2));
    let (mut ctr, mut task) = (vec![], vec![]);
    for r in 0..rounds {
        // Which goes first alternates: drift on a shared machine favours
        // neither.
        if r % 2 == 0 {
            ctr.push(iperf(&ns, &server, 5201)?);
            task.push(iperf(&task_ns, &server, 5201)?);
        } else {
            task.push(iperf(&task_ns, &server, 5201)?);
            ctr.push(iperf(&ns, &server, 5201)?);
        }
        eprintln!(
            "round {}: container {:.2} Gbit/s, task {:.2} Gbit/s ({:.2}x)",
            r + 1,
            ctr[r as usize],
            task[r as usize],
            ctr[r as usize] / task[r as usize]
        );
    }
    let _ = sh(&format!("ip netns del {ns}"));
    let med = |v: &Vec<f64>| {
        let mut v = v.clone();
        v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
        v[v.len() / 2]
    };
    let ratios: Vec<f64> = ctr.iter().zip(&task).map(|(c, t)| c / t).collect();
    Ok(json!({
        "container_gbit": ctr, "task_gbit": task,
        "container_median": med(&ctr), "task_median": med(&task),
        "paired_ratio_median": med(&ratios), "paired_ratios": ratios,
    }))
}

fn main() -> Result<()> {
    let a = Args::parse();
    let shoal = common::shoal_path(a.lab.shoal.clone());
    let _lab = LabGuard::fresh(&shoal, LAB);
    run(Command::new(&shoal).args(["lab", "up", "--name", LAB, "--nodes", "2"]))?;
    on(
        &shoal,
        LAB,
        "n1",
        &["network", "create", "--attachable", "appnet"],
    )?;
    let dir = tempfile::tempdir()?;
    let shoal_cni = dir.path().join("bin").join("shoal-cni");
    std::fs::create_dir_all(shoal_cni.parent().context("dir")?)?;
    std::os::unix::fs::symlink(&shoal, &shoal_cni)?;
    let lat = latency(&shoal_cni, a.containers, dir.path())?;
    let tput = throughput(&shoal, &shoal_cni, a.lab.rounds.max(3))?;

    let row = |label: &str, v: &Value| {
        println!(
            "{label:<26} {:>8.2} {:>8.2} {:>8.2}   {:>8.2} {:>8.2} {:>8.2}",
            v["add"]["p50_ms"].as_f64().unwrap_or(0.0),
            v["add"]["p99_ms"].as_f64().unwrap_or(0.0),
            v["add"]["max_ms"].as_f64().unwrap_or(0.0),
            v["del"]["p50_ms"].as_f64().unwrap_or(0.0),
            v["del"]["p99_ms"].as_f64().unwrap_or(0.0),
            v["del"]["max_ms"].as_f64().unwrap_or(0.0),
        )
    };
    println!(
        "\nCNI calls on a lab node, {} containers each, ms\n\n{:<26} {:>8} {:>8} {:>8}   {:>8} {:>8} {:>8}",
        a.containers, "plugin", "ADD p50", "p99", "max", "DEL p50", "p99", "max"
    );
    row("shoal-cni", &lat["shoal"]);
    row("bridge + host-local", &lat["bridge_host_local"]);
    println!(
        "\nADD p99: Shoal {:.2}x the bridge plugin's (target <= 2x)",
        lat["add_p99_ratio"].as_f64().unwrap_or(0.0)
    );
    println!(
        "single stream to a task on the other node: container {:.2} Gbit/s, task {:.2} Gbit/s, paired median {:.2}x (target >= 0.95x)",
        tput["container_median"].as_f64().unwrap_or(0.0),
        tput["task_median"].as_f64().unwrap_or(0.0),
        tput["paired_ratio_median"].as_f64().unwrap_or(0.0)
    );
    let report = json!({
        "benchmark": "cni",
        "containers": a.containers,
        "latency": lat,
        "throughput": tput,
        "results": [
            {"label": "shoal-cni", "add_p99_ms": lat["shoal"]["add"]["p99_ms"], "del_p99_ms": lat["shoal"]["del"]["p99_ms"]},
            {"label": "bridge + host-local", "add_p99_ms": lat["bridge_host_local"]["add"]["p99_ms"], "del_p99_ms": lat["bridge_host_local"]["del"]["p99_ms"]},
        ],
    });
    let chart = common::results_chart(
        "CNI ADD/DEL: Shoal against the bridge plugin",
        &report,
        &[("ADD p99, ms", "add_p99_ms"), ("DEL p99, ms", "del_p99_ms")],
    );
    common::emit(&report, a.lab.json.as_deref(), &chart)
}

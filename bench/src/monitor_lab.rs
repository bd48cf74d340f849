//! The cost of being watched, in one run on a 2-node lab: a client task on
//! n1 and a server task on n2; overlay throughput (iperf3 to the task's
//! address) and new connections per second through the service's VIP,
//! with `shoal debug monitor` off, listening for drops only, and tracing
//! every forwarded packet (a monitor on each node, its output discarded).
//! Alternating rounds, medians. Target: drops-only costs < 2 %.
//!
//! The lab's rounds vary by several per cent between runs of one mode, more
//! than the cost to resolve; so the per-packet cost of the endpoint program
//! on its local-delivery path (which has a trace point) is also measured
//! in each mode with BPF_PROG_TEST_RUN (`bpftool prog run`, 2 million
//! repeats of a frame from one of n1's endpoints to the other), the kernel
//! timing the program alone.

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

/// A UDP frame (18-byte payload) from `src` to `dst`, both lab endpoints.
fn frame(src: &Value, dst: &Value) -> Result<Vec<u8>> {
    let mac = |v: &Value| -> Result<Vec<u8>> {
        let s = v["mac"].as_str().context("endpoint mac")?;
        s.split(':')
            .map(|h| u8::from_str_radix(h, 16).map_err(Into::into))
            .collect()
    };
    let ip = |v: &Value| -> Result<[u8; 4]> {
        let a: std::net::Ipv4Addr = v["ip"].as_str().context("endpoint ip")?.parse()?;
        Ok(a.octets())
    };
    let mut f = mac(dst)?;
    f.extend(mac(src)?);
    f.extend([0x08, 0x00]);
    let mut iph = vec![0x45, 0, 0, 46, 0, 0, 0x40, 0, 64, 17, 0, 0];
    iph.extend(ip(src)?);
    iph.extend(ip(dst)?);
    let mut sum: u32 = iph
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    iph[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f.extend(iph);
    f.extend([0x9c, 0x40, 0x14, 0x51, 0, 26, 0, 0]);
    f.extend([b'x'; 18]);
    Ok(f)
}

/// ns per run of n1's endpoint program on a local delivery, median of 3
/// runs of 2 million repeats each.
fn prog_ns(shoal: &Path) -> Result<f64> {
    let o = run(Command::new(shoal).args(["lab", "ls", "--name", LAB, "--format", "json"]))?;
    let lab: Value = serde_json::from_slice(&o.stdout)?;
    let eps: Vec<&Value> = lab["endpoints"]
        .as_array()
        .context("lab endpoints")?
        .iter()
        .filter(|e| e["node"] == "n1")
        .collect();
    anyhow::ensure!(eps.len() >= 2, "want two endpoints on n1: {eps:?}");
    let dir = tempfile::Builder::new().prefix("shoal-bmo-").tempdir()?;
    let (data, ctx) = (dir.path().join("frame"), dir.path().join("ctx"));
    std::fs::write(&data, frame(eps[0], eps[1])?)?;
    let ns = format!("{LAB}-n1");
    let ifindex: Value = serde_json::from_str(&common::sh(&format!(
        "ip -n {ns} -j link show dev {}",
        eps[0]["host_if"].as_str().context("host_if")?
    ))?)?;
    let ifindex = ifindex[0]["ifindex"].as_u64().context("ifindex")? as u32;
    // struct __sk_buff, 192 bytes: ifindex at offset 40.
    let mut c = vec![0u8; 192];
    c[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    std::fs::write(&ctx, c)?;
    let progs: Value = serde_json::from_str(&common::sh(&format!(
        "{} debug --lab {LAB} --node n1 programs --format json",
        shoal.display()
    ))?)?;
    let id = progs
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["role"] == "ep" && p["hook"] == "tc")
        .and_then(|p| p["prog_id"].as_u64())
        .context("n1's endpoint program")?;
    let mut v = vec![];
    for _ in 0..3 {
        let out = common::sh(&format!(
            "ip netns exec {ns} bpftool prog run id {id} data_in {} data_out /dev/null ctx_in {} repeat 2000000",
            data.display(),
            ctx.display()
        ))?;
        let ns_per = out
            .split("duration (average): ")
            .nth(1)
            .and_then(|r| r.trim().strip_suffix("ns"))
            .with_context(|| format!("bpftool output: {out}"))?
            .parse::<f64>()?;
        anyhow::ensure!(
            out.contains("Return value: 7"),
            "not a local delivery: {out}"
        );
        v.push(ns_per);
    }
    Ok(stats(v)["median_ms"].as_f64().unwrap_or(0.0))
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
    let mut per_packet = [0.0; 3];
    for (i, mode) in MODES.iter().enumerate() {
        let _m = Monitors::start(&shoal, mode)?;
        per_packet[i] = prog_ns(&shoal)?;
        eprintln!("monitor {mode}: {:.1} ns per local delivery", per_packet[i]);
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
                "program_ns_per_packet": per_packet[i],
                "program_cost_pct": 100.0 * (per_packet[i] / per_packet[0] - 1.0),
            })
        })
        .collect();
    println!(
        "\nThe cost of being watched (2-node lab, medians of {} alternating rounds)\n",
        a.lab.rounds
    );
    println!(
        "{:<10} {:>14} {:>8} {:>14} {:>8} {:>14} {:>8}",
        "monitor", "overlay Gbit/s", "cost", "VIP conn/s", "cost", "program ns", "cost"
    );
    for r in &rows {
        println!(
            "{:<10} {:>14.2} {:>7.1}% {:>14.0} {:>7.1}% {:>14.1} {:>7.1}%",
            r["monitor"].as_str().unwrap_or(""),
            r["overlay_throughput_gbit"].as_f64().unwrap_or(0.0),
            r["throughput_cost_pct"].as_f64().unwrap_or(0.0),
            r["vip_new_connections_per_s"].as_f64().unwrap_or(0.0),
            r["connection_cost_pct"].as_f64().unwrap_or(0.0),
            r["program_ns_per_packet"].as_f64().unwrap_or(0.0),
            r["program_cost_pct"].as_f64().unwrap_or(0.0),
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
            (
                "endpoint program, ns per local delivery (lower is better)",
                "program_ns_per_packet",
            ),
        ],
    );
    common::emit(&report, a.lab.json.as_deref(), &chart)
}

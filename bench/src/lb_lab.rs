//! The eBPF VIP balancer against going straight to the task, in one run on
//! a 2-node lab: a client task on n1, one server task on n2 (iperf3,
//! sockperf and whoami in it). Alternating rounds to the service's VIP and
//! to the task's own IP: single-stream TCP throughput (iperf3), TCP
//! request/response latency (sockperf ping-pong), and new connections per
//! second (HTTP/1.0 requests on a fresh connection each, from one Python
//! client). Then the time and memory to build Maglev tables for 1,000
//! services x 100 backends. (IPVS needs a kernel with IP_VS: not here.)

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

mod common;

use anyhow::{Context, Result};
use clap::Parser;
use common::{create_service, on, run, stats, LabGuard};
use serde_json::{json, Value};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long)]
    shoal: Option<PathBuf>,
}

const LAB: &str = "blb";

fn sh(cmd: &str) -> Result<String> {
    Ok(String::from_utf8_lossy(&run(Command::new("sh").args(["-c", cmd]))?.stdout).into_owned())
}

fn iperf(ns: &str, ip: &str) -> Result<f64> {
    let v: Value =
        serde_json::from_str(&sh(&format!("ip netns exec {ns} iperf3 -c {ip} -t 3 -J"))?)?;
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3 report")?;
    Ok(bps / 1e9)
}

fn latency_us(ns: &str, ip: &str) -> Result<f64> {
    let out = sh(&format!(
        "timeout 30 ip netns exec {ns} sockperf pp --tcp -i {ip} -p 11111 -t 3 2>&1"
    ))?;
    let at = out.find("avg-latency=").context("sockperf output")? + "avg-latency=".len();
    let num: String = out[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    Ok(num.parse()?)
}

fn conn_rate(ns: &str, ip: &str) -> Result<f64> {
    let script = format!(
        "import socket,time\nn=0\nt=time.time()\nwhile time.time()-t<2:\n s=socket.create_connection(('{ip}',80))\n s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\n while s.recv(4096): pass\n s.close()\n n+=1\nprint(n/(time.time()-t))\n"
    );
    let out = run(Command::new("ip").args(["netns", "exec", ns, "python3", "-c", &script]))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

fn main() -> Result<()> {
    let a = Args::parse();
    let shoal = common::shoal_path(a.shoal.clone());
    let bin = shoal.to_string_lossy().into_owned();
    let _lab = LabGuard::fresh(&shoal, LAB);
    run(Command::new(&shoal).args(["lab", "up", "--name", LAB, "--nodes", "2"]))?;
    on(&shoal, LAB, "n1", &["network", "create", "appnet"])?;
    let server = format!(
        "iperf3 -s -p 5201 & sockperf sr --tcp -i 0.0.0.0 -p 11111 >/dev/null & exec {bin} whoami --port 80"
    );
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
    // Two clients: a NAT path and a direct one from the same address
    // would collide in the server's TIME_WAIT table (the same 4-tuple as
    // the server sees it), which no balancer can avoid.
    create_service(
        &shoal,
        LAB,
        "client",
        &[
            "--replicas",
            "2",
            "--constraint",
            "node.hostname==n1",
            "--",
            "sleep",
            "100000",
        ],
    )?;
    let task = |svc: &str| -> Result<Value> {
        let out = on(
            &shoal,
            LAB,
            "n1",
            &["service", "ps", svc, "--format", "json"],
        )?;
        Ok(serde_json::from_str(
            out.lines().next().context("no task")?,
        )?)
    };
    let srv = task("srv")?;
    let clients: Vec<Value> = on(
        &shoal,
        LAB,
        "n1",
        &["service", "ps", "client", "--format", "json"],
    )?
    .lines()
    .filter_map(|l| serde_json::from_str(l).ok())
    .collect();
    let ip_of = |t: &Value| {
        t["NetworksAttachments"][0]["Addresses"][0]
            .as_str()
            .unwrap_or_default()
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let direct = ip_of(&srv);
    let insp: Value =
        serde_json::from_str(&on(&shoal, LAB, "n1", &["service", "inspect", "srv"])?)?;
    let vip = insp[0]["Endpoint"]["VirtualIPs"][0]["Addr"]
        .as_str()
        .and_then(|s| s.split('/').next())
        .context("no VIP")?
        .to_string();
    let ns_of = |t: &Value| format!("{LAB}-n1-t{}", &t["ID"].as_str().unwrap_or_default()[..12]);
    let ns = [ns_of(&clients[0]), ns_of(&clients[1])];
    std::thread::sleep(std::time::Duration::from_secs(2));

    let (mut tput, mut lat, mut conns) = ([vec![], vec![]], [vec![], vec![]], [vec![], vec![]]);
    for r in 0..a.rounds {
        for (i, ip) in [&direct, &vip].iter().enumerate() {
            tput[i].push(iperf(&ns[i], ip)?);
            lat[i].push(latency_us(&ns[i], ip)?);
            conns[i].push(conn_rate(&ns[i], ip)?);
        }
        eprintln!(
            "round {}: direct {:.2} Gbit/s {:.1} us {:.0} conn/s; VIP {:.2} Gbit/s {:.1} us {:.0} conn/s",
            r + 1,
            tput[0][r as usize],
            lat[0][r as usize],
            conns[0][r as usize],
            tput[1][r as usize],
            lat[1][r as usize],
            conns[1][r as usize]
        );
    }
    let med = |v: &Vec<f64>| stats(v.clone())["median_ms"].as_f64().unwrap_or(0.0);

    // Maglev tables: 1,000 services x 100 backends, M = 16381.
    let t0 = Instant::now();
    let mut total = 0usize;
    for s in 0..1000u32 {
        let backends: Vec<std::net::Ipv4Addr> = (0..100u32)
            .map(|b| std::net::Ipv4Addr::from(0x0a00_0000 + s * 256 + b + 1))
            .collect();
        total += shoal_dataplane::lb::maglev::table(&backends, 16381).len();
    }
    let build_s = t0.elapsed().as_secs_f64();
    let report = json!({
        "benchmark": "lb_lab",
        "rounds": a.rounds,
        "throughput_gbit": {"direct": med(&tput[0]), "vip": med(&tput[1]), "ratio": med(&tput[1]) / med(&tput[0])},
        "rr_latency_us": {"direct": med(&lat[0]), "vip": med(&lat[1]), "ratio": med(&lat[1]) / med(&lat[0])},
        "new_connections_per_s": {"direct": med(&conns[0]), "vip": med(&conns[1]), "ratio": med(&conns[1]) / med(&conns[0])},
        "maglev_1000x100": {"seconds": build_s, "table_bytes": total * 4},
    });
    println!(
        "\nVIP balancer, 2-node lab, medians of {} alternating rounds\n",
        a.rounds
    );
    println!(
        "{:<34} {:>10} {:>10} {:>8}",
        "", "direct", "via VIP", "ratio"
    );
    for (label, k) in [
        ("TCP single stream, Gbit/s", "throughput_gbit"),
        ("TCP request/response, us", "rr_latency_us"),
        ("new connections, per s", "new_connections_per_s"),
    ] {
        let r = &report[k];
        println!(
            "{label:<34} {:>10.2} {:>10.2} {:>8.3}",
            r["direct"].as_f64().unwrap_or(0.0),
            r["vip"].as_f64().unwrap_or(0.0),
            r["ratio"].as_f64().unwrap_or(0.0)
        );
    }
    println!(
        "\nMaglev tables, 1,000 services x 100 backends (M = 16381): {:.2} s, {} MB of tables",
        build_s,
        total * 4 / 1_000_000
    );
    common::emit(&report, a.json.as_deref())?;
    Ok(())
}

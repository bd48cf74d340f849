//! The VIP balancers against going straight to the task, in one run on a
//! 2-node lab: a client task on n1, one server task on n2 (iperf3, sockperf
//! and whoami in it). Alternating rounds to the service's VIP and to the
//! task's own IP: single-stream TCP throughput (iperf3), TCP
//! request/response latency (sockperf ping-pong), new TCP connections per
//! second (connect, the server closes; this binary as both ends), and
//! HTTP/1.0 requests on a fresh connection each (against `shoal whoami`). Then the time and memory to build Maglev tables for 1,000
//! services x 100 backends.
//!
//! `--vm`: the same inside Debian's kernel under qemu (this machine's has
//! no IPVS), for the eBPF balancer and IPVS one after the other in the
//! same boot, so the two compare (emulated CPUs: only ratios mean
//! anything there).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

mod common;

use anyhow::{Context, Result};
use clap::Parser;
use common::{
    conn_rate, create_service, iperf, latency_us, on, run, service_vip, sh, stats, task_ip,
    task_netns, tasks_of, tcp_conn_rate, LabGuard,
};
use serde_json::{json, Value};

#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    lab: common::LabArgs,
    /// Balancers to measure, in order (ebpf, ipvs).
    #[arg(long, value_delimiter = ',', default_value = "ebpf")]
    balancers: Vec<String>,
    /// Run inside the Debian-kernel VM with `--balancers ebpf,ipvs`.
    #[arg(long)]
    vm: bool,
}

/// Direct and through the VIP with balancer `lb`: medians per metric.
fn measure(shoal: &Path, lb: &str, rounds: u32, conn_clients: usize) -> Result<Value> {
    let bin = shoal.to_string_lossy().into_owned();
    let shoal = shoal.to_path_buf();
    let lab: &'static str = if lb == "ipvs" { "blbi" } else { "blb" };
    let _lab = LabGuard::fresh(&shoal, lab);
    let lb_arg = format!("--daemon-arg=--lb={lb}");
    run(Command::new(&shoal).args(["lab", "up", "--name", lab, "--nodes", "2", &lb_arg]))?;
    on(&shoal, lab, "n1", &["network", "create", "appnet"])?;
    let me = std::env::current_exe()?.to_string_lossy().into_owned();
    let server = format!(
        "iperf3 -s -p 5201 & sockperf sr --tcp -i 0.0.0.0 -p 11111 >/dev/null & {me} --accept-server 9000 & exec {bin} whoami --port 80"
    );
    create_service(
        &shoal,
        lab,
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
        lab,
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
    let srv = tasks_of(&shoal, lab, "srv")?;
    let clients = tasks_of(&shoal, lab, "client")?;
    let direct = task_ip(srv.first().context("no server task")?);
    let vip = service_vip(&shoal, lab, "srv")?;
    anyhow::ensure!(clients.len() == 2, "want 2 client tasks: {clients:?}");
    let ns = [
        task_netns(lab, "n1", &clients[0]),
        task_netns(lab, "n1", &clients[1]),
    ];
    std::thread::sleep(std::time::Duration::from_secs(2));

    let (mut tput, mut lat, mut conns) = ([vec![], vec![]], [vec![], vec![]], [vec![], vec![]]);
    let mut bare = [vec![], vec![]];
    for r in 0..rounds {
        for (i, ip) in [&direct, &vip].iter().enumerate() {
            tput[i].push(iperf(&ns[i], ip, 5201)?);
            lat[i].push(latency_us(&ns[i], ip, 11111)?);
            conns[i].push(conn_rate(&ns[i], ip, 80)?);
            bare[i].push(tcp_conn_rate(&ns[i], ip, 9000, conn_clients, 0)?);
        }
        eprintln!(
            "{lb} round {}: direct {:.2} Gbit/s {:.1} us {:.0} TCP conn/s {:.0} HTTP conn/s; VIP {:.2} Gbit/s {:.1} us {:.0} TCP conn/s {:.0} HTTP conn/s",
            r + 1,
            tput[0][r as usize],
            lat[0][r as usize],
            bare[0][r as usize],
            conns[0][r as usize],
            tput[1][r as usize],
            lat[1][r as usize],
            bare[1][r as usize],
            conns[1][r as usize]
        );
    }
    let med = |v: &Vec<f64>| stats(v.clone())["median_ms"].as_f64().unwrap_or(0.0);

    Ok(json!({
        "throughput_gbit": {"direct": med(&tput[0]), "vip": med(&tput[1]), "ratio": med(&tput[1]) / med(&tput[0])},
        "rr_latency_us": {"direct": med(&lat[0]), "vip": med(&lat[1]), "ratio": med(&lat[1]) / med(&lat[0])},
        "new_connections_per_s": {"direct": med(&conns[0]), "vip": med(&conns[1]), "ratio": med(&conns[1]) / med(&conns[0])},
        "tcp_connections_per_s": {"direct": med(&bare[0]), "vip": med(&bare[1]), "ratio": med(&bare[1]) / med(&bare[0])},
    }))
}

/// `--vm`: this benchmark inside the VM, both balancers; its report.
fn in_vm(a: &Args, shoal: &Path) -> Result<Value> {
    common::report_from_vm(
        shoal,
        "",
        &format!("--rounds {} --balancers ebpf,ipvs", a.lab.rounds),
        |l| l.contains(" round "),
    )
}

fn main() -> Result<()> {
    let a = Args::parse();
    if let Some(done) = a.lab.internal_role() {
        return done;
    }
    let shoal = common::shoal_path(a.lab.shoal.clone());
    if a.vm {
        let report = in_vm(&a, &shoal)?;
        print_report(&report);
        return common::emit(&report, a.lab.json.as_deref(), &chart(&report));
    }
    let mut per = serde_json::Map::new();
    for lb in &a.balancers {
        per.insert(
            lb.clone(),
            measure(&shoal, lb, a.lab.rounds, a.lab.clients)?,
        );
    }
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
    let mut report = json!({
        "benchmark": "lb_lab",
        "kernel": sh("uname -r")?.trim(),
        "rounds": a.lab.rounds,
        "balancers": per,
        "maglev_1000x100": {"seconds": build_s, "table_bytes": total * 4},
    });
    for (k, out) in [
        ("new_connections_per_s", "ebpf_vs_ipvs_new_connections"),
        ("tcp_connections_per_s", "ebpf_vs_ipvs_tcp_connections"),
    ] {
        let conn = |lb: &str| report["balancers"][lb][k]["vip"].as_f64();
        if let (Some(e), Some(i)) = (conn("ebpf"), conn("ipvs")) {
            report[out] = json!(e / i);
        }
    }
    print_report(&report);
    common::emit(&report, a.lab.json.as_deref(), &chart(&report))?;
    Ok(())
}

const MEASURES: [(&str, &str); 4] = [
    ("TCP single stream, Gbit/s", "throughput_gbit"),
    ("TCP request/response, us", "rr_latency_us"),
    ("new TCP connections, per s", "tcp_connections_per_s"),
    ("HTTP reqs on new conns, per s", "new_connections_per_s"),
];

/// Per measure: each balancer's direct and via-VIP bars.
fn chart(report: &Value) -> common::chart::Chart {
    let mut c = common::chart::Chart::new(format!(
        "VIP balancers, kernel {}",
        report["kernel"].as_str().unwrap_or("?")
    ));
    let per = report["balancers"].as_object().cloned().unwrap_or_default();
    for (title, k) in MEASURES {
        let mut bars = vec![];
        for (lb, m) in &per {
            for (side, label) in [("direct", "direct to the task"), ("vip", "via the VIP")] {
                bars.push((format!("{lb}: {label}"), m[k][side].as_f64().unwrap_or(0.0)));
            }
        }
        c = c.panel(title, bars);
    }
    c
}

fn print_report(report: &Value) {
    println!(
        "\nVIP balancers, 2-node lab on kernel {}, medians of {} alternating rounds",
        report["kernel"].as_str().unwrap_or("?"),
        report["rounds"]
    );
    let Some(per) = report["balancers"].as_object() else {
        return;
    };
    for (lb, m) in per {
        println!(
            "\n{lb}: {:<26} {:>10} {:>10} {:>8}",
            "", "direct", "via VIP", "ratio"
        );
        for (label, k) in MEASURES {
            let r = &m[k];
            println!(
                "{label:<34} {:>10.2} {:>10.2} {:>8.3}",
                r["direct"].as_f64().unwrap_or(0.0),
                r["vip"].as_f64().unwrap_or(0.0),
                r["ratio"].as_f64().unwrap_or(0.0)
            );
        }
    }
    if let Some(x) = report["ebpf_vs_ipvs_tcp_connections"].as_f64() {
        println!("\nnew TCP connections through the VIP, eBPF / IPVS: {x:.2}x (target >= 1.5x)");
    }
    if let Some(x) = report["ebpf_vs_ipvs_new_connections"].as_f64() {
        println!("HTTP requests on new connections through the VIP, eBPF / IPVS: {x:.2}x");
    }
    println!(
        "\nMaglev tables, 1,000 services x 100 backends (M = 16381): {:.2} s, {} MB of tables",
        report["maglev_1000x100"]["seconds"].as_f64().unwrap_or(0.0),
        report["maglev_1000x100"]["table_bytes"]
            .as_u64()
            .unwrap_or(0)
            / 1_000_000
    );
}

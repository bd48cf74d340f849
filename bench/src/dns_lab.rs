//! The embedded DNS under dnsperf, beside dnsmasq and Knot (one UDP
//! worker) serving the same record, all in one run on a 1-node lab.
//!
//! Shoal is asked at 127.0.0.11 from inside a task's namespace (its real
//! path); the references listen on 127.0.0.12 (dnsmasq) and 127.0.0.13
//! (knotd) in the node's namespace and are asked from there (loopback both
//! ways). Local name: `web` A (the service's VIP). Forwarded name:
//! `fwd.example.lab`, answered by an upstream dnsmasq in another lab
//! namespace, through Shoal and through dnsmasq with its cache off (Shoal
//! does not cache). Peak: `dnsperf -c 8 -l SECS`; latency: `-Q` at half the
//! peak with per-query latencies (`-v`), p50 and p99.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

mod common;

use anyhow::{bail, Context, Result};
use clap::Parser;
use common::{create_service, on, run, LabGuard};
use serde_json::{json, Value};

#[derive(Parser, Debug)]
struct Args {
    /// Seconds per dnsperf run.
    #[arg(long, default_value_t = 5)]
    secs: u32,
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long)]
    shoal: Option<PathBuf>,
}

const LAB: &str = "bdns";
const UPSTREAM: &str = "198.18.0.250";

struct Kill(Vec<Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn in_ns(ns: &str, cmd: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, cmd]).args(args);
    c
}

/// (QPS, lost %) of a dnsperf run.
fn peak(ns: &str, server: &str, data: &Path, secs: u32) -> Result<(f64, f64)> {
    let o = run(&mut in_ns(
        ns,
        "dnsperf",
        &[
            "-s",
            server,
            "-d",
            &data.to_string_lossy(),
            "-c",
            "8",
            "-l",
            &secs.to_string(),
        ],
    ))?;
    let out = String::from_utf8_lossy(&o.stdout);
    let num = |key: &str| -> Option<f64> {
        let l = out.lines().find(|l| l.trim_start().starts_with(key))?;
        l.split(':').nth(1)?.split_whitespace().next()?.parse().ok()
    };
    let qps = num("Queries per second").context("dnsperf: no QPS")?;
    let lost = out
        .lines()
        .find(|l| l.trim_start().starts_with("Queries lost"))
        .and_then(|l| l.split('(').nth(1))
        .and_then(|s| s.trim_end_matches("%)").parse().ok())
        .unwrap_or(0.0);
    Ok((qps, lost))
}

/// p50 and p99 latency (ms) at `qps`, from dnsperf's per-query lines.
fn latency(ns: &str, server: &str, data: &Path, qps: f64) -> Result<(f64, f64)> {
    let o = run(&mut in_ns(
        ns,
        "dnsperf",
        &[
            "-s",
            server,
            "-d",
            &data.to_string_lossy(),
            "-c",
            "8",
            "-l",
            "3",
            "-Q",
            &format!("{}", qps.max(100.0) as u64),
            "-v",
        ],
    ))?;
    let mut v: Vec<f64> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.starts_with("> "))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .map(|s| s * 1e3)
        .collect();
    if v.is_empty() {
        bail!("dnsperf -v printed no latencies");
    }
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let q = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
    Ok((q(0.5), q(0.99)))
}

fn main() -> Result<()> {
    let a = Args::parse();
    let shoal = common::shoal_path(a.shoal.clone());
    let _lab = LabGuard::fresh(&shoal, LAB);
    let work = std::env::temp_dir().join(format!("shoal-bdns-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    run(Command::new(&shoal).args([
        "lab",
        "up",
        "--name",
        LAB,
        "--nodes",
        "1",
        &format!("--daemon-arg=--dns={UPSTREAM}"),
    ]))?;
    // The upstream: dnsmasq in its own namespace on the underlay.
    let lab: Value = serde_json::from_slice(
        &run(Command::new(&shoal).args(["lab", "ls", "--name", LAB, "--format", "json"]))?.stdout,
    )?;
    let (ul, br) = (
        lab["underlay_netns"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        lab["underlay_bridge"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    );
    let up = format!("{LAB}-up");
    run(Command::new("sh").args([
        "-ec",
        &format!(
            "ip netns add {up} && ip -n {up} link set lo up && \
             ip -n {ul} link add {LAB}-upp type veth peer name eth0 netns {up} && \
             ip -n {ul} link set {LAB}-upp master {br} up && \
             ip -n {up} link set eth0 up && ip -n {up} addr add {UPSTREAM}/24 dev eth0"
        ),
    ]))?;
    let _up_ns = NsGuard(up.clone());
    let mut kids = Kill(vec![]);
    kids.0.push(
        in_ns(
            &up,
            "dnsmasq",
            &[
                "-k",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--user=root",
                &format!("--listen-address={UPSTREAM}"),
                "--address=/fwd.example.lab/198.51.100.7",
            ],
        )
        .spawn()?,
    );

    on(&shoal, LAB, "n1", &["network", "create", "appnet"])?;
    for name in ["web", "probe"] {
        create_service(&shoal, LAB, name, &["--", "sleep", "100000"])?;
    }
    let ps = on(
        &shoal,
        LAB,
        "n1",
        &["service", "ps", "probe", "--format", "json"],
    )?;
    let probe: Value = serde_json::from_str(ps.lines().next().context("no probe task")?)?;
    let probe_ns = format!(
        "{LAB}-n1-t{}",
        &probe["ID"].as_str().unwrap_or_default()[..12]
    );
    let insp: Value =
        serde_json::from_str(&on(&shoal, LAB, "n1", &["service", "inspect", "web"])?)?;
    let vip = insp[0]["Endpoint"]["VirtualIPs"][0]["Addr"]
        .as_str()
        .and_then(|s| s.split('/').next())
        .context("no VIP")?
        .to_string();
    let node_ns = format!("{LAB}-n1");

    // References in the node's namespace, serving the same record.
    kids.0.push(
        in_ns(
            &node_ns,
            "dnsmasq",
            &[
                "-k",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--user=root",
                "--listen-address=127.0.0.12",
                "--cache-size=0",
                &format!("--host-record=web,{vip}"),
                &format!("--server={UPSTREAM}"),
            ],
        )
        .spawn()?,
    );
    let kd = work.join("knot");
    std::fs::create_dir_all(&kd)?;
    std::fs::write(
        kd.join("web.zone"),
        format!(
            "$ORIGIN web.\n$TTL 5\n@ SOA ns.web. admin.web. 1 3600 600 86400 5\n@ NS ns.web.\n@ A {vip}\nns A 127.0.0.13\n"
        ),
    )?;
    let conf = kd.join("knot.conf");
    std::fs::write(
        &conf,
        format!(
            "server:\n    rundir: \"{d}\"\n    listen: 127.0.0.13@53\n    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\ndatabase:\n    storage: \"{d}\"\nzone:\n  - domain: web.\n    storage: \"{d}\"\n    file: \"web.zone\"\n",
            d = kd.display()
        ),
    )?;
    kids.0
        .push(in_ns(&node_ns, "knotd", &["-c", &conf.to_string_lossy()]).spawn()?);
    std::thread::sleep(Duration::from_secs(2));

    let local = work.join("local.txt");
    std::fs::write(&local, "web A\n")?;
    let fwd = work.join("fwd.txt");
    std::fs::write(&fwd, "fwd.example.lab A\n")?;
    // Everyone answers before measuring.
    for (ns, server, data) in [
        (&probe_ns, "127.0.0.11", &local),
        (&node_ns, "127.0.0.12", &local),
        (&node_ns, "127.0.0.13", &local),
        (&probe_ns, "127.0.0.11", &fwd),
        (&node_ns, "127.0.0.12", &fwd),
    ] {
        let name = std::fs::read_to_string(data)?;
        let name = name
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        let o = run(&mut in_ns(
            ns,
            "dig",
            &["+short", "+time=2", &format!("@{server}"), &name],
        ))?;
        if String::from_utf8_lossy(&o.stdout).trim().is_empty() {
            bail!("{server} in {ns} does not answer {name}");
        }
    }

    let mut rows = vec![];
    for (label, ns, server, data) in [
        (
            "shoal 127.0.0.11, local name",
            &probe_ns,
            "127.0.0.11",
            &local,
        ),
        ("dnsmasq, local name", &node_ns, "127.0.0.12", &local),
        (
            "knot (1 UDP worker), local name",
            &node_ns,
            "127.0.0.13",
            &local,
        ),
        (
            "shoal 127.0.0.11, forwarded name",
            &probe_ns,
            "127.0.0.11",
            &fwd,
        ),
        (
            "dnsmasq (no cache), forwarded name",
            &node_ns,
            "127.0.0.12",
            &fwd,
        ),
    ] {
        let (qps, lost) = peak(ns, server, data, a.secs)?;
        let (p50, p99) = latency(ns, server, data, qps / 2.0)?;
        eprintln!(
            "{label}: {qps:.0} QPS ({lost}% lost), at half: p50 {p50:.3} ms, p99 {p99:.3} ms"
        );
        rows.push(
            json!({"server": label, "qps": qps.round(), "lost_pct": lost,
            "p50_ms_at_half_peak": (p50 * 1000.0).round() / 1000.0,
            "p99_ms_at_half_peak": (p99 * 1000.0).round() / 1000.0}),
        );
    }
    let dns: Value = serde_json::from_str(&on(
        &shoal,
        LAB,
        "n1",
        &["debug", "dns", "--format", "json"],
    )?)?;
    let report = json!({
        "benchmark": "dns_lab",
        "seconds_per_run": a.secs,
        "dnsperf": "-c 8, one thread; latency at half the peak (-Q), from -v",
        "results": rows,
        "shoal_counters": dns["stats"],
    });
    println!("\nDNS, dnsperf -c 8, {} s per run, same run\n", a.secs);
    println!(
        "{:<38} {:>10} {:>7} {:>10} {:>10}",
        "", "QPS", "lost %", "p50 ms", "p99 ms"
    );
    for r in report["results"].as_array().into_iter().flatten() {
        println!(
            "{:<38} {:>10} {:>7} {:>10.3} {:>10.3}",
            r["server"].as_str().unwrap_or_default(),
            r["qps"],
            r["lost_pct"],
            r["p50_ms_at_half_peak"].as_f64().unwrap_or(0.0),
            r["p99_ms_at_half_peak"].as_f64().unwrap_or(0.0)
        );
    }
    let chart = common::rows_chart(
        "DNS, dnsperf -c 8 (same run)",
        &report["results"]
            .as_array()
            .into_iter()
            .flatten()
            .collect::<Vec<_>>(),
        "server",
        &[
            ("queries per s (higher is better)", "qps"),
            (
                "p99 at half the peak, ms (lower is better)",
                "p99_ms_at_half_peak",
            ),
        ],
    );
    common::emit(&report, a.json.as_deref(), &chart)?;
    drop(kids);
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// A namespace this run made, removed at the end.
struct NsGuard(String);

impl Drop for NsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

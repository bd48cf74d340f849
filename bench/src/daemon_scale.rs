//! A real `shoal daemon` holding Swarm2000's endpoint table (issue 24,
//! part 3): 96,287 endpoints on one network, each a task of one of 1,000
//! services with a VIP, gossiped to lab node n1 by simulated peers that
//! run the daemon's own gossip code (`shoal lab peers`: the sealed
//! transport, membership, the network's instance).
//!
//! The lab is a 2-node swarm; n1 runs a task on the network (so it is on
//! it, and the task asks its resolver for the services' names); the peers
//! gossip with the swarm's key ring as n1 holds it.
//!
//! Reference, same run and same method: the same daemon fed a small table
//! (1,000 endpoints by default). For each size it reports the time until
//! n1 has programmed the whole table, n1's memory and idle CPU with it, its
//! programming passes (`shoal_programming_pass_seconds`), DNS answers for
//! service names from the task (`dig` through `shoal exec`, so each answer
//! includes two process starts, the same at both sizes), `debug` and API
//! commands, one endpoint added and removed by a peer until programmed and
//! gone on n1, and the peers' goodbye until n1 holds none of their entries.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use anyhow::{bail, Context, Result};
use clap::Parser;
use common::{run, stats, LabGuard};
use serde_json::{json, Value};
use shoal_dataplane::overlay::Maps;

#[derive(Parser, Debug)]
struct Args {
    /// The table's size.
    #[arg(long, default_value_t = 96_287)]
    endpoints: u32,
    /// The reference table's size, same run.
    #[arg(long, default_value_t = 1_000)]
    reference_endpoints: u32,
    /// Simulated peers publishing the table between them.
    #[arg(long, default_value_t = 24)]
    peers: u32,
    #[arg(long, default_value_t = 1_000)]
    services: u32,
    /// Endpoints added (then removed) by a peer, one at a time.
    #[arg(long, default_value_t = 10)]
    changes: u32,
    /// Seconds over which idle CPU and passes are measured.
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long)]
    shoal: Option<PathBuf>,
}

const LAB: &str = "bds";
const SUBNET: &str = "10.64.0.0/15";
const PEERS_NS: &str = "bds-peers";

/// The peers' namespace on the lab's underlay, removed however the run
/// ends.
struct PeersNs;

impl PeersNs {
    fn up(lab: &Value, peers: u32) -> Result<Self> {
        let _ = Command::new("ip").args(["netns", "del", PEERS_NS]).status();
        let (ul, br) = (
            lab["underlay_netns"].as_str().unwrap_or_default(),
            lab["underlay_bridge"].as_str().unwrap_or_default(),
        );
        let mut cmd = format!(
            "ip netns add {PEERS_NS} && ip -n {PEERS_NS} link set lo up && \
             ip -n {ul} link add {LAB}-pp type veth peer name eth0 netns {PEERS_NS} && \
             ip -n {ul} link set {LAB}-pp master {br} up && ip -n {PEERS_NS} link set eth0 up"
        );
        for i in 0..peers {
            cmd += &format!(
                " && ip -n {PEERS_NS} addr add 198.18.0.{}/24 dev eth0",
                101 + i
            );
        }
        common::sh(&cmd)?;
        Ok(Self)
    }
}

impl Drop for PeersNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", PEERS_NS]).status();
    }
}

/// A running `shoal lab peers`, stopped (goodbye) when dropped.
struct Peers {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Peers {
    fn spawn(a: &Args, shoal: &Path, net: &Net, endpoints: u32) -> Result<Self> {
        let mut child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{PEERS_NS}"))
            .arg(shoal)
            .args(["lab", "peers", "--first-addr", "198.18.0.101"])
            .args(["--peers", &a.peers.to_string()])
            .args(["--endpoints", &endpoints.to_string()])
            .args(["--services", &a.services.to_string()])
            .args(["--network", "bignet", "--vni", &net.vni.to_string()])
            .args(["--subnet", SUBNET, "--join", "198.18.0.1:7946"])
            .args(["--cluster-id", LAB])
            // The swarm's gossip key ring, as n1 holds it.
            .args([
                "--gossip-keys-of",
                &format!("/run/shoal/lab/{LAB}/nodes/n1"),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().context("peers' stdout")?);
        let mut p = Self {
            child,
            stdin,
            stdout,
        };
        let first = p.line()?;
        if first != "ready" {
            bail!("shoal lab peers: {first:?}");
        }
        Ok(p)
    }

    fn line(&mut self) -> Result<String> {
        let mut l = String::new();
        if self.stdout.read_line(&mut l)? == 0 {
            bail!("shoal lab peers ended");
        }
        Ok(l.trim().to_string())
    }

    fn ask(&mut self, cmd: &str) -> Result<String> {
        let w = self.stdin.as_mut().context("peers stopped")?;
        writeln!(w, "{cmd}")?;
        w.flush()?;
        self.line()
    }

    /// Goodbye: end of input.
    fn leave(&mut self) {
        self.stdin = None;
        let _ = self.child.wait();
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        self.stdin = None;
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The big network as n1 has it, and n1's task on it (the DNS client).
struct Net {
    vni: u32,
    task_id: String,
    task_ip: std::net::Ipv4Addr,
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
        "2",
        "--endpoints",
        "0",
        "--managers",
        "1",
    ]))?;
    let lab: Value = serde_json::from_slice(
        &run(Command::new(&shoal).args(["lab", "ls", "--name", LAB, "--format", "json"]))?.stdout,
    )?;
    common::on(
        &shoal,
        LAB,
        "n1",
        &["network", "create", "--subnet", SUBNET, "bignet"],
    )?;
    let inspect: Value = serde_json::from_str(&common::on(
        &shoal,
        LAB,
        "n1",
        &["network", "inspect", "bignet"],
    )?)?;
    let vni: u32 = inspect[0]["Options"]["com.docker.network.driver.overlay.vxlanid_list"]
        .as_str()
        .context("bignet's VNI")?
        .parse()?;
    // A task on n1, on bignet: n1 is on the network, and the task asks its
    // resolver for the services' names.
    let bin = shoal.to_string_lossy().into_owned();
    common::on(
        &shoal,
        LAB,
        "n1",
        &[
            "service",
            "create",
            "--name",
            "probe",
            "--network",
            "bignet",
            "--constraint",
            "node.hostname==n1",
            "--",
            &bin,
            "whoami",
            "--port",
            "80",
        ],
    )?;
    let t = common::tasks_of(&shoal, LAB, "probe")?
        .into_iter()
        .find(|t| t["Status"]["State"] == "running")
        .context("probe's task running")?;
    let net = Net {
        vni,
        task_id: t["ID"].as_str().context("task id")?.to_string(),
        task_ip: common::task_ip(&t).parse()?,
    };
    let _ns = PeersNs::up(&lab, a.peers)?;
    let mut report = json!({
        "benchmark": "daemon_scale",
        "peers": a.peers,
        "services": a.services,
        "network_vni": net.vni,
    });
    let mut rows = vec![];
    for (label, size) in [
        ("reference", a.reference_endpoints),
        ("swarm2000", a.endpoints),
    ] {
        eprintln!("{label}: {size} endpoints from {} peers", a.peers);
        let r = measure(&a, &shoal, &lab, &net, size)?;
        eprintln!("{}", serde_json::to_string_pretty(&r)?);
        report[label] = r;
        rows.push(label);
    }
    print_report(&report);
    let chart = common::chart::Chart::new("A daemon holding 96,287 endpoints vs 1,000, same run")
        .panel(
            "one endpoint added -> programmed on n1, median ms",
            rows.iter()
                .map(|l| {
                    (
                        l.to_string(),
                        report[l]["add_to_programmed_ms"]["median_ms"]
                            .as_f64()
                            .unwrap_or(0.0),
                    )
                })
                .collect(),
        )
        .panel(
            "n1 RSS, MB",
            rows.iter()
                .map(|l| {
                    (
                        l.to_string(),
                        report[l]["n1_rss_mb"].as_f64().unwrap_or(0.0),
                    )
                })
                .collect(),
        );
    common::emit(&report, a.json.as_deref(), &chart)
}

/// n1's remote entries on the big network, straight from its pinned map.
fn remote_count(maps: &Maps, net: &Net) -> usize {
    maps.endpoints()
        .iter()
        .filter(|(k, _)| {
            k.vni == net.vni && std::net::Ipv4Addr::from(k.ip.to_ne_bytes()) != net.task_ip
        })
        .count()
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Result<Duration> {
    let t0 = Instant::now();
    while !f() {
        if t0.elapsed() > limit {
            bail!("{what}: not within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(t0.elapsed())
}

fn proc_field(pid: u64, file: &str, key: &str) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/{file}"))?;
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .context(format!("{key} in /proc/{pid}/{file}"))
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u64) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = &s[s.rfind(')').context("stat")? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

/// (count, sum seconds) of n1's programming passes, from its metrics.
fn passes(n1_ns: &str) -> Result<(f64, f64)> {
    let out = common::sh(&format!(
        "ip netns exec {n1_ns} curl -s -m 10 http://198.18.0.1:9323/metrics"
    ))?;
    let get = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok((
        get("shoal_programming_pass_seconds_count"),
        get("shoal_programming_pass_seconds_sum"),
    ))
}

fn timed(cmd: &mut Command) -> Result<(f64, usize)> {
    let t0 = Instant::now();
    let o = run(cmd)?;
    Ok((t0.elapsed().as_secs_f64() * 1e3, o.stdout.len()))
}

fn measure(a: &Args, shoal: &Path, lab: &Value, net: &Net, size: u32) -> Result<Value> {
    let pid = lab["nodes"][0]["pid"].as_u64().context("n1's pid")?;
    let n1_ns = lab["nodes"][0]["netns"]
        .as_str()
        .context("n1's netns")?
        .to_string();
    let maps = Maps::open(Path::new(&format!("/sys/fs/bpf/shoal-lab/{LAB}/n1")))?;
    let rss0 = proc_field(pid, "status", "VmRSS:")?;
    let t0 = Instant::now();
    let mut peers = Peers::spawn(a, shoal, net, size)?;
    let ready = t0.elapsed();
    let programmed = wait_until(
        "the whole table programmed on n1",
        Duration::from_secs(600),
        || remote_count(&maps, net) >= size as usize,
    )?;
    eprintln!(
        "  peers ready after {:.1} s; n1 programmed all {size} {:.1} s later",
        ready.as_secs_f64(),
        programmed.as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(5));
    // Idle with the table: CPU and passes.
    let (c0, p0, w0) = (cpu_ticks(pid)?, passes(&n1_ns)?, Instant::now());
    std::thread::sleep(Duration::from_secs(a.idle_secs));
    let (c1, p1, secs) = (cpu_ticks(pid)?, passes(&n1_ns)?, w0.elapsed().as_secs_f64());
    let hz = 100.0;
    let idle_cores = (c1 - c0) as f64 / hz / secs;
    let idle_passes = p1.0 - p0.0;
    let idle_pass_ms = if idle_passes > 0.0 {
        (p1.1 - p0.1) / idle_passes * 1e3
    } else {
        0.0
    };
    let rss = proc_field(pid, "status", "VmRSS:")?;
    // DNS: service names from n1's endpoint on the network, one dig each.
    let mut dns = vec![];
    let mut answered = 0;
    for i in 0..50u32 {
        let name = format!("svc{}", (i * 7919) % a.services.min(size));
        let t = Instant::now();
        let out = common::on(
            shoal,
            LAB,
            "n1",
            &[
                "exec",
                &net.task_id,
                "--",
                "dig",
                "+time=2",
                "+tries=1",
                "+short",
                &name,
            ],
        )?;
        dns.push(t.elapsed().as_secs_f64() * 1e3);
        if out.lines().any(|l| l.parse::<std::net::Ipv4Addr>().is_ok()) {
            answered += 1;
        }
    }
    // Commands against n1.
    let mut cmds = json!({});
    for (label, args) in [
        (
            "debug gossip (json)",
            vec![
                "debug", "--lab", LAB, "--node", "n1", "--format", "json", "gossip",
            ],
        ),
        (
            "debug endpoints (json)",
            vec![
                "debug",
                "--lab",
                LAB,
                "--node",
                "n1",
                "--format",
                "json",
                "endpoints",
            ],
        ),
        (
            "endpoint ls",
            vec![
                "endpoint",
                "--socket",
                &format!("/run/shoal/lab/{LAB}/nodes/n1/shoal.sock"),
                "ls",
            ],
        ),
    ] {
        let mut ms = vec![];
        let mut bytes = 0;
        for _ in 0..3 {
            let (t, b) = timed(Command::new(shoal).args(&args))?;
            ms.push(t);
            bytes = b;
        }
        cmds[label] = json!({"ms": stats(ms), "output_bytes": bytes});
    }
    // One change at a time, added then removed by a peer.
    let (mut add, mut rm) = (vec![], vec![]);
    for k in 0..a.changes {
        let got = peers.ask(&format!("add {k}"))?;
        let t = Instant::now();
        let ip: std::net::Ipv4Addr = got.strip_prefix("added ").context(got.clone())?.parse()?;
        wait_until("an added endpoint on n1", Duration::from_secs(60), || {
            maps.endpoint(net.vni, ip).is_some()
        })?;
        add.push(t.elapsed().as_secs_f64() * 1e3);
        let got = peers.ask(&format!("rm {ip}"))?;
        let t = Instant::now();
        if !got.starts_with("removed") {
            bail!("rm: {got}");
        }
        wait_until(
            "a removed endpoint gone from n1",
            Duration::from_secs(60),
            || maps.endpoint(net.vni, ip).is_none(),
        )?;
        rm.push(t.elapsed().as_secs_f64() * 1e3);
    }
    // Goodbye: every peer leaves; n1 drops the whole table.
    let t = Instant::now();
    peers.leave();
    let gone = wait_until("the table gone from n1", Duration::from_secs(120), || {
        remote_count(&maps, net) == 0
    })?;
    let gone = gone.max(t.elapsed()).as_secs_f64();
    Ok(json!({
        "endpoints": size,
        "peers_ready_s": ready.as_secs_f64(),
        "programmed_all_after_ready_s": programmed.as_secs_f64(),
        "n1_rss_mb": rss as f64 / 1024.0,
        "n1_rss_before_mb": rss0 as f64 / 1024.0,
        "n1_idle_cores": (idle_cores * 1000.0).round() / 1000.0,
        "n1_passes_per_s_idle": idle_passes / secs,
        "n1_pass_mean_ms_idle": idle_pass_ms,
        "dns_dig_ms": stats(dns),
        "dns_answered": format!("{answered}/50"),
        "commands": cmds,
        "add_to_programmed_ms": stats(add),
        "remove_to_gone_ms": stats(rm),
        "goodbye_to_table_gone_s": gone,
    }))
}

fn print_report(r: &Value) {
    // (label, JSON pointer into each size's report)
    let rows = [
        (
            "whole table programmed after peers ready, s",
            "/programmed_all_after_ready_s",
        ),
        ("n1 RSS with the table, MB", "/n1_rss_mb"),
        ("n1 idle CPU with the table, cores", "/n1_idle_cores"),
        (
            "n1 programming passes per second, idle",
            "/n1_passes_per_s_idle",
        ),
        (
            "n1 programming pass, mean ms, idle",
            "/n1_pass_mean_ms_idle",
        ),
        ("dig a service name, median ms", "/dns_dig_ms/median_ms"),
        (
            "debug gossip (json), median ms",
            "/commands/debug gossip (json)/ms/median_ms",
        ),
        (
            "debug endpoints (json), median ms",
            "/commands/debug endpoints (json)/ms/median_ms",
        ),
        (
            "endpoint ls, median ms",
            "/commands/endpoint ls/ms/median_ms",
        ),
        (
            "one endpoint added -> programmed, median ms",
            "/add_to_programmed_ms/median_ms",
        ),
        (
            "one endpoint removed -> gone, median ms",
            "/remove_to_gone_ms/median_ms",
        ),
        (
            "peers' goodbye -> table gone, s",
            "/goodbye_to_table_gone_s",
        ),
    ];
    let f = |v: &Value, ptr: &str| v.pointer(ptr).and_then(Value::as_f64).unwrap_or(0.0);
    let (big, small) = (&r["swarm2000"], &r["reference"]);
    println!(
        "\nA real daemon (lab n1) fed {} endpoints by {} simulated peers vs {} (reference), same run\n",
        big["endpoints"], r["peers"], small["endpoints"]
    );
    println!(
        "{:<48} {:>12} {:>12} {:>8}",
        "", "reference", "swarm2000", "ratio"
    );
    for (label, ptr) in rows {
        let (s, b) = (f(small, ptr), f(big, ptr));
        println!(
            "{label:<48} {s:>12.2} {b:>12.2} {:>8.2}",
            common::ratio2(b, s)
        );
    }
    println!(
        "DNS answered: {} (reference {})",
        big["dns_answered"], small["dns_answered"]
    );
}

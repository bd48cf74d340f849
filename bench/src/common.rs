//! What the lab benchmarks share: the `shoal` binary beside them, a lab
//! that is removed however the run ends, and median/max/min figures.

// Each benchmark binary includes this module and uses a part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

// The options every lab benchmark takes (`#[command(flatten)]`); a plain
// comment, or clap would show it as each benchmark's description.
#[derive(clap::Args, Debug)]
pub struct LabArgs {
    /// Alternating rounds; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Also write the report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The shoal binary (default: beside this one).
    #[arg(long)]
    pub shoal: Option<PathBuf>,
    /// Internal: be the connection-rate client against IP:PORT.
    #[arg(long, hide = true)]
    pub conn_client: Option<String>,
    /// Internal: be the bare-TCP connection client against IP:PORT.
    #[arg(long, hide = true)]
    pub tcp_client: Option<String>,
    /// Internal: accept TCP connections on PORT and close each at once.
    #[arg(long, hide = true)]
    pub accept_server: Option<u16>,
    /// Clients at once in the bare-TCP connection measure: 2 shows the
    /// path's own cost and latency; many saturate the servers instead.
    #[arg(long, default_value_t = 2)]
    pub clients: usize,
    /// The saturation measure (mesh benchmark): connections each client
    /// keeps under way at once on an event loop, so the CPU a connection
    /// costs limits the rate, not how long each one waits.
    #[arg(long, default_value_t = 16)]
    pub in_flight: usize,
}

impl LabArgs {
    /// Runs the internal role this process was started for, if any.
    pub fn internal_role(&self) -> Option<anyhow::Result<()>> {
        if let Some(t) = &self.conn_client {
            return Some(conn_client(t, self.clients));
        }
        if let Some(t) = &self.tcp_client {
            return Some(tcp_client(t, self.clients, self.in_flight));
        }
        self.accept_server.map(accept_server)
    }
}

/// Runs a command; its stderr is the error if it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<std::process::Output> {
    let o = cmd.output()?;
    if !o.status.success() {
        anyhow::bail!("{cmd:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(o)
}

/// `shoal ARGS` on a lab node (`lab exec`), its stdout.
pub fn on(shoal: &std::path::Path, lab: &str, node: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut c = Command::new(shoal);
    c.args(["lab", "exec", "--name", lab, node, "--"])
        .arg(shoal)
        .args(args);
    Ok(String::from_utf8_lossy(&run(&mut c)?.stdout).into_owned())
}

/// `service create --name NAME --network appnet ARGS` on a lab's n1.
pub fn create_service(
    shoal: &std::path::Path,
    lab: &str,
    name: &str,
    args: &[&str],
) -> anyhow::Result<String> {
    let mut a = vec!["service", "create", "--name", name, "--network", "appnet"];
    a.extend_from_slice(args);
    on(shoal, lab, "n1", &a)
}

/// `--shoal`, or the `shoal` built beside this benchmark.
pub fn shoal_path(arg: Option<PathBuf>) -> PathBuf {
    arg.unwrap_or_else(|| {
        std::env::current_exe()
            .expect("current_exe")
            .parent()
            .expect("bin dir")
            .join("shoal")
    })
}

/// A lab name owned by this run: removed first (a crashed earlier run's
/// leftovers) and again on drop.
pub struct LabGuard {
    shoal: PathBuf,
    name: &'static str,
}

impl LabGuard {
    pub fn fresh(shoal: &std::path::Path, name: &'static str) -> Self {
        let g = Self {
            shoal: shoal.to_path_buf(),
            name,
        };
        g.down();
        g
    }

    fn down(&self) {
        let _ = Command::new(&self.shoal)
            .args(["lab", "down", "--name", self.name])
            .status();
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        self.down();
    }
}

/// {"median_ms", "max_ms", "min_ms"} of samples in ms, to 0.01 ms.
pub fn stats(mut v: Vec<f64>) -> serde_json::Value {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let r = |x: f64| (x * 100.0).round() / 100.0;
    serde_json::json!({
        "median_ms": r(v[v.len() / 2]),
        "max_ms": r(v[v.len() - 1]),
        "min_ms": r(v[0]),
    })
}

#[path = "chart.rs"]
pub mod chart;

/// Prints `(label, key)` rows of `report` (each a `stats` object) as a
/// median/max/min table, `decimals` after the point.
pub fn print_stats(
    report: &serde_json::Value,
    rows: &[(&str, &str)],
    width: usize,
    decimals: usize,
) {
    for (label, key) in rows {
        let s = &report[*key];
        let f = |k: &str| s[k].as_f64().unwrap_or(0.0);
        println!(
            "{label:<width$} {:>9.decimals$} {:>9.decimals$} {:>9.decimals$}",
            f("median_ms"),
            f("max_ms"),
            f("min_ms")
        );
    }
}

/// Prints the report as one JSON line and writes it (pretty) to `path`,
/// with `chart` beside it as SVG (`results-x.json` -> `results-x.svg`).
pub fn emit(
    report: &serde_json::Value,
    path: Option<&std::path::Path>,
    chart: &chart::Chart,
) -> anyhow::Result<()> {
    println!("\n{}", serde_json::to_string(report)?);
    if let Some(p) = path {
        std::fs::write(p, serde_json::to_string_pretty(report)?)?;
        let svg = chart::path_for(p);
        chart.write(&svg)?;
        println!("chart: {}", svg.display());
    }
    Ok(())
}

/// A chart with a panel per measure `(title, key)` and a bar per row,
/// named by the row's `label_key`.
pub fn rows_chart(
    title: &str,
    rows: &[&serde_json::Value],
    label_key: &str,
    measures: &[(&str, &str)],
) -> chart::Chart {
    let mut c = chart::Chart::new(title);
    for (t, k) in measures {
        let bars = rows
            .iter()
            .map(|r| {
                (
                    r[label_key].as_str().unwrap_or("?").to_string(),
                    r[*k].as_f64().unwrap_or(0.0),
                )
            })
            .collect();
        c = c.panel(*t, bars);
    }
    c
}

/// `rows_chart` of a report's `results` rows, each named by its `label`.
pub fn results_chart(
    title: &str,
    report: &serde_json::Value,
    measures: &[(&str, &str)],
) -> chart::Chart {
    let rows: Vec<&serde_json::Value> =
        report["results"].as_array().into_iter().flatten().collect();
    rows_chart(title, &rows, "label", measures)
}

/// One bar per `(label, key)` row of `report`: the `stats` object's
/// median (or p50).
pub fn median_bars(report: &serde_json::Value, rows: &[(&str, &str)]) -> Vec<(String, f64)> {
    rows.iter()
        .map(|(label, key)| {
            let s = &report[*key];
            let v = s["median_ms"]
                .as_f64()
                .or(s["p50_ms"].as_f64())
                .unwrap_or(0.0);
            (label.trim().to_string(), v)
        })
        .collect()
}

/// A chart of `stats` objects' medians (the rows `print_stats` prints).
pub fn medians_chart(
    title: &str,
    report: &serde_json::Value,
    rows: &[(&str, &str)],
) -> chart::Chart {
    chart::Chart::new(title).panel("median, ms (lower is better)", median_bars(report, rows))
}

/// The tasks of `svc` as Docker's task objects (on n1): `service ps
/// --format json` rows name them, `shoal inspect` gives the objects (the
/// rows carry no addresses, as Docker's).
pub fn tasks_of(
    shoal: &std::path::Path,
    lab: &str,
    svc: &str,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let out = on(
        shoal,
        lab,
        "n1",
        &["service", "ps", svc, "--no-trunc", "--format", "json"],
    )?;
    let ids: Vec<String> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|r| r["ID"].as_str().map(String::from))
        .collect();
    if ids.is_empty() {
        return Ok(vec![]);
    }
    let mut args = vec!["inspect"];
    args.extend(ids.iter().map(String::as_str));
    Ok(serde_json::from_str(&on(shoal, lab, "n1", &args)?)?)
}

/// A task's address on its first network.
pub fn task_ip(t: &serde_json::Value) -> String {
    t["NetworksAttachments"][0]["Addresses"][0]
        .as_str()
        .unwrap_or_default()
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A service's first VIP.
pub fn service_vip(shoal: &std::path::Path, lab: &str, svc: &str) -> anyhow::Result<String> {
    let insp: serde_json::Value =
        serde_json::from_str(&on(shoal, lab, "n1", &["service", "inspect", svc])?)?;
    insp[0]["Endpoint"]["VirtualIPs"][0]["Addr"]
        .as_str()
        .and_then(|s| s.split('/').next())
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("service {svc} has no VIP"))
}

/// The network namespace of a task on `node` of `lab`.
pub fn task_netns(lab: &str, node: &str, t: &serde_json::Value) -> String {
    format!(
        "{lab}-{node}-t{}",
        &t["ID"].as_str().unwrap_or_default()[..12]
    )
}

/// `sh -c CMD`, its stdout.
pub fn sh(cmd: &str) -> anyhow::Result<String> {
    Ok(String::from_utf8_lossy(&run(Command::new("sh").args(["-c", cmd]))?.stdout).into_owned())
}

/// Single-stream TCP throughput from `ns` to IP:PORT (iperf3, 3 s), Gbit/s.
pub fn iperf(ns: &str, ip: &str, port: u16) -> anyhow::Result<f64> {
    let v: serde_json::Value = serde_json::from_str(&sh(&format!(
        "ip netns exec {ns} iperf3 -c {ip} -p {port} -t 3 -J"
    ))?)?;
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| anyhow::anyhow!("iperf3 report: {v}"))?;
    Ok(bps / 1e9)
}

/// Small UDP datagrams (18-byte payload: 60-byte frames) as fast as one
/// iperf3 client sends them for 3 s from `ns`; thousands of packets per
/// second that reached the server.
pub fn udp_kpps(ns: &str, ip: &str, port: u16) -> anyhow::Result<f64> {
    let v: serde_json::Value = serde_json::from_str(&sh(&format!(
        "ip netns exec {ns} iperf3 -c {ip} -p {port} -u -b 0 -l 18 -t 3 -J"
    ))?)?;
    let s = &v["end"]["sum_received"];
    let s = if s["packets"].is_u64() {
        s
    } else {
        &v["end"]["sum"]
    };
    let got = s["packets"].as_f64().unwrap_or(0.0) - s["lost_packets"].as_f64().unwrap_or(0.0);
    let secs = s["seconds"]
        .as_f64()
        .filter(|s| *s > 0.0)
        .ok_or_else(|| anyhow::anyhow!("iperf3 UDP report: {v}"))?;
    Ok(got / secs / 1e3)
}

/// TCP request/response latency from `ns` to a sockperf server (3 s), us.
pub fn latency_us(ns: &str, ip: &str, port: u16) -> anyhow::Result<f64> {
    let out = sh(&format!(
        "timeout 30 ip netns exec {ns} sockperf pp --tcp -i {ip} -p {port} -t 3 2>&1"
    ))?;
    sockperf_avg_us(&out)
}

/// `a / b` to two decimals (0 when `b` is 0): a ratio in a report.
pub fn ratio2(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        (a / b * 100.0).round() / 100.0
    } else {
        0.0
    }
}

/// The median of `f` over `v` (the upper one of an even count).
pub fn median_by<T>(v: &[T], f: impl Fn(&T) -> f64) -> f64 {
    let mut x: Vec<f64> = v.iter().map(f).collect();
    x.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    x[x.len() / 2]
}

/// sockperf's average latency (half a round trip, us) in its output.
pub fn sockperf_avg_us(out: &str) -> anyhow::Result<f64> {
    let at = out
        .find("avg-latency=")
        .ok_or_else(|| anyhow::anyhow!("sockperf output: {out}"))?
        + "avg-latency=".len();
    let num: String = out[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    Ok(num.parse()?)
}

/// New connections per second from inside `ns` to an HTTP server at
/// IP:PORT: the calling benchmark binary run as its own client
/// (`--conn-client`, see `conn_client`), so the client is not the
/// bottleneck (a Python loop was, under emulation).
pub fn conn_rate(ns: &str, ip: &str, port: u16) -> anyhow::Result<f64> {
    let exe = std::env::current_exe()?;
    let out = run(Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(exe)
        .args(["--conn-client", &format!("{ip}:{port}")]))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// New bare TCP connections per second from inside `ns` to IP:PORT, where
/// this binary runs as `--accept-server`: the handshake, the server's
/// close, the client's close, and nothing else (no request to parse, no
/// answer to build), so the path's own cost per connection shows.
pub fn tcp_conn_rate(
    ns: &str,
    ip: &str,
    port: u16,
    clients: usize,
    in_flight: usize,
) -> anyhow::Result<f64> {
    let exe = std::env::current_exe()?;
    let out = run(Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(exe)
        .args(["--tcp-client", &format!("{ip}:{port}")])
        .args(["--clients", &clients.to_string()])
        .args(["--in-flight", &in_flight.to_string()]))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// The bare client: connect, read until the server closes, close. With
/// `in_flight` > 0 each of the `clients` threads keeps that many
/// connections under way at once on its own event loop, so the rate is
/// what the path costs in CPU rather than how long one connection waits
/// for the next wake-up; 0 is the blocking loop.
fn tcp_client(target: &str, clients: usize, in_flight: usize) -> anyhow::Result<()> {
    if in_flight == 0 {
        return conn_loop(target, b"", clients);
    }
    let addr: std::net::SocketAddr = target.parse()?;
    count_connections(clients, move |until| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        rt.block_on(async move {
            let conns: Vec<_> = (0..in_flight)
                .map(|_| {
                    tokio::spawn(async move {
                        use tokio::io::AsyncReadExt;
                        let mut n = 0u64;
                        let mut buf = [0u8; 64];
                        while std::time::Instant::now() < until {
                            let mut s = tokio::net::TcpStream::connect(addr).await?;
                            while s.read(&mut buf).await? > 0 {}
                            n += 1;
                        }
                        anyhow::Ok(n)
                    })
                })
                .collect();
            let mut total = 0;
            for c in conns {
                total += c.await??;
            }
            Ok(total)
        })
    })
}

/// Accepts on 0.0.0.0:PORT with 2 threads and closes every connection at
/// once (the server side keeps the TIME_WAIT, so clients never run out
/// of ports). Runs until killed.
fn accept_server(port: u16) -> anyhow::Result<()> {
    let l = std::net::TcpListener::bind(("0.0.0.0", port))?;
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let l = l.try_clone()?;
            Ok(std::thread::spawn(move || loop {
                if let Ok((s, _)) = l.accept() {
                    drop(s);
                }
            }))
        })
        .collect::<anyhow::Result<_>>()?;
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// The HTTP client: connect, an HTTP/1.0 request, read to the end, close.
pub fn conn_client(target: &str, clients: usize) -> anyhow::Result<()> {
    conn_loop(target, b"GET / HTTP/1.0\r\n\r\n", clients)
}

/// `clients` threads for 2 s, each a loop of connect, send `request` (if
/// any), read until the server closes, close. Prints connections per
/// second.
fn conn_loop(target: &str, request: &'static [u8], clients: usize) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let addr: std::net::SocketAddr = target.parse()?;
    count_connections(clients, move |until| {
        let mut n = 0u64;
        let mut buf = [0u8; 4096];
        while std::time::Instant::now() < until {
            let mut s = std::net::TcpStream::connect(addr)?;
            if !request.is_empty() {
                s.write_all(request)?;
            }
            while s.read(&mut buf)? > 0 {}
            n += 1;
        }
        Ok(n)
    })
}

/// Runs `client` on `clients` threads for 2 s (each returns how many
/// connections it completed before the deadline it is given) and prints
/// connections per second.
fn count_connections(
    clients: usize,
    client: impl Fn(std::time::Instant) -> anyhow::Result<u64> + Send + Copy + 'static,
) -> anyhow::Result<()> {
    let t0 = std::time::Instant::now();
    let until = t0 + std::time::Duration::from_secs(2);
    let threads: Vec<_> = (0..clients)
        .map(|_| std::thread::spawn(move || client(until)))
        .collect();
    let mut total = 0;
    for t in threads {
        total += t
            .join()
            .map_err(|_| anyhow::anyhow!("client thread panicked"))??;
    }
    println!("{}", total as f64 / t0.elapsed().as_secs_f64());
    Ok(())
}

/// What every loaded `shoal_*` eBPF program has run so far (`bpftool prog
/// show`, counted while `kernel.bpf_stats_enabled` is on): runs and ns.
fn shoal_prog_runs() -> anyhow::Result<(u64, u64)> {
    let progs: serde_json::Value = serde_json::from_str(&sh("bpftool prog show -j")?)?;
    let mut total = (0, 0);
    for p in progs.as_array().into_iter().flatten() {
        if p["name"].as_str().is_some_and(|n| n.starts_with("shoal_")) {
            total.0 += p["run_cnt"].as_u64().unwrap_or(0);
            total.1 += p["run_time_ns"].as_u64().unwrap_or(0);
        }
    }
    Ok(total)
}

/// Runs `f` with the kernel's eBPF run-time statistics on (restored after)
/// and returns its result with the program runs and nanoseconds every
/// node's Shoal programs spent meanwhile. The statistics cost two clock
/// reads per run, so the measured rates come from runs without them.
pub fn with_ebpf_time<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<(T, u64, u64)> {
    const KNOB: &str = "/proc/sys/kernel/bpf_stats_enabled";
    let old = std::fs::read_to_string(KNOB)?;
    std::fs::write(KNOB, "1")?;
    let measured = (|| {
        let before = shoal_prog_runs()?;
        let r = f()?;
        let after = shoal_prog_runs()?;
        Ok((r, after.0 - before.0, after.1 - before.1))
    })();
    std::fs::write(KNOB, old.trim())?;
    measured
}

/// Runs this benchmark binary inside the Debian-kernel VM as `ARGS --json
/// /tmp/report.json` (after `before`, a shell command) and returns the
/// report it wrote; prints the console lines `progress` picks (its
/// rounds). Both binaries are shared with the guest wherever they are.
pub fn report_from_vm(
    shoal: &std::path::Path,
    before: &str,
    args: &str,
    progress: impl Fn(&str) -> bool,
) -> anyhow::Result<serde_json::Value> {
    use anyhow::Context;
    let vm = shoal_tests::vm::Vm::available().map_err(anyhow::Error::msg)?;
    let exe = std::env::current_exe()?;
    let script = format!(
        "{before}{} --shoal {} {args} --json /tmp/report.json >&2 && echo SHOAL-BENCH-JSON=$(tr -d '\\n' < /tmp/report.json)",
        exe.display(),
        shoal.display(),
    );
    let r = vm
        .run(
            &script,
            &[exe.clone(), shoal.to_path_buf()],
            std::time::Duration::from_secs(1800),
        )
        .map_err(anyhow::Error::msg)?;
    eprintln!(
        "{}",
        r.console
            .lines()
            .filter(|l| progress(l))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let line = r
        .console
        .lines()
        .find_map(|l| l.trim().strip_prefix("SHOAL-BENCH-JSON="))
        .with_context(|| format!("no report from the VM:\n{}", r.console))?;
    Ok(serde_json::from_str(line)?)
}

/// A Docker-style kernel overlay on lab `lab`'s underlay bridge: hosts
/// `LAB-d1`/`-d2` (198.18.0.101/.102), each a bridge with a kernel vxlan
/// (VNI 5001, `vxlan_mtu`) and a container `LAB-d1c`/`-d2c` (10.9.0.2/.3,
/// at `container_mtu` if given), with static FDB and neighbour entries as
/// libnetwork programs them. The overlay and encrypted benchmarks'
/// reference. Its bridge ports have GRO on, as the lab's node ports do
/// (`shoal lab up`), so every path crosses the same kind of underlay hop.
pub fn kernel_overlay_reference(
    lab: &str,
    vxlan_mtu: u32,
    container_mtu: Option<u32>,
) -> anyhow::Result<()> {
    let (ul, br) = (format!("{lab}-ul"), format!("{lab}-br"));
    let cmtu = container_mtu
        .map(|m| format!("mtu {m} "))
        .unwrap_or_default();
    for (i, host) in ["d1", "d2"].iter().enumerate() {
        let h = format!("{lab}-{host}");
        let c = format!("{lab}-{host}c");
        let ip = format!("198.18.0.{}", 101 + i);
        let cip = format!("10.9.0.{}", 2 + i);
        let mac = format!("02:42:0a:09:00:0{}", 2 + i);
        sh(&format!(
            "set -e
             ip netns add {h}; ip netns add {c}
             ip -n {h} link set lo up; ip -n {c} link set lo up
             ip -n {ul} link add {lab}-{host}p type veth peer name eth0 netns {h}
             ip -n {ul} link set {lab}-{host}p master {br} up
             ip netns exec {ul} ethtool -K {lab}-{host}p gro on
             ip -n {h} link set eth0 up; ip -n {h} addr add {ip}/24 dev eth0
             ip -n {h} link add br0 type bridge; ip -n {h} link set br0 up
             ip -n {h} link add vxlan0 type vxlan id 5001 dstport 4789 local {ip} dev eth0 nolearning
             ip -n {h} link set vxlan0 mtu {vxlan_mtu} master br0 up
             ip -n {h} link add veth0 mtu {vxlan_mtu} type veth peer name eth0 netns {c}
             ip -n {h} link set veth0 master br0 up
             ip -n {c} link set eth0 {cmtu}address {mac} up; ip -n {c} addr add {cip}/24 dev eth0"
        ))?;
    }
    for (h, peer, peer_mac, peer_ip) in [
        ("d1", "198.18.0.102", "02:42:0a:09:00:03", "10.9.0.3"),
        ("d2", "198.18.0.101", "02:42:0a:09:00:02", "10.9.0.2"),
    ] {
        sh(&format!(
            "bridge -n {lab}-{h} fdb append {peer_mac} dev vxlan0 dst {peer}
             ip -n {lab}-{h}c neigh add {peer_ip} lladdr {peer_mac} dev eth0 nud permanent"
        ))?;
    }
    Ok(())
}

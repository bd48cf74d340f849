//! Shoal across real (virtual) hosts: the three VMs of
//! `scripts/vm-cluster.sh` (each its own Debian kernel and a virtio-net NIC
//! on one switch, Shoal from its .deb under systemd, a swarm formed), and
//! between vm1 and vm2, in one run, rounds alternating between paths:
//!
//!   (a) the VMs' own addresses (no overlay),
//!   (b) a Docker-style kernel overlay built between the same VMs as
//!       libnetwork builds it: bridge + kernel vxlan device + static FDB
//!       and neighbour entries, a namespace on each side at the overlay MTU,
//!   (c) Shoal with tc hooks (`--accel tc`),
//!   (d) Shoal with decap in native XDP on virtio-net (`--accel auto`,
//!       the default: `ip link` shows `xdp`, which is checked),
//!
//! (c) and (d) between the tasks of a global service; switching between
//! them is `SHOAL_OPTS` and `systemctl restart shoal` on both VMs, as an
//! operator does it (the tasks stay). Measures: TCP throughput (iperf3, 1
//! and 4 streams) and TCP request/response latency (sockperf ping-pong).
//! Under emulation (TCG) only the ratios count. Prints every round, a
//! table and JSON.

use std::time::Duration;

mod common;

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde::Serialize;
use serde_json::{json, Value};
use shoal_tests::hosts::{text, vm_ip, VmCluster};

#[derive(Parser, Debug)]
#[command(about = "Shoal across VMs vs the VMs' own addresses vs a kernel VXLAN overlay")]
struct Args {
    /// Rounds, the report's path and the shoal binary to package.
    #[command(flatten)]
    lab: common::LabArgs,
    /// Seconds per throughput run.
    #[arg(long, default_value_t = 5)]
    duration: u32,
    /// Seconds per latency run.
    #[arg(long, default_value_t = 3)]
    latency_duration: u32,
}

/// The kernel overlay's VXLAN port: not Shoal's 4789, so Shoal's
/// underlay programs pass it on untouched.
const KX_PORT: u16 = 4790;

/// One path from vm1 (client) to vm2 (server); `None` is the VM's own
/// namespace.
struct Path {
    key: &'static str,
    label: &'static str,
    client_ns: Option<String>,
    server_ns: Option<String>,
    server_ip: String,
}

#[derive(Clone, Debug, Default, Serialize)]
struct Metrics {
    gbps_1: f64,
    gbps_4: f64,
    /// sockperf's average latency (half a round trip), microseconds.
    rr_us: f64,
}

/// The cluster, with commands that fail as errors rather than panics.
struct Vms(VmCluster);

impl Vms {
    fn sh(&self, vm: &str, cmd: &str) -> Result<String> {
        let o = self.0.exec(vm, &["sh", "-c", cmd]);
        if !o.status.success() {
            bail!("{vm}: {cmd}: {}", text(&o));
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }
}

fn in_ns(ns: &Option<String>, cmd: &str) -> String {
    match ns {
        Some(n) => format!("ip netns exec {n} {cmd}"),
        None => cmd.to_string(),
    }
}

/// `cmd` on vm1 in the path's client namespace, given `secs` and some.
fn client(v: &Vms, p: &Path, secs: u32, cmd: &str) -> Result<String> {
    v.sh(
        "vm1",
        &format!("timeout {} {}", secs + 40, in_ns(&p.client_ns, cmd)),
    )
}

fn iperf3(v: &Vms, p: &Path, secs: u32, streams: u32) -> Result<f64> {
    v.sh("vm2", &in_ns(&p.server_ns, "iperf3 -s -1 -D -p 5301"))?;
    std::thread::sleep(Duration::from_millis(500));
    let out = client(
        v,
        p,
        secs,
        &format!(
            "iperf3 -c {} -p 5301 -t {secs} -P {streams} -J",
            p.server_ip
        ),
    )?;
    let j: Value = serde_json::from_str(&out).context("iperf3 -J")?;
    let bps = j["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3 report")?;
    Ok((bps / 1e6).round() / 1000.0)
}

fn sockperf(v: &Vms, p: &Path, secs: u32) -> Result<f64> {
    v.sh(
        "vm2",
        &format!(
            "pkill -x sockperf; setsid {} </dev/null >/dev/null 2>&1 &",
            in_ns(
                &p.server_ns,
                &format!("sockperf sr --tcp -i {} -p 11111", p.server_ip)
            )
        ),
    )?;
    std::thread::sleep(Duration::from_secs(1));
    let out = client(
        v,
        p,
        secs,
        &format!(
            "sockperf pp --tcp -i {} -p 11111 -t {secs} 2>&1",
            p.server_ip
        ),
    );
    let _ = v.sh("vm2", "pkill -x sockperf; true");
    common::sockperf_avg_us(&out?)
}

fn measure(v: &Vms, p: &Path, a: &Args) -> Result<Metrics> {
    Ok(Metrics {
        gbps_1: iperf3(v, p, a.duration, 1)?,
        gbps_4: iperf3(v, p, a.duration, 4)?,
        rr_us: sockperf(v, p, a.latency_duration)?,
    })
}

/// The tasks of the global service `perf`: (namespace, node).
fn tasks(v: &Vms) -> Result<Vec<(String, String)>> {
    let out = v.sh("vm1", "shoal service ps perf --no-trunc --format json")?;
    Ok(out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|t| {
            t["CurrentState"]
                .as_str()
                .is_some_and(|s| s.starts_with("Running"))
        })
        .filter_map(|t| {
            let id = t["ID"].as_str()?;
            Some((
                format!("shoal-t{}", id.get(..12)?),
                t["Node"].as_str()?.to_string(),
            ))
        })
        .collect())
}

/// Shoal's network and a task on each VM; the kernel overlay beside it.
fn setup(v: &Vms) -> Result<(String, String, String)> {
    v.sh("vm1", "shoal network create benchnet")?;
    v.sh(
        "vm1",
        "shoal service create --name perf --mode global --network benchnet -- /usr/bin/shoal whoami --port 80",
    )?;
    let mut found = (None, None);
    for _ in 0..60 {
        let t = tasks(v)?;
        let on = |vm: &str| t.iter().find(|(_, n)| n == vm).map(|(ns, _)| ns.clone());
        found = (on("vm1"), on("vm2"));
        if found.0.is_some() && found.1.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let (Some(ns1), Some(ns2)) = found else {
        bail!("no running task of perf on vm1 and vm2 after 2 minutes");
    };
    let task2 = v
        .sh("vm2", &format!("ip -n {ns2} -4 -o addr show eth0"))?
        .split_whitespace()
        .nth(3)
        .and_then(|a| a.split('/').next())
        .context("vm2's task address")?
        .to_string();

    // The kernel overlay: 198.19.250.1/.2, MTU as Shoal's (1500 - 50).
    // The image's networkd configures every Ethernet link it sees (the
    // package keeps it off Shoal's): kept off these too, or it takes the
    // veth out of its bridge.
    for vm in ["vm1", "vm2"] {
        v.sh(
            vm,
            "mkdir -p /run/systemd/network && printf '[Match]\\nName=kx*\\n\\n[Link]\\nUnmanaged=yes\\n' > /run/systemd/network/04-bench-kx.network && networkctl reload",
        )?;
    }
    for (vm, n, peer) in [("vm1", 1, "vm2"), ("vm2", 2, "vm1")] {
        let (me, other) = (vm_ip(vm), vm_ip(peer));
        let (mac, peer_mac) = (
            format!("02:42:c6:13:fa:0{n}"),
            format!("02:42:c6:13:fa:0{}", 3 - n),
        );
        v.sh(
            vm,
            &format!(
                "set -e
                 ip netns add kx; ip -n kx link set lo up
                 ip link add kxbr type bridge; ip link set kxbr up
                 ip link add kxvx type vxlan id 5001 dstport {KX_PORT} local {me} dev eth0 nolearning
                 ip link set kxvx mtu 1450 master kxbr up
                 ip link add kxv0 mtu 1450 type veth peer name eth0 netns kx
                 ip link set kxv0 master kxbr up
                 ip -n kx link set eth0 mtu 1450 address {mac} up
                 ip -n kx addr add 198.19.250.{n}/24 dev eth0
                 bridge fdb append {peer_mac} dev kxvx dst {other}
                 ip -n kx neigh add 198.19.250.{} lladdr {peer_mac} dev eth0 nud permanent",
                3 - n
            ),
        )?;
    }
    Ok((ns1, ns2, task2))
}

/// Restarts Shoal on vm1 and vm2 with `--accel ACCEL`, as an operator
/// would, and waits until the underlay shows the hook it asks for
/// (native `xdp` for auto on virtio-net, none for tc) and the tasks
/// reach each other again.
fn set_accel(v: &Vms, accel: &str, ns1: &str, task2: &str) -> Result<()> {
    for vm in ["vm1", "vm2"] {
        v.sh(
            vm,
            &format!(
                "sed -i 's|^SHOAL_OPTS=.*|SHOAL_OPTS=\"--advertise-addr {} --accel {accel}\"|' /etc/default/shoal && systemctl restart shoal",
                vm_ip(vm)
            ),
        )?;
    }
    let want_xdp = accel != "tc";
    for vm in ["vm1", "vm2"] {
        let mut link = String::new();
        for _ in 0..60 {
            link = v.sh(vm, "ip -d link show eth0")?;
            let native = link.contains(" xdp ") && link.contains("prog/xdp");
            if native == want_xdp && !link.contains("xdpgeneric") {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        let native = link.contains(" xdp ") && link.contains("prog/xdp");
        if native != want_xdp || link.contains("xdpgeneric") {
            bail!("{vm} with --accel {accel}: eth0 is {link}");
        }
    }
    v.sh(
        "vm1",
        &format!(
            "for i in $(seq 60); do ip netns exec {ns1} ping -c 1 -W 1 {task2} >/dev/null && exit 0; done; exit 1"
        ),
    )
    .with_context(|| format!("the tasks do not reach each other after --accel {accel}"))?;
    Ok(())
}

fn ratio(m: &Metrics, base: &Metrics) -> Metrics {
    use common::ratio2 as r;
    Metrics {
        gbps_1: r(m.gbps_1, base.gbps_1),
        gbps_4: r(m.gbps_4, base.gbps_4),
        rr_us: r(m.rr_us, base.rr_us),
    }
}

fn median(v: &[Metrics]) -> Metrics {
    use common::median_by as med;
    Metrics {
        gbps_1: med(v, |m| m.gbps_1),
        gbps_4: med(v, |m| m.gbps_4),
        rr_us: med(v, |m| m.rr_us),
    }
}

const KEYS: [(&str, &str); 4] = [
    ("underlay", "(a) the VMs' own addresses"),
    ("kernel_overlay", "(b) Docker-style kernel overlay"),
    ("shoal_tc", "(c) Shoal tc"),
    ("shoal_xdp", "(d) Shoal native XDP"),
];

fn main() -> Result<()> {
    let a = Args::parse();
    // The cluster packages this binary (VmCluster reads SHOAL_BIN).
    std::env::set_var("SHOAL_BIN", common::shoal_path(a.lab.shoal.clone()));
    eprintln!("booting three VMs (under emulation this takes minutes)");
    let v = Vms(VmCluster::up());
    let kernel = v.sh("vm1", "uname -r")?.trim().to_string();
    let driver = v.sh(
        "vm1",
        "basename $(readlink /sys/class/net/eth0/device/driver)",
    )?;
    let (ns1, ns2, task2) = setup(&v)?;
    let path = |key: &'static str, c: Option<String>, s: Option<String>, ip: &str| Path {
        key,
        label: KEYS.iter().find(|(k, _)| *k == key).map_or(key, |(_, l)| l),
        client_ns: c,
        server_ns: s,
        server_ip: ip.to_string(),
    };
    let fixed = [
        path("underlay", None, None, &vm_ip("vm2")),
        path(
            "kernel_overlay",
            Some("kx".into()),
            Some("kx".into()),
            "198.19.250.2",
        ),
    ];
    let shoal = |key| path(key, Some(ns1.clone()), Some(ns2.clone()), &task2);
    for p in &fixed {
        v.sh(
            "vm1",
            &in_ns(&p.client_ns, &format!("ping -c 2 -W 2 {}", p.server_ip)),
        )
        .with_context(|| format!("{} does not work", p.label))?;
    }

    // The cluster comes up with the default (native XDP on virtio-net).
    let mut accel = "auto";
    set_accel(&v, accel, &ns1, &task2)?;
    let mut per: std::collections::BTreeMap<&str, Vec<Metrics>> = Default::default();
    let mut rounds = vec![];
    for r in 1..=a.lab.rounds {
        let mut this: Vec<(&str, Metrics)> = vec![];
        let current = shoal(if accel == "tc" {
            "shoal_tc"
        } else {
            "shoal_xdp"
        });
        for p in fixed.iter().chain([&current]) {
            let m = measure(&v, p, &a)?;
            eprintln!("round {r}: {:<34} {m:?}", p.label);
            this.push((p.key, m));
        }
        accel = if accel == "tc" { "auto" } else { "tc" };
        set_accel(&v, accel, &ns1, &task2)?;
        let other = shoal(if accel == "tc" {
            "shoal_tc"
        } else {
            "shoal_xdp"
        });
        let m = measure(&v, &other, &a)?;
        eprintln!("round {r}: {:<34} {m:?}", other.label);
        this.push((other.key, m));

        let get = |k: &str| this.iter().find(|(x, _)| *x == k).map(|(_, m)| m.clone());
        let kov = get("kernel_overlay").unwrap_or_default();
        let mut round = json!({"round": r});
        for (k, m) in &this {
            round[*k] = json!(m);
            per.entry(k).or_default().push(m.clone());
        }
        for k in ["shoal_tc", "shoal_xdp"] {
            if let Some(m) = get(k) {
                round[format!("{k}_vs_kernel_overlay")] = json!(ratio(&m, &kov));
            }
        }
        rounds.push(round);
    }

    let med: Vec<(&str, &str, Metrics)> = KEYS
        .iter()
        .map(|(k, l)| (*k, *l, median(per.get(k).map_or(&[][..], |v| v))))
        .collect();
    let base = |k: &str| {
        med.iter()
            .find(|(x, _, _)| *x == k)
            .map(|(_, _, m)| m.clone())
    };
    let (ul, kov) = (
        base("underlay").unwrap_or_default(),
        base("kernel_overlay").unwrap_or_default(),
    );
    println!(
        "\nvm1 -> vm2, {} rounds, medians (Debian {kernel}, {} NIC, TCG: only ratios count)\n",
        a.lab.rounds,
        driver.trim()
    );
    println!(
        "{:<34} {:>9} {:>9} {:>8}   {:>18}   {:>18}",
        "path", "1 stream", "4 streams", "RR us", "vs (a): 1/4/RR", "vs (b): 1/4/RR"
    );
    let mut rows = vec![];
    for (k, l, m) in &med {
        let (ru, rk) = (ratio(m, &ul), ratio(m, &kov));
        println!(
            "{l:<34} {:>9.3} {:>9.3} {:>8.1}   {:>5.2} {:>5.2} {:>5.2}   {:>5.2} {:>5.2} {:>5.2}",
            m.gbps_1,
            m.gbps_4,
            m.rr_us,
            ru.gbps_1,
            ru.gbps_4,
            ru.rr_us,
            rk.gbps_1,
            rk.gbps_4,
            rk.rr_us
        );
        rows.push(
            json!({"path": k, "label": l, "gbps_1": m.gbps_1, "gbps_4": m.gbps_4,
            "rr_us": m.rr_us, "vs_underlay": ru, "vs_kernel_overlay": rk}),
        );
    }
    println!("\nShoal / kernel overlay, each round (1 stream, 4 streams, RR):");
    for r in &rounds {
        let f = |k: &str| {
            let x = &r[format!("{k}_vs_kernel_overlay")];
            format!(
                "{:.2} {:.2} {:.2}",
                x["gbps_1"].as_f64().unwrap_or(0.0),
                x["gbps_4"].as_f64().unwrap_or(0.0),
                x["rr_us"].as_f64().unwrap_or(0.0)
            )
        };
        println!(
            "  round {}: tc {}   native XDP {}",
            r["round"],
            f("shoal_tc"),
            f("shoal_xdp")
        );
    }
    let report = json!({
        "benchmark": "hosts-vm",
        "hosts": "3 qemu VMs (TCG, 1 vCPU each) on one bridge, vm1 -> vm2",
        "kernel": kernel,
        "nic_driver": driver.trim(),
        "rounds_run": a.lab.rounds,
        "results": rows,
        "rounds": rounds,
    });
    let chart = common::results_chart(
        "Across VMs: Shoal against the VMs' own addresses and a kernel overlay",
        &report,
        &[
            ("1 stream, Gbit/s", "gbps_1"),
            ("4 streams, Gbit/s", "gbps_4"),
            ("request/response, us", "rr_us"),
        ],
    );
    common::emit(&report, a.lab.json.as_deref(), &chart)
}

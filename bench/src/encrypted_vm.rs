//! Encrypted overlay networks against a Docker-style encrypted overlay
//! made of kernel parts, inside Debian's kernel under qemu (this machine's
//! has no ESP): single-stream TCP throughput (iperf3) and TCP
//! request/response latency (sockperf ping-pong) between a task on n1 and a
//! task on n2 of one 2-node lab, over
//!
//!   (a) a plain Shoal network,
//!   (b) an encrypted Shoal network (`network create --opt encrypted`),
//!   (c) the reference: two hosts on the same underlay bridge, each with a
//!       kernel vxlan device in a bridge and ESP in transport mode on UDP
//!       4789 (`rfc4106(gcm(aes))`, xfrm states and policies), as Docker's
//!       encrypted overlay builds it, its containers at the same MTU,
//!
//! rounds alternating between paths. Emulated CPUs: only ratios count, and
//! the VM's speed drifts, so (b) is compared with (c) per round (paired,
//! one right after the other) as well as by medians. Target: (b) >= 1.0x
//! (c) in throughput. Every round is printed and kept in the JSON.

use std::path::Path;
use std::process::Command;

mod common;

use anyhow::{Context, Result};
use clap::Parser;
use common::{iperf, latency_us, on, run, sh, stats, task_netns, tasks_of, LabGuard};
use serde_json::{json, Value};

#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    lab: common::LabArgs,
    /// Measure here (inside the VM) instead of booting it.
    #[arg(long, hide = true)]
    inside: bool,
    /// Also profile the whole guest (perf, 999 Hz) during one more
    /// single-stream run of (b) and of (c): the top symbols of each.
    #[arg(long)]
    profile: bool,
    /// With --profile: also the call chains of the busiest symbols.
    #[arg(long)]
    callers: bool,
}

/// The guest's profile while `ns` sends to `ip` (iperf3, 3 s): the run's
/// throughput and retransmits, then samples by CPU, by command and the top
/// symbols, so two paths can be compared per byte. The sender's work runs
/// as iperf3, the receiver's mostly in softirq context (ksoftirqd,
/// swapper).
fn profile(key: &str, ns: &str, ip: &str, callers: bool) -> Result<Vec<String>> {
    let data = format!("/tmp/perf-{key}.data");
    let mut rec = Command::new("perf")
        .args([
            "record", "-a", "-g", "-F", "999", "-o", &data, "--", "sleep", "4",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let v: Value = serde_json::from_str(&sh(&format!(
        "ip netns exec {ns} iperf3 -c {ip} -p 5201 -t 3 -J"
    ))?)?;
    rec.wait()?;
    let mut out = vec![format!(
        "run: {:.3} Gbit/s, {} retransmits",
        v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap_or(0.0)
            / 1e9,
        v["end"]["sum_sent"]["retransmits"]
    )];
    for (sort, limit, lines) in [("cpu", "0", 4), ("comm", "1", 12), ("sym", "0.7", 45)] {
        let r = sh(&format!(
            "perf report -i {data} --stdio --no-children -g none --sort {sort} --percent-limit {limit} 2>/dev/null | grep -v '^#' | grep -v '^$' | head -{lines}"
        ))?;
        out.extend(r.lines().map(|l| format!("{sort}: {}", l.trim())));
    }
    if callers {
        let r = sh(&format!(
            "perf report -i {data} --stdio --no-children --sort comm,sym -g caller,0.5,callee,function,percent --percent-limit 0.25 2>/dev/null | grep -v '^#' | grep -v '^$' | awk '/^ *[0-9.]+%/ {{p = ($2 ~ /kworker|ksoftirqd/)}} p' | head -600"
        ))?;
        out.extend(r.lines().map(|l| format!("callers: {l}")));
    }
    Ok(out.iter().map(|l| format!("PROFILE {key}: {l}")).collect())
}

const LAB: &str = "benc";
/// The MTU of every measured path's endpoints: Shoal's for an encrypted
/// network on a 1500-byte underlay (1500 - 50 VXLAN - 40 ESP).
const MTU: u32 = 1410;

/// A task's address on the network named `net`.
fn addr_on(t: &Value, net: &str) -> Option<String> {
    t["NetworksAttachments"]
        .as_array()?
        .iter()
        .find(|a| a["Network"]["Spec"]["Name"] == net)?["Addresses"][0]
        .as_str()?
        .split('/')
        .next()
        .map(str::to_string)
}

/// The reference on the lab's underlay bridge: hosts `benc-d1`/`-d2`
/// (198.18.0.101/.102), containers `benc-d1c`/`-d2c` (10.9.0.2/.3).
fn reference() -> Result<()> {
    let mut raw = [0u8; 72];
    {
        use std::io::Read;
        std::fs::File::open("/dev/urandom")?.read_exact(&mut raw)?;
    }
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let (k12, k21) = (hex(&raw[..36]), hex(&raw[36..]));
    common::kernel_overlay_reference(LAB, MTU, Some(MTU))?;
    reference_ipsec(&k12, &k21)
}

/// The reference's IPsec: ESP in transport mode on the VXLAN port, one SA
/// per direction (keys 1 -> 2, 2 -> 1), as Docker's.
fn reference_ipsec(k12: &str, k21: &str) -> Result<()> {
    let mode = "transport";
    let a = "198.18.0.101";
    let b = "198.18.0.102";
    for (h, me, peer) in [("d1", a, b), ("d2", b, a)] {
        let sa = |src: &str, dst: &str, spi: u32, key: &str| {
            format!(
                "xfrm state add src {src} dst {dst} proto esp spi {spi:#x} reqid 1 mode {mode} aead rfc4106(gcm(aes)) 0x{key} 128"
            )
        };
        let pol = |src: &str, dst: &str, dir: &str| {
            format!(
                "xfrm policy add src {src}/32 dst {dst}/32 proto udp dport 4789 dir {dir} tmpl src {src} dst {dst} proto esp reqid 1 mode {mode}"
            )
        };
        let batch = [
            "xfrm policy flush".to_string(),
            "xfrm state flush".to_string(),
            sa(a, b, 0x101, k12),
            sa(b, a, 0x102, k21),
            pol(me, peer, "out"),
            pol(peer, me, "in"),
        ]
        .join("\n");
        let mut c = Command::new("ip");
        c.args(["-n", &format!("{LAB}-{h}"), "-batch", "-"]);
        run_with_stdin(&mut c, &batch).with_context(|| format!("reference IPsec on {h}"))?;
    }
    Ok(())
}

fn run_with_stdin(c: &mut Command, input: &str) -> Result<()> {
    use std::io::Write;
    let mut child = c
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.as_bytes())?;
    let o = child.wait_with_output()?;
    anyhow::ensure!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    Ok(())
}

/// The paths: (key, label, client namespace, server address).
fn setup(shoal: &Path) -> Result<Vec<(&'static str, &'static str, String, String)>> {
    run(Command::new(shoal).args(["lab", "up", "--name", LAB, "--nodes", "2"]))?;
    on(shoal, LAB, "n1", &["network", "create", "plainnet"])?;
    on(
        shoal,
        LAB,
        "n1",
        &["network", "create", "--opt", "encrypted", "secnet"],
    )?;
    let svc = |name: &str, node: &str, cmd: &[&str]| -> Result<String> {
        let mut a = vec!["service", "create", "--name", name];
        a.extend(["--network", "plainnet", "--network", "secnet"]);
        let c = format!("node.hostname=={node}");
        a.extend(["--constraint", &c, "--"]);
        a.extend_from_slice(cmd);
        on(shoal, LAB, "n1", &a)
    };
    svc(
        "srv",
        "n2",
        &[
            "sh",
            "-c",
            "iperf3 -s -p 5201 & exec sockperf sr --tcp -i 0.0.0.0 -p 11111 >/dev/null",
        ],
    )?;
    svc("cli", "n1", &["sleep", "100000"])?;
    let srv = tasks_of(shoal, LAB, "srv")?;
    let cli = tasks_of(shoal, LAB, "cli")?;
    let (srv, cli) = (
        srv.first().context("no server task")?,
        cli.first().context("no client task")?,
    );
    let ns = task_netns(LAB, "n1", cli);
    reference()?;
    let paths = vec![
        (
            "plain",
            "(a) Shoal, plain network",
            ns.clone(),
            addr_on(srv, "plainnet").context("server address on plainnet")?,
        ),
        (
            "encrypted",
            "(b) Shoal, encrypted network",
            ns.clone(),
            addr_on(srv, "secnet").context("server address on secnet")?,
        ),
        (
            "reference",
            "(c) kernel vxlan + ESP transport (Docker-style)",
            format!("{LAB}-d1c"),
            "10.9.0.3".to_string(),
        ),
    ];
    // The reference's server: iperf3 and sockperf in its container.
    sh(&format!(
        "ip netns exec {LAB}-d2c iperf3 -s -p 5201 -D; (ip netns exec {LAB}-d2c sockperf sr --tcp -i 10.9.0.3 -p 11111 >/dev/null 2>&1 &)"
    ))?;
    for (_, label, ns, ip) in &paths {
        let mut ok = false;
        for _ in 0..60 {
            if sh(&format!("ip netns exec {ns} ping -c 1 -W 2 {ip}")).is_ok() {
                ok = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        anyhow::ensure!(ok, "{label} does not work");
    }
    Ok(paths)
}

fn inside(a: &Args) -> Result<Value> {
    let shoal = common::shoal_path(a.lab.shoal.clone());
    let _lab = LabGuard::fresh(&shoal, LAB);
    let paths = setup(&shoal)?;
    let mut tput = vec![vec![]; paths.len()];
    let mut lat = vec![vec![]; paths.len()];
    for r in 0..a.lab.rounds {
        for (i, (_, label, ns, ip)) in paths.iter().enumerate() {
            tput[i].push(iperf(ns, ip, 5201)?);
            lat[i].push(latency_us(ns, ip, 11111)?);
            eprintln!(
                "round {}: {label}: {:.3} Gbit/s, {:.1} us",
                r + 1,
                tput[i][r as usize],
                lat[i][r as usize]
            );
        }
    }
    let mut profiles = vec![];
    if a.profile {
        for (key, _, ns, ip) in paths
            .iter()
            .filter(|p| ["plain", "encrypted", "reference"].contains(&p.0))
        {
            for l in profile(key, ns, ip, a.callers)? {
                eprintln!("{l}");
                profiles.push(l);
            }
        }
    }
    let med = |v: &Vec<f64>| {
        let mut s = v.clone();
        s.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
        s[s.len() / 2]
    };
    let results: Vec<Value> = paths
        .iter()
        .enumerate()
        .map(|(i, (key, label, _, _))| {
            json!({
                "path": key,
                "label": label,
                "gbps_1": med(&tput[i]),
                "rr_us": med(&lat[i]),
                "gbps_1_rounds": tput[i],
                "rr_us_rounds": lat[i],
                "gbps_1_stats": stats(tput[i].clone()),
                "rr_us_stats": stats(lat[i].clone()),
            })
        })
        .collect();
    let (p, e, r) = (0, 1, 2);
    // Per round, (b) against (c) measured right after it.
    let paired_t: Vec<f64> = tput[e].iter().zip(&tput[r]).map(|(b, c)| b / c).collect();
    let paired_l: Vec<f64> = lat[e].iter().zip(&lat[r]).map(|(b, c)| b / c).collect();
    let ahead = paired_t.iter().filter(|x| **x >= 1.0).count();
    Ok(json!({
        "benchmark": "encrypted_vm",
        "kernel": sh("uname -r")?.trim(),
        "cpu": "qemu TCG (emulated): only ratios count",
        "rounds": a.lab.rounds,
        "mtu": MTU,
        "results": results,
        "encrypted_vs_reference": {
            "throughput": med(&tput[e]) / med(&tput[r]),
            "latency": med(&lat[e]) / med(&lat[r]),
        },
        "encrypted_vs_reference_paired": {
            "throughput": med(&paired_t),
            "latency": med(&paired_l),
            "throughput_rounds": paired_t,
            "latency_rounds": paired_l,
            "rounds_ahead_in_throughput": ahead,
        },
        "encrypted_vs_plain": {
            "throughput": med(&tput[e]) / med(&tput[p]),
            "latency": med(&lat[e]) / med(&lat[p]),
        },
        "note": "throughput ratios: higher is better; latency ratios: lower is better",
        "profile": profiles,
    }))
}

/// Boots the VM and runs this benchmark in it; its report.
fn in_vm(a: &Args) -> Result<Value> {
    let shoal = common::shoal_path(a.lab.shoal.clone());
    // The reference needs the kernel's vxlan, which Shoal does not.
    common::report_from_vm(
        &shoal,
        &format!("modprobe -d {}/root vxlan && ", shoal_tests::vm::VM_DIR),
        &format!(
            "--inside --rounds {}{}{}",
            a.lab.rounds,
            if a.profile { " --profile" } else { "" },
            if a.callers { " --callers" } else { "" }
        ),
        |l| l.starts_with("round ") || l.starts_with("PROFILE "),
    )
}

/// A JSON array of numbers as text, `prec` decimals each.
fn numbers(v: &Value, prec: usize) -> String {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|x| format!("{:.prec$}", x.as_f64().unwrap_or(0.0)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn print_table(r: &Value) {
    println!(
        "encrypted overlay, kernel {} ({}), {} rounds, MTU {}",
        r["kernel"].as_str().unwrap_or("?"),
        r["cpu"].as_str().unwrap_or("?"),
        r["rounds"],
        r["mtu"]
    );
    println!(
        "{:<50} {:>10} {:>10}  rounds (Gbit/s | us)",
        "path", "Gbit/s", "RR us"
    );
    for row in r["results"].as_array().into_iter().flatten() {
        println!(
            "{:<50} {:>10.3} {:>10.1}  {} | {}",
            row["label"].as_str().unwrap_or("?"),
            row["gbps_1"].as_f64().unwrap_or(0.0),
            row["rr_us"].as_f64().unwrap_or(0.0),
            numbers(&row["gbps_1_rounds"], 3),
            numbers(&row["rr_us_rounds"], 3)
        );
    }
    let p = &r["encrypted_vs_reference_paired"];
    println!(
        "encrypted_vs_reference, paired per round: throughput {:.2}x ({}; ahead in {} of {}), latency {:.2}x ({})",
        p["throughput"].as_f64().unwrap_or(0.0),
        numbers(&p["throughput_rounds"], 2),
        p["rounds_ahead_in_throughput"],
        r["rounds"],
        p["latency"].as_f64().unwrap_or(0.0),
        numbers(&p["latency_rounds"], 2)
    );
    for k in ["encrypted_vs_reference", "encrypted_vs_plain"] {
        println!(
            "{k}: throughput {:.2}x, latency {:.2}x",
            r[k]["throughput"].as_f64().unwrap_or(0.0),
            r[k]["latency"].as_f64().unwrap_or(0.0)
        );
    }
}

fn main() -> Result<()> {
    let a = Args::parse();
    if let Some(done) = a.lab.internal_role() {
        return done;
    }
    let report = if a.inside { inside(&a)? } else { in_vm(&a)? };
    if a.inside {
        // The host prints the table; here the JSON file is the output.
        if let Some(p) = &a.lab.json {
            std::fs::write(p, serde_json::to_string(&report)?)?;
        }
        return Ok(());
    }
    print_table(&report);
    let chart = common::results_chart(
        "Encrypted overlay in Debian's kernel (emulated CPU): Shoal against a Docker-style kernel ESP overlay",
        &report,
        &[
            ("TCP, 1 stream, Gbit/s", "gbps_1"),
            ("TCP request/response, us (lower is better)", "rr_us"),
        ],
    );
    common::emit(&report, a.lab.json.as_deref(), &chart)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_print_with_their_precision() {
        assert_eq!(numbers(&json!([1.0, 0.9876]), 2), "1.00 0.99");
        assert_eq!(numbers(&json!([3.5]), 3), "3.500");
        assert_eq!(numbers(&json!(null), 2), "");
    }
}

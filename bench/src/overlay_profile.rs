//! `overlay-bench --profile`: where the time goes on each path, for one
//! 1-stream and one 4-stream run of the kernel overlay, Shoal tc and the
//! bound (what Shoal's programs cost beyond bare encap/decap):
//! perf samples of the whole machine (999 Hz) by CPU and command (swapper
//! is idle; softirq work shows under the command it interrupted or
//! ksoftirqd), the top symbols, and the BPF programs' run count and time
//! from the kernel's BPF statistics over the same run.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use anyhow::Result;

use super::{iperf3, sh, Path};

/// Each program's (name, run count, run time ns), by id.
fn bpf_stats() -> BTreeMap<u64, (String, u64, u64)> {
    let Ok(out) = sh("bpftool prog show -j") else {
        return BTreeMap::new();
    };
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p["id"].as_u64()?,
                (
                    p["name"].as_str().unwrap_or("?").to_string(),
                    p["run_cnt"].as_u64().unwrap_or(0),
                    p["run_time_ns"].as_u64().unwrap_or(0),
                ),
            ))
        })
        .collect()
}

pub fn run(paths: &[Path]) -> Result<Vec<String>> {
    let was = sh("sysctl -n kernel.bpf_stats_enabled").unwrap_or_default();
    sh("sysctl -qw kernel.bpf_stats_enabled=1")?;
    let mut lines = vec![];
    for p in paths {
        for streams in [1, 4] {
            let key = format!("{} {streams}s", p.key);
            let data = format!("/tmp/overlay-perf-{}-{streams}.data", p.key);
            let before = bpf_stats();
            let mut rec = Command::new("perf")
                .args(["record", "-a", "-F", "999", "-o", &data, "--", "sleep", "4"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            let gbps = iperf3(p, 5, streams)?;
            rec.wait()?;
            let after = bpf_stats();
            lines.push(format!("PROFILE {key}: {gbps:.2} Gbit/s"));
            for (id, (name, cnt, ns)) in &after {
                let (c0, n0) = before.get(id).map_or((0, 0), |b| (b.1, b.2));
                let (runs, t) = (cnt.saturating_sub(c0), ns.saturating_sub(n0));
                if runs > 0 {
                    lines.push(format!(
                        "PROFILE {key}: bpf {name}: {runs} runs, {:.0} ns each, {:.2} s in all",
                        t as f64 / runs as f64,
                        t as f64 / 1e9
                    ));
                }
            }
            for (what, sort, limit) in [("cpu/comm", "cpu,comm", 2), ("symbol", "sym", 1)] {
                let out = sh(&format!(
                    "perf report -i {data} --stdio --no-children --sort {sort} --percent-limit {limit} 2>/dev/null | grep -v '^#' | grep -v '^$' | head -25"
                ))?;
                for l in out.lines() {
                    lines.push(format!("PROFILE {key}: {what}: {}", l.trim()));
                }
            }
            let _ = std::fs::remove_file(&data);
        }
    }
    let _ = sh(&format!(
        "sysctl -qw kernel.bpf_stats_enabled={}",
        was.trim().parse::<u32>().unwrap_or(0)
    ));
    Ok(lines)
}

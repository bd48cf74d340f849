//! overlay-bench's report: the medians' table, every round with Shoal's
//! ratios paired to the references of that round, and the paired medians
//! that decide the targets (README, "Benchmark").

use super::{common, Args, Metrics, Path, Row};

pub(super) fn print_table(rows: &[Row], args: &Args) {
    println!(
        "\nTCP over two lab hosts, median of {} rounds ({} s throughput, {} s latency runs)\n",
        args.rounds, args.duration, args.latency_duration
    );
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>9}   {:>17}   {:>17}",
        "path",
        "1 stream",
        "4 streams",
        "RR us",
        "RR pin us",
        "1s/4s vs underlay",
        "1s/4s vs kernel ov"
    );
    for r in rows {
        println!(
            "{:<34} {:>9.2} {:>9.2} {:>9.1} {:>9.1}   {:>8.2}/{:<8.2}   {:>8.2}/{:<8.2}",
            r.label,
            r.m.gbps_1,
            r.m.gbps_4,
            r.m.rr_us,
            r.m.rr_pinned_us,
            r.vs_underlay.gbps_1,
            r.vs_underlay.gbps_4,
            r.vs_kernel_overlay.gbps_1,
            r.vs_kernel_overlay.gbps_4
        );
    }
    println!("\nlatency vs underlay (pinned): {}", {
        rows.iter()
            .map(|r| format!("{} {:.2}x", r.path, r.vs_underlay.rr_pinned_us))
            .collect::<Vec<_>>()
            .join(", ")
    });
    println!();
}

/// One round: every path's figures, and Shoal's ratios to the kernel
/// overlay measured in that round.
pub(super) fn round_report(round: u32, paths: &[Path], m: &[&Metrics]) -> serde_json::Value {
    let (ul, kov) = (m[0], m[1]);
    let bound = paths.iter().position(|p| p.key == "bound").map(|i| m[i]);
    let mut per_path = serde_json::Map::new();
    let mut vs_kernel = serde_json::Map::new();
    let mut vs_underlay = serde_json::Map::new();
    let mut vs_bound = serde_json::Map::new();
    for (p, m) in paths.iter().zip(m) {
        per_path.insert(p.key.into(), serde_json::to_value(m).expect("metrics"));
        if let (Some(b), true) = (bound, p.key.starts_with("shoal")) {
            vs_bound.insert(
                p.key.into(),
                serde_json::to_value(ratio(m, b)).expect("ratio"),
            );
        }
        if p.key.starts_with("shoal") || p.key == "bound" {
            vs_kernel.insert(
                p.key.into(),
                serde_json::to_value(ratio(m, kov)).expect("ratio"),
            );
            vs_underlay.insert(
                p.key.into(),
                serde_json::to_value(ratio(m, ul)).expect("ratio"),
            );
        }
    }
    serde_json::json!({"round": round, "paths": per_path, "vs_kernel_overlay": vs_kernel, "vs_underlay": vs_underlay, "vs_bound": vs_bound})
}

/// Every round's throughputs and paired ratios; returns the summary: per
/// Shoal path, the median paired ratio and in how many rounds it was ahead.
pub(super) fn print_rounds(rounds: &[serde_json::Value]) -> serde_json::Value {
    println!("every round (Gbit/s 1 stream / 4 streams; Shoal's paired ratio to the kernel overlay of the same round)\n");
    for r in rounds {
        let p = &r["paths"];
        let g = |k: &str, f: &str| p[k][f].as_f64().unwrap_or(0.0);
        let v = |k: &str, f: &str| r["vs_kernel_overlay"][k][f].as_f64().unwrap_or(0.0);
        println!(
            "round {}: underlay {:.2}/{:.2}  kernel ov {:.2}/{:.2}  shoal tc {:.2}/{:.2} ({:.2}x/{:.2}x)  shoal xdp {:.2}/{:.2} ({:.2}x/{:.2}x)",
            r["round"],
            g("underlay", "gbps_1"),
            g("underlay", "gbps_4"),
            g("kernel_overlay", "gbps_1"),
            g("kernel_overlay", "gbps_4"),
            g("shoal_tc", "gbps_1"),
            g("shoal_tc", "gbps_4"),
            v("shoal_tc", "gbps_1"),
            v("shoal_tc", "gbps_4"),
            g("shoal_xdp", "gbps_1"),
            g("shoal_xdp", "gbps_4"),
            v("shoal_xdp", "gbps_1"),
            v("shoal_xdp", "gbps_4"),
        );
    }
    println!("every round, 4 streams pinned: sender CPU 0 and receiver CPU 1 (split, with wakeup IPIs per GB) / both on CPU 0 (shared)\n");
    for r in rounds {
        let p = &r["paths"];
        let g = |k: &str, f: &str| p[k][f].as_f64().unwrap_or(0.0);
        let v = |k: &str, f: &str| r["vs_kernel_overlay"][k][f].as_f64().unwrap_or(0.0);
        let path = |k: &str| {
            format!(
                "{:.2}/{:.2} ({:.0} IPIs/GB)",
                g(k, "gbps_4_split"),
                g(k, "gbps_4_shared"),
                g(k, "ipis_per_gb_split")
            )
        };
        println!(
            "round {}: underlay {}  kernel ov {}  shoal tc {} ({:.2}x/{:.2}x)",
            r["round"],
            path("underlay"),
            path("kernel_overlay"),
            path("shoal_tc"),
            v("shoal_tc", "gbps_4_split"),
            v("shoal_tc", "gbps_4_shared"),
        );
    }
    println!("\nevery round, 4 streams unpinned: segments retransmitted per GB (reordering across the two CPUs' backlogs)\n");
    for r in rounds {
        let p = &r["paths"];
        let g = |k: &str| p[k]["retrans_per_gb_4"].as_f64().unwrap_or(0.0);
        println!(
            "round {}: underlay {:.0}  kernel ov {:.0}  shoal tc {:.0}  shoal xdp {:.0}",
            r["round"],
            g("underlay"),
            g("kernel_overlay"),
            g("shoal_tc"),
            g("shoal_xdp"),
        );
    }
    // Latency moves with the machine from round to round, underlay too:
    // what the overlay adds is judged per round, not medians apart.
    println!("\nevery round, request/response pinned to CPU 0: half round trip, us (what each adds to the underlay of the same round)\n");
    let mut added: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    for r in rounds {
        let p = &r["paths"];
        let g = |k: &str| p[k]["rr_pinned_us"].as_f64().unwrap_or(0.0);
        let ul = g("underlay");
        for k in ["kernel_overlay", "shoal_tc", "shoal_xdp", "bound"] {
            added.entry(k).or_default().push(g(k) - ul);
        }
        println!(
            "round {}: underlay {:.2}  kernel ov {:.2} (+{:.2})  shoal tc {:.2} (+{:.2})  shoal xdp {:.2} (+{:.2})  bound {:.2} (+{:.2})",
            r["round"],
            ul,
            g("kernel_overlay"),
            g("kernel_overlay") - ul,
            g("shoal_tc"),
            g("shoal_tc") - ul,
            g("shoal_xdp"),
            g("shoal_xdp") - ul,
            g("bound"),
            g("bound") - ul,
        );
    }
    let mut rr_added = serde_json::Map::new();
    for (k, v) in added {
        let median = paired_median(&v);
        println!(
            "{k}: adds a median {median:.2} us to the underlay's pinned half round trip (paired)"
        );
        rr_added.insert(
            k.into(),
            serde_json::json!((median * 100.0).round() / 100.0),
        );
    }
    let mut out = serde_json::Map::new();
    out.insert("rr_pinned_added_us".into(), rr_added.into());
    // The underlay moves between rounds as much as any path: Shoal's
    // share of it is taken per round too.
    let mut to_underlay = serde_json::Map::new();
    for key in ["shoal_tc", "shoal_xdp", "bound"] {
        let v: Vec<f64> = rounds
            .iter()
            .filter_map(|r| r["vs_underlay"][key]["gbps_1"].as_f64())
            .collect();
        let median = paired_median(&v);
        println!("{key} gbps_1: paired median {median:.2}x the underlay, rounds {v:?}");
        to_underlay.insert(key.into(), serde_json::json!(median));
    }
    out.insert("gbps_1_vs_underlay".into(), to_underlay.into());
    out.insert("shoal_tc_vs_bound".into(), print_vs_bound(rounds));
    for key in ["shoal_tc", "shoal_xdp"] {
        let mut s = serde_json::Map::new();
        for f in ["gbps_1", "gbps_4", "gbps_4_split", "gbps_4_shared"] {
            let v: Vec<f64> = rounds
                .iter()
                .filter_map(|r| r["vs_kernel_overlay"][key][f].as_f64())
                .collect();
            let ahead = v.iter().filter(|r| **r > 1.0).count();
            let median = paired_median(&v);
            println!(
                "{key} {f}: paired median {median:.2}x the kernel overlay, ahead in {ahead} of {} rounds",
                v.len()
            );
            s.insert(
                f.into(),
                serde_json::json!({"median": median, "ahead": ahead, "rounds": v.len()}),
            );
        }
        out.insert(key.into(), s.into());
    }
    println!();
    out.into()
}

/// Shoal tc against the bound of the same round: what its own logic costs,
/// apart from what the topology costs any eBPF overlay.
fn print_vs_bound(rounds: &[serde_json::Value]) -> serde_json::Value {
    println!("\nevery round, Shoal tc against the bound (bare encap/decap on the same topology), paired\n");
    for r in rounds {
        let v = |f: &str| r["vs_bound"]["shoal_tc"][f].as_f64().unwrap_or(0.0);
        let g = |k: &str, f: &str| r["paths"][k][f].as_f64().unwrap_or(0.0);
        println!(
            "round {}: bound {:.2}/{:.2} Gbit/s ({:.2}x the underlay at 1 stream)  shoal tc {:.2}x/{:.2}x the bound, RR pinned {:+.2} us over it",
            r["round"],
            g("bound", "gbps_1"),
            g("bound", "gbps_4"),
            r["vs_underlay"]["bound"]["gbps_1"].as_f64().unwrap_or(0.0),
            v("gbps_1"),
            v("gbps_4"),
            g("shoal_tc", "rr_pinned_us") - g("bound", "rr_pinned_us"),
        );
    }
    let mut s = serde_json::Map::new();
    for f in ["gbps_1", "gbps_4"] {
        let v: Vec<f64> = rounds
            .iter()
            .filter_map(|r| r["vs_bound"]["shoal_tc"][f].as_f64())
            .collect();
        let median = paired_median(&v);
        println!("shoal_tc {f}: paired median {median:.2}x the bound, rounds {v:?}");
        s.insert(f.into(), serde_json::json!(median));
    }
    s.into()
}

/// The median of per-round figures (0 when there are none).
fn paired_median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    common::median_by(v, |x| *x)
}

pub(super) fn ratio(m: &Metrics, base: &Metrics) -> Metrics {
    use common::ratio2 as r;
    Metrics {
        gbps_1: r(m.gbps_1, base.gbps_1),
        gbps_4: r(m.gbps_4, base.gbps_4),
        rr_us: r(m.rr_us, base.rr_us),
        rr_pinned_us: r(m.rr_pinned_us, base.rr_pinned_us),
        gbps_4_split: r(m.gbps_4_split, base.gbps_4_split),
        gbps_4_shared: r(m.gbps_4_shared, base.gbps_4_shared),
        ipis_per_gb_split: r(m.ipis_per_gb_split, base.ipis_per_gb_split),
        retrans_per_gb_4: r(m.retrans_per_gb_4, base.retrans_per_gb_4),
    }
}

pub(super) fn median(s: &[Metrics]) -> Metrics {
    use common::median_by as med;
    Metrics {
        gbps_1: med(s, |m| m.gbps_1),
        gbps_4: med(s, |m| m.gbps_4),
        rr_us: med(s, |m| m.rr_us),
        rr_pinned_us: med(s, |m| m.rr_pinned_us),
        gbps_4_split: med(s, |m| m.gbps_4_split),
        gbps_4_shared: med(s, |m| m.gbps_4_shared),
        ipis_per_gb_split: med(s, |m| m.ipis_per_gb_split),
        retrans_per_gb_4: med(s, |m| m.retrans_per_gb_4),
    }
}

//! Rolling updates on a 3-node lab (n1 manager, n2 n3 workers): a
//! 12-replica whoami service updated (new args) at parallelism 1, 3 and 12
//! with monitor 1 s, timed from `service update` to its completion (the CLI
//! follows it, as without `--detach`). Reference, same run: the same 12
//! tasks created from scratch (`service create --replicas 12` until all
//! run).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

mod common;

use anyhow::Result;
use clap::Parser;
use common::{create_service, on, run, stats, LabGuard};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value_t = 3)]
    runs: u32,
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long)]
    shoal: Option<PathBuf>,
}

const LAB: &str = "bup";

fn main() -> Result<()> {
    let a = Args::parse();
    let shoal = common::shoal_path(a.shoal.clone());
    let bin = shoal.to_string_lossy().into_owned();
    let _lab = LabGuard::fresh(&shoal, LAB);
    run(Command::new(&shoal).args(["lab", "up", "--name", LAB, "--nodes", "3"]))?;
    on(&shoal, LAB, "n1", &["network", "create", "appnet"])?;
    let (mut scratch, mut p1, mut p3, mut p12) = (vec![], vec![], vec![], vec![]);
    for r in 0..a.runs {
        let t0 = Instant::now();
        create_service(
            &shoal,
            LAB,
            "web",
            &["--replicas", "12", "--", &bin, "whoami", "--port", "80"],
        )?;
        scratch.push(t0.elapsed().as_secs_f64() * 1e3);
        for (p, out) in [("1", &mut p1), ("3", &mut p3), ("12", &mut p12)] {
            let args = format!("whoami --port 8{p}");
            let t0 = Instant::now();
            on(
                &shoal,
                LAB,
                "n1",
                &[
                    "service",
                    "update",
                    "--update-parallelism",
                    p,
                    "--update-monitor",
                    "1s",
                    "--args",
                    &args,
                    "web",
                ],
            )?;
            out.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        on(&shoal, LAB, "n1", &["service", "rm", "web"])?;
        // Let the old tasks go before the next run's scratch start.
        std::thread::sleep(std::time::Duration::from_secs(3));
        eprintln!(
            "run {}: from scratch {:.0} ms; update p1 {:.0} ms, p3 {:.0} ms, p12 {:.0} ms",
            r + 1,
            scratch[r as usize],
            p1[r as usize],
            p3[r as usize],
            p12[r as usize]
        );
    }
    let report = serde_json::json!({
        "benchmark": "updates_lab",
        "runs": a.runs,
        "replicas": 12,
        "monitor_ms": 1000,
        "reference_create_12_from_scratch": stats(scratch),
        "update_parallelism_1": stats(p1),
        "update_parallelism_3": stats(p3),
        "update_parallelism_12": stats(p12),
    });
    println!(
        "\nRolling update of 12 tasks, monitor 1 s, 3-node lab ({} runs)\n",
        a.runs
    );
    println!(
        "{:<46} {:>9} {:>9} {:>9}",
        "", "median ms", "max ms", "min ms"
    );
    let rows = [
        (
            "reference: create 12 tasks from scratch",
            "reference_create_12_from_scratch",
        ),
        ("update, parallelism 1", "update_parallelism_1"),
        ("update, parallelism 3", "update_parallelism_3"),
        ("update, parallelism 12", "update_parallelism_12"),
    ];
    common::print_stats(&report, &rows, 46, 0);
    let chart = common::medians_chart("Rolling update of 12 tasks", &report, &rows);
    common::emit(&report, a.json.as_deref(), &chart)?;
    Ok(())
}

//! What the lab benchmarks share: the `shoal` binary beside them, a lab
//! that is removed however the run ends, and median/max/min figures.

// Each benchmark binary includes this module and uses a part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

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

/// Prints the report as one JSON line and writes it (pretty) to `path`.
pub fn emit(report: &serde_json::Value, path: Option<&std::path::Path>) -> anyhow::Result<()> {
    println!("\n{}", serde_json::to_string(report)?);
    if let Some(p) = path {
        std::fs::write(p, serde_json::to_string_pretty(report)?)?;
    }
    Ok(())
}

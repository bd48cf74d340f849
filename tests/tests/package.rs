//! The .deb operators install: `scripts/package-deb.sh` builds it; it
//! installs into a clean root with dpkg, its unit file passes
//! `systemd-analyze verify`, and the installed binary runs.

use std::path::Path;
use std::process::Command;

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().expect("run");
    assert!(
        o.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn the_deb_installs_into_a_clean_root_and_runs() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let deb = run(Command::new(repo.join("scripts/package-deb.sh"))
        .env("SHOAL_BIN", shoal_tests::shoal_bin()));
    let deb = repo.join(deb.trim());
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("shoal_") && name.ends_with("_amd64.deb"),
        "{name}"
    );
    let tmp = tempfile::Builder::new()
        .prefix("shoal-deb-root-")
        .tempdir()
        .unwrap();
    let root = tmp.path().to_path_buf();
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    // A clean root: dpkg's own database in it, nothing else installed
    // (so the declared dependencies are not there to satisfy).
    run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args([
            "--force-depends",
            "--force-not-root",
            "--force-script-chrootless",
            "-i",
        ])
        .arg(&deb));
    let listed = run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(["-L", "shoal"]));
    for f in [
        "/usr/bin/shoal",
        "/lib/systemd/system/shoal.service",
        "/etc/default/shoal",
        "/usr/lib/modules-load.d/shoal.conf",
        "/usr/lib/systemd/network/05-shoal.network",
        "/usr/share/bash-completion/completions/shoal",
        "/usr/share/man/man1/shoal.1.gz",
        "/usr/share/man/man1/shoal-daemon.1.gz",
        "/usr/lib/cni/shoal-cni",
        "/opt/cni/bin/shoal-cni",
    ] {
        assert!(listed.lines().any(|l| l == f), "{f} in {listed}");
    }
    // The CNI plugin is the binary by another name.
    for link in ["usr/lib/cni/shoal-cni", "opt/cni/bin/shoal-cni"] {
        let to = std::fs::read_link(root.join(link)).unwrap();
        assert_eq!(to, std::path::Path::new("/usr/bin/shoal"), "{link}");
    }
    let v = run(Command::new(root.join("usr/bin/shoal")).arg("--version"));
    assert!(v.starts_with("shoal "), "{v}");
    // The unit as installed, its ExecStart pointed at the installed
    // binary (the host has no /usr/bin/shoal; with --root systemd-analyze
    // would want a whole systemd tree there too).
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/shoal.service")).unwrap();
    let copy = root.join("shoal.service");
    std::fs::write(
        &copy,
        unit.replace(
            "/usr/bin/shoal",
            &root.join("usr/bin/shoal").display().to_string(),
        ),
    )
    .unwrap();
    let o = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

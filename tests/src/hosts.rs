//! A cluster of real (virtual) hosts for tests: `scripts/vm-cluster.sh`,
//! three VMs booted from the image of `scripts/vm-image.sh`, Shoal
//! installed from its .deb under systemd on each, a swarm formed. Brought
//! down when dropped, also when a test fails.

use std::path::PathBuf;
use std::process::{Command, Output};

use crate::shoal_bin;

pub struct VmCluster {
    dir: tempfile::TempDir,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/vm-cluster.sh")
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

impl VmCluster {
    /// `vm-cluster.sh up` with the shoal binary under test packaged.
    pub fn up() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("shoal-vm-cluster-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let c = VmCluster { dir };
        let o = c.script(&["up"]);
        assert!(o.status.success(), "vm-cluster.sh up: {}", text(&o));
        c
    }

    fn script(&self, args: &[&str]) -> Output {
        Command::new(script())
            .args(args)
            .env("SHOAL_VM_CLUSTER_DIR", self.dir.path())
            .env("SHOAL_BIN", shoal_bin())
            .output()
            .expect("scripts/vm-cluster.sh")
    }

    /// A command on a VM (over ssh), its output.
    pub fn exec(&self, vm: &str, cmd: &[&str]) -> Output {
        let mut args = vec!["exec", vm, "--"];
        args.extend_from_slice(cmd);
        self.script(&args)
    }

    /// A command on a VM that must succeed: its stdout.
    pub fn ok(&self, vm: &str, cmd: &[&str]) -> String {
        let o = self.exec(vm, cmd);
        assert!(o.status.success(), "{vm}: {cmd:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// A command in the outside client's namespace, on the VMs' switch.
    pub fn client(&self, cmd: &[&str]) -> Output {
        let mut args = vec!["client", "--"];
        args.extend_from_slice(cmd);
        self.script(&args)
    }

    /// Copies a local file to a VM (through ssh's stdin).
    pub fn put(&self, vm: &str, local: &std::path::Path, remote: &str) {
        let o = Command::new(script())
            .args(["exec", vm, "--", "sh", "-c", &format!("cat > {remote}")])
            .env("SHOAL_VM_CLUSTER_DIR", self.dir.path())
            .stdin(std::fs::File::open(local).expect("the file to copy"))
            .output()
            .expect("scripts/vm-cluster.sh");
        assert!(o.status.success(), "copy to {vm}: {}", text(&o));
    }

    pub fn ls(&self) -> String {
        text(&self.script(&["ls"]))
    }

    pub fn stop(&self, vm: &str) {
        let o = self.script(&["stop", vm]);
        assert!(o.status.success(), "stop {vm}: {}", text(&o));
    }

    pub fn start(&self, vm: &str) {
        let o = self.script(&["start", vm]);
        assert!(o.status.success(), "start {vm}: {}", text(&o));
    }

    /// A VM's serial console so far (for failure messages).
    pub fn console(&self, vm: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{vm}.console.log")))
            .unwrap_or_default()
    }
}

impl Drop for VmCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // For a failed test: what each daemon said about liveness,
            // restarts, tasks and trouble (the cluster goes down next).
            for vm in ["vm1", "vm2", "vm3"] {
                let o = self.exec(
                    vm,
                    &[
                        "sh",
                        "-c",
                        "journalctl -u shoal -o cat | grep -E 'WARN|ERROR|liveness|restarting|drained|adopted|task running|stopping|peer live|gossip member' | tail -40",
                    ],
                );
                eprintln!("{vm}'s journal, the trouble:\n{}", text(&o));
            }
        }
        let _ = self.script(&["down"]);
    }
}

/// A VM's underlay address (`vm-cluster.sh`: vmN is 198.18.10.1N).
pub fn vm_ip(vm: &str) -> String {
    let n: u32 = vm.trim_start_matches("vm").parse().expect("vmN");
    format!("198.18.10.{}", 10 + n)
}

/// The outside client's address on the switch.
pub const CLIENT_IP: &str = "198.18.10.100";

/// The .deb `vm-cluster.sh up` installed: the newest one packaged.
pub fn deb() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debian");
    std::fs::read_dir(&dir)
        .expect("target/debian")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .expect("a .deb in target/debian")
}

/// Packets (sent, lost) in `ping -q` output.
pub fn ping_loss(out: &str) -> (u64, u64) {
    let line = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary in {out:?}"));
    let n: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    (n[0], n[0] - n[1])
}

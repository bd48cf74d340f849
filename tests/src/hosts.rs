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

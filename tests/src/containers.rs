//! Real container runtimes on lab nodes, for the CNI tests: podman (CNI
//! backend) and containerd with `ctr`, each with its state in a temporary
//! directory, the image a busybox-static root filesystem (offline), and the
//! plugin the `shoal` under test called `shoal-cni`. Everything they made
//! goes when the value is dropped, also when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::{shoal_bin, wait, Lab};

/// A node's API socket (the CNI configuration's `socket`).
pub fn node_socket(lab: &Lab, node: &str) -> String {
    format!("/run/shoal/lab/{}/nodes/{node}/shoal.sock", lab.name)
}

/// A CNI network configuration list for a Shoal network on one node.
pub fn conflist(network: &str, socket: &str, version: &str) -> String {
    serde_json::json!({
        "cniVersion": version,
        "name": network,
        "plugins": [{
            "type": "shoal-cni",
            "network": network,
            "socket": socket,
            "capabilities": {"ips": true, "aliases": true},
        }],
    })
    .to_string()
}

/// A busybox root filesystem under `dir` (every applet linked), resolving
/// through the embedded DNS.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("/bin/busybox (busybox-static)");
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
    }
    std::fs::write(root.join("etc/resolv.conf"), "nameserver 127.0.0.11\n").unwrap();
    root
}

/// A directory holding `shoal-cni`, a link to the `shoal` under test.
fn plugin_dir(dir: &Path) -> PathBuf {
    let bin = dir.join("cni-bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(shoal_bin(), bin.join("shoal-cni")).unwrap();
    bin
}

fn output_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// podman with its own storage (vfs: nothing mounted to leak), its own
/// network configuration directory and a containers.conf for a machine
/// without systemd: runc, cgroupfs, file events, the CNI backend, and
/// ulimits within this sandbox's hard limits (it cannot raise them).
pub struct Podman {
    pub dir: tempfile::TempDir,
}

impl Podman {
    pub fn new(lab: &Lab, node: &str, network: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin = plugin_dir(dir.path());
        let conf = format!(
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=4096:4096\"]\n\
             [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nruntime = \"runc\"\n\
             [network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\", \"/usr/lib/cni\"]\n",
            bin.display()
        );
        std::fs::write(dir.path().join("containers.conf"), conf).unwrap();
        let netd = dir.path().join("net.d");
        std::fs::create_dir_all(&netd).unwrap();
        std::fs::write(
            netd.join(format!("{network}.conflist")),
            conflist(network, &node_socket(lab, node), "1.0.0"),
        )
        .unwrap();
        let p = Podman { dir };
        let root = busybox_rootfs(p.dir.path());
        let tar = p.dir.path().join("busybox.tar");
        let t = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(t.success());
        p.ok(&["import", tar.to_str().unwrap(), "localhost/busybox"]);
        p
    }

    pub fn cmd(&self, args: &[&str]) -> Output {
        let d = self.dir.path();
        Command::new("timeout")
            .arg("60")
            .arg("podman")
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("run"))
            .arg("--storage-driver")
            .arg("vfs")
            .arg("--network-config-dir")
            .arg(d.join("net.d"))
            .args(args)
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .output()
            .expect("podman")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.cmd(args);
        assert!(
            o.status.success(),
            "podman {}: {}",
            args.join(" "),
            output_text(&o)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd(&["rm", "-f", "-a", "-t", "0"]);
    }
}

/// A containerd of its own (own root, state and socket) for `ctr run
/// --cni`. ctr reads CNI configurations only from /etc/cni/net.d and
/// plugins only from /opt/cni/bin and /usr/lib/cni: this puts a link and a
/// configuration there (the lexically first, which ctr uses) and takes
/// both away again.
pub struct Containerd {
    pub dir: tempfile::TempDir,
    child: Child,
    rootfs: PathBuf,
    /// What this put in place, with what was there before (an installed
    /// package's link comes back).
    placed: Vec<(PathBuf, Option<PathBuf>)>,
}

pub const CTR_CONF: &str = "/etc/cni/net.d/00-shoal-test.conflist";
pub const CTR_PLUGIN: &str = "/usr/lib/cni/shoal-cni";

impl Containerd {
    pub fn new(lab: &Lab, node: &str, network: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("config.toml"),
            "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n",
        )
        .unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .arg("--root")
            .arg(d.join("root"))
            .arg("--state")
            .arg(d.join("state"))
            .arg("--address")
            .arg(d.join("sock"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("containerd.log")).unwrap())
            .spawn()
            .expect("containerd");
        let rootfs = busybox_rootfs(d);
        std::fs::create_dir_all("/etc/cni/net.d").unwrap();
        std::fs::write(
            CTR_CONF,
            conflist(network, &node_socket(lab, node), "1.0.0"),
        )
        .unwrap();
        let before = std::fs::read_link(CTR_PLUGIN).ok();
        let _ = std::fs::remove_file(CTR_PLUGIN);
        std::os::unix::fs::symlink(shoal_bin(), CTR_PLUGIN).unwrap();
        let c = Containerd {
            dir,
            child,
            rootfs,
            placed: vec![(CTR_CONF.into(), None), (CTR_PLUGIN.into(), before)],
        };
        wait("containerd answers", 20, || {
            c.ctr(&["version"]).status.success()
        });
        c
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new("timeout")
            .arg("60")
            .arg("ctr")
            .arg("--address")
            .arg(self.dir.path().join("sock"))
            .args(args)
            .output()
            .expect("ctr")
    }

    /// `ctr run --cni` of a busybox container running `script`, in the
    /// foreground (`--rm`) or detached.
    pub fn run(&self, id: &str, script: &str, detach: bool) -> Output {
        let rootfs = self.rootfs.to_string_lossy().into_owned();
        // `--rootfs` is a switch: the path takes the image's place.
        let mode = if detach { "-d" } else { "--rm" };
        let a = [
            "run", "--cni", mode, "--rootfs", &rootfs, id, "/bin/sh", "-c", script,
        ];
        self.ctr(&a)
    }

    /// Kills a container's task and removes it (the CNI DEL happens here).
    pub fn remove(&self, id: &str) {
        let _ = self.ctr(&["task", "kill", "-s", "KILL", id]);
        wait("the task stops", 10, || {
            !output_text(&self.ctr(&["task", "ls"])).contains(&format!("{id} "))
                || self.ctr(&["task", "rm", "-f", id]).status.success()
        });
        let _ = self.ctr(&["task", "rm", "-f", id]);
        let _ = self.ctr(&["container", "rm", id]);
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let ls = self.ctr(&["container", "ls", "-q"]);
        for id in String::from_utf8_lossy(&ls.stdout).split_whitespace() {
            self.remove(id);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Its shims outlive it; they carry its socket's path.
        let sock = self.dir.path().join("sock");
        let _ = Command::new("pkill")
            .arg("-f")
            .arg(format!("containerd-shim.*{}", sock.display()))
            .status();
        std::thread::sleep(Duration::from_millis(200));
        for (p, before) in &self.placed {
            let _ = std::fs::remove_file(p);
            if let Some(b) = before {
                let _ = std::os::unix::fs::symlink(b, p);
            }
        }
    }
}

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

/// A client's stdout, after asserting it succeeded (its output if not).
fn succeeded(tool: &str, args: &[&str], o: Output) -> String {
    assert!(
        o.status.success(),
        "{tool} {}: {}",
        args.join(" "),
        output_text(&o)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
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
        succeeded("podman", args, self.cmd(args))
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

/// dockerd 20.10 "on" a lab node: started in the node's network namespace
/// (by nsenter: `ip netns exec` would hide the cgroup mounts behind a
/// fresh /sys), with its own data and exec roots, no bridge, no iptables,
/// vfs storage, and ulimits within this sandbox's hard limits. It finds
/// Shoal's driver through /etc/docker/plugins/shoal.spec, which names the
/// node's `--docker-plugin docker-plugin.sock`; put back as it was on drop.
pub struct Dockerd {
    pub dir: tempfile::TempDir,
    child: Child,
    spec_before: Option<Vec<u8>>,
    socket: String,
}

pub const DOCKER_SPEC: &str = "/etc/docker/plugins/shoal.spec";

impl Dockerd {
    pub fn new(lab: &Lab, node: &str) -> Self {
        let dir = tempfile::Builder::new().prefix("dk").tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all("/etc/docker/plugins").unwrap();
        let spec_before = std::fs::read(DOCKER_SPEC).ok();
        std::fs::write(
            DOCKER_SPEC,
            format!(
                "unix:///run/shoal/lab/{}/nodes/{node}/docker-plugin.sock\n",
                lab.name
            ),
        )
        .unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}-{node}", lab.name))
            .arg("/usr/sbin/dockerd")
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .arg("-H")
            .arg(format!("unix://{}", Self::socket(lab, node)))
            .args([
                "--bridge",
                "none",
                "--iptables=false",
                "--ip6tables=false",
                "--storage-driver",
                "vfs",
                "--exec-opt",
                "native.cgroupdriver=cgroupfs",
                "--default-ulimit",
                "nofile=1024:1024",
                "--default-ulimit",
                "nproc=4096:4096",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("dockerd.log")).unwrap())
            .spawn()
            .expect("dockerd (docker.io)");
        let dk = Dockerd {
            dir,
            child,
            spec_before,
            socket: Self::socket(lab, node),
        };
        wait("dockerd answers", 30, || {
            dk.cmd(&["version"]).status.success()
        });
        let root = busybox_rootfs(dk.dir.path());
        let tarball = dk.dir.path().join("busybox.tar");
        let tar = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tarball)
            .arg(".")
            .status()
            .unwrap();
        assert!(tar.success());
        let import = Command::new("/usr/bin/docker")
            .arg("-H")
            .arg(dk.host())
            .args(["import", tarball.to_str().unwrap(), "busybox"])
            .output()
            .unwrap();
        assert!(import.status.success(), "{}", output_text(&import));
        dk
    }

    /// dockerd's API: in the node's directory, where the lab's daemon
    /// looks (`--docker-socket docker.sock`) for containers' names.
    fn socket(lab: &Lab, node: &str) -> String {
        format!("/run/shoal/lab/{}/nodes/{node}/docker.sock", lab.name)
    }

    fn host(&self) -> String {
        format!("unix://{}", self.socket)
    }

    /// The docker CLI of the package (the same version as the daemon).
    pub fn cmd(&self, args: &[&str]) -> Output {
        Command::new("timeout")
            .args(["60", "/usr/bin/docker", "-H", &self.host()])
            .args(args)
            .output()
            .expect("docker")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        succeeded("docker", args, self.cmd(args))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let ps = self.cmd(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ps.stdout).split_whitespace() {
            let _ = self.cmd(&["rm", "-f", id]);
        }
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = wait_exit(&mut self.child, Duration::from_secs(15));
        // Its managed containerd and the shims carry its exec root.
        let exec = self.dir.path().join("exec");
        let _ = Command::new("pkill")
            .arg("-f")
            .arg(exec.display().to_string())
            .status();
        std::thread::sleep(Duration::from_millis(300));
        match &self.spec_before {
            Some(b) => {
                let _ = std::fs::write(DOCKER_SPEC, b);
            }
            None => {
                let _ = std::fs::remove_file(DOCKER_SPEC);
            }
        }
    }
}

/// Waits for a child to exit, killing it after `limit`.
fn wait_exit(child: &mut Child, limit: Duration) -> std::io::Result<()> {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill()?;
    child.wait().map(drop)
}

//! The harness for integration tests: a lab with a unique name that is
//! torn down when the test ends, pass or fail; helpers to run the real
//! `shoal` binary and real clients (ping, iperf3, tcpdump) inside it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use serde::Deserialize;

pub mod containers;
pub mod hosts;
pub mod pcap;
pub mod services;
pub mod vm;

/// The `shoal` binary next to the test executable (built by the test script;
/// `SHOAL_BIN` overrides).
pub fn shoal_bin() -> PathBuf {
    if let Ok(p) = std::env::var("SHOAL_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("shoal");
    assert!(
        bin.exists(),
        "{} missing: run `cargo build --workspace` first (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// Runs `shoal ARGS` and returns its output.
pub fn shoal(args: &[&str]) -> Output {
    Command::new(shoal_bin())
        .args(args)
        .output()
        .expect("run shoal")
}

/// Runs `shoal ARGS`, panicking with its stderr unless it succeeds.
pub fn shoal_ok(args: &[&str]) -> String {
    let out = shoal(args);
    assert!(
        out.status.success(),
        "shoal {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[derive(Clone, Debug, Deserialize)]
pub struct LabNode {
    pub name: String,
    pub netns: String,
    pub underlay_ip: String,
    pub underlay_dev: String,
    pub data_dir: std::path::PathBuf,
    pub pid: Option<u32>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct LabEndpoint {
    pub name: String,
    pub netns: String,
    pub node: String,
    pub vni: u32,
    pub ip: String,
    pub mac: String,
    pub host_if: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct LabInfo {
    pub name: String,
    pub underlay_netns: String,
    pub underlay_bridge: String,
    pub nodes: Vec<LabNode>,
    pub endpoints: Vec<LabEndpoint>,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A unique lab name for this test (6 characters at most).
/// The stdout of a command that must succeed (its stderr otherwise).
pub fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs `shoal ARGS` on a lab node, expecting a refusal mentioning `needle`.
pub fn refused(lab: &Lab, node: &str, args: &[&str], needle: &str) {
    let o = lab.shoal_on(node, args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains(needle),
        "{args:?} on {node}: expected {needle:?}, got {err}"
    );
}

/// `swarm join-token -q ROLE` on a manager node.
pub fn join_token(lab: &Lab, node: &str, role: &str) -> String {
    ok(lab.shoal_on(node, &["swarm", "join-token", "-q", role]))
        .trim()
        .to_string()
}

/// Polls `f` every 100 ms until it holds; fails the test after `secs`.
pub fn wait(what: &str, secs: u64, mut f: impl FnMut() -> bool) -> std::time::Duration {
    let t0 = std::time::Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(secs),
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    t0.elapsed()
}

/// A lab name no other test (of this binary or another) uses: `t` and 5
/// random base-36 characters (60 M names; `pid % 1000` once collided with
/// a lab of an earlier test binary), skipping any lab that exists.
pub fn unique_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    loop {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(SEQ.fetch_add(1, Ordering::SeqCst) as u64);
        h.write_u32(std::process::id());
        let mut v = h.finish();
        let mut name = String::from("t");
        for _ in 0..5 {
            name.push(char::from_digit((v % 36) as u32, 36).unwrap());
            v /= 36;
        }
        if !std::path::Path::new("/run/shoal/lab").join(&name).exists() {
            return name;
        }
    }
}

/// A running lab; `shoal lab down` runs when it is dropped.
pub struct Lab {
    pub name: String,
}

impl Lab {
    /// A lab whose nodes form a swarm with n1 as its one manager.
    pub fn up(nodes: u32, endpoints: u32, accel: &str) -> Self {
        Self::up_with(nodes, endpoints, accel, &[])
    }

    /// A lab with extra `shoal lab up` arguments (`--managers 3`,
    /// `--daemon-arg=...`).
    pub fn up_with(nodes: u32, endpoints: u32, accel: &str, extra: &[&str]) -> Self {
        let name = unique_name();
        let lab = Lab { name: name.clone() };
        let (n, e) = (nodes.to_string(), endpoints.to_string());
        let mut args = vec![
            "lab",
            "up",
            "--name",
            &name,
            "--nodes",
            &n,
            "--endpoints",
            &e,
            "--accel",
            accel,
        ];
        args.extend_from_slice(extra);
        shoal_ok(&args);
        lab
    }

    /// The outside client's namespace (`shoal lab ls`'s first client).
    pub fn outside(&self) -> String {
        let ls: serde_json::Value = serde_json::from_str(&ok(shoal(&[
            "lab", "ls", "--name", &self.name, "--format", "json",
        ])))
        .unwrap();
        ls["clients"][0]["netns"].as_str().unwrap().to_string()
    }

    pub fn info(&self) -> LabInfo {
        let out = shoal_ok(&["lab", "ls", "--name", &self.name, "--format", "json"]);
        serde_json::from_str(&out).expect("lab ls json")
    }

    /// A node daemon's process, frozen (`freeze(true)`, SIGSTOP: a starved
    /// host) or thawed. Its pid is read while it still answers.
    pub fn daemon(&self, node: &str) -> Daemon {
        let pid = self
            .info()
            .nodes
            .iter()
            .find(|n| n.name == node)
            .and_then(|n| n.pid)
            .unwrap_or_else(|| panic!("{node}'s daemon pid"));
        Daemon { pid }
    }

    /// Runs a command in a lab namespace (`ip netns exec`), killed after
    /// 60 s so a hung client cannot hang the suite.
    pub fn run(&self, netns: &str, cmd: &[&str]) -> Output {
        Command::new("timeout")
            .args(["60", "ip", "netns", "exec", netns])
            .args(cmd)
            .output()
            .expect("ip netns exec")
    }

    pub fn run_ok(&self, netns: &str, cmd: &[&str]) -> String {
        let out = self.run(netns, cmd);
        assert!(
            out.status.success(),
            "in {netns}: {} failed: {}{}",
            cmd.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// An endpoint-only lab's gossip key file (`--managers 0`).
    pub fn gossip_key_file(&self) -> String {
        format!("/run/shoal/lab/{}/gossip.key", self.name)
    }

    /// A node's refused-gossip counter (`debug gossip`), 0 when absent.
    pub fn refused(&self, node: &str, reason: &str) -> u64 {
        self.debug_json(node, &["gossip"])["refused"][reason]
            .as_u64()
            .unwrap_or(0)
    }

    /// What a node's agent has logged so far.
    pub fn node_log(&self, node: &str) -> String {
        let path = format!("/run/shoal/lab/{}/nodes/{node}.log", self.name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// For a failed test: each node's warnings, errors, liveness changes
    /// (a node convicted dead replaces its tasks, which a test sees only as
    /// a task gone) and balancer changes (a VIP's backends), the last 40
    /// per node.
    fn print_trouble(&self) {
        let Ok(dir) = std::fs::read_dir(format!("/run/shoal/lab/{}/nodes", self.name)) else {
            return;
        };
        let mut logs: Vec<PathBuf> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        for path in logs {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| {
                    l.contains(" WARN ")
                        || l.contains(" ERROR ")
                        || l.contains("liveness")
                        || l.contains("balanced")
                })
                .collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!("{} ({} lines of trouble):", path.display(), lines.len());
            for l in tail {
                eprintln!("  {l}");
            }
        }
    }

    pub fn debug_json(&self, node: &str, what: &[&str]) -> serde_json::Value {
        let mut args = vec![
            "debug", "--lab", &self.name, "--node", node, "--format", "json",
        ];
        args.extend_from_slice(what);
        serde_json::from_str(&shoal_ok(&args)).expect("debug json")
    }

    /// A node's drop counters by reason, those above zero.
    pub fn drops(&self, node: &str) -> BTreeMap<String, u64> {
        let c = self.debug_json(node, &["drops"]);
        c["drops"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| Some((p[0].as_str()?.to_string(), p[1].as_u64()?)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// A forwarding or drop counter of a node.
    pub fn counter(&self, node: &str, name: &str) -> u64 {
        let c = self.debug_json(node, &["drops"]);
        for list in ["stats", "drops"] {
            for pair in c[list].as_array().unwrap() {
                if pair[0] == name {
                    return pair[1].as_u64().unwrap();
                }
            }
        }
        panic!("no counter {name}")
    }
}

/// A lab node's daemon process (`Lab::daemon`).
pub struct Daemon {
    pid: u32,
}

impl Daemon {
    /// SIGSTOP (true) or SIGCONT (false).
    pub fn freeze(&self, frozen: bool) {
        let sig = if frozen { "-STOP" } else { "-CONT" };
        let pid = self.pid.to_string();
        let ok = Command::new("kill").args([sig, &pid]).status();
        assert!(ok.is_ok_and(|s| s.success()), "kill {sig} {pid}");
    }
}

/// Takes the lab named so down when dropped (also when a test fails), for
/// labs a test makes by running commands rather than with `Lab::up`.
pub struct LabDown(pub String);

impl Drop for LabDown {
    fn drop(&mut self) {
        let _ = shoal(&["lab", "down", "--name", &self.0]);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_trouble();
        }
        let out = shoal(&["lab", "down", "--name", &self.name]);
        if !out.status.success() {
            eprintln!(
                "lab down {} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Runs an iperf3 client against a server started in `server_ns`; returns
/// iperf3's JSON report.
pub fn iperf3(
    lab: &Lab,
    server_ns: &str,
    client_ns: &str,
    server_ip: &str,
    extra: &[&str],
) -> serde_json::Value {
    let port = 5201 + (SEQ.fetch_add(1, Ordering::SeqCst) % 500) as u16;
    let port = port.to_string();
    lab.run_ok(server_ns, &["iperf3", "-s", "-1", "-D", "-p", &port]);
    // The daemonised server needs a moment to listen.
    let mut last = String::new();
    for _ in 0..50 {
        let mut args = vec!["iperf3", "-c", server_ip, "-p", &port, "-J"];
        args.extend_from_slice(extra);
        let out = lab.run(client_ns, &args);
        last = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            return serde_json::from_str(&last).expect("iperf3 json");
        }
        if !last.contains("Connection refused") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("iperf3 {client_ns} -> {server_ip} failed: {last}");
}

/// Sends raw UDP datagrams to `dst` from inside namespace `ns`.
pub fn send_udp(ns: &str, dst: &str, payloads: &[Vec<u8>]) {
    use std::os::fd::AsFd;
    let ns = std::fs::File::open(format!("/run/netns/{ns}")).expect("namespace");
    let dst = dst.to_string();
    let payloads = payloads.to_vec();
    std::thread::spawn(move || {
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        for p in payloads {
            s.send_to(&p, &dst).unwrap();
        }
    })
    .join()
    .unwrap();
}

impl Lab {
    /// Runs `shoal ARGS` inside a lab node, against that node's daemon
    /// (`shoal lab exec NODE -- shoal ...`).
    pub fn shoal_on(&self, node: &str, args: &[&str]) -> Output {
        let bin = shoal_bin();
        let mut full = vec!["lab", "exec", "--name", &self.name, node, "--"];
        let b = bin.to_string_lossy().into_owned();
        full.push(&b);
        full.extend_from_slice(args);
        shoal(&full)
    }

    /// The (VNI, IP) of the remote endpoints in a node's dataplane map.
    pub fn remote_ips(&self, node: &str) -> Vec<String> {
        remote_ips_in(&self.debug_json(node, &["endpoints"]))
    }

    /// Polls until `cond` holds, up to `timeout`; returns how long it took.
    pub fn wait_for(
        &self,
        timeout: std::time::Duration,
        mut cond: impl FnMut() -> bool,
    ) -> Option<std::time::Duration> {
        let t0 = std::time::Instant::now();
        while t0.elapsed() < timeout {
            if cond() {
                return Some(t0.elapsed());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        None
    }

    /// A bare host namespace `LAB-SUFFIX` on the lab's underlay bridge.
    pub fn extra_host(&self, suffix: &str, ip: &str) -> String {
        let info = self.info();
        let ns = format!("{}-{suffix}", self.name);
        let port = format!("{}-{suffix}p", self.name);
        let cmd = format!(
            "ip netns add {ns} && ip -n {ns} link set lo up && \
             ip -n {ul} link add {port} type veth peer name eth0 netns {ns} && \
             ip -n {ul} link set {port} master {br} up && \
             ip -n {ns} link set eth0 up && ip -n {ns} addr add {ip}/24 dev eth0",
            ul = info.underlay_netns,
            br = info.underlay_bridge
        );
        let out = Command::new("sh").args(["-ec", &cmd]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        ns
    }

    /// Starts a `shoal daemon` (not a lab node) in namespace `ns`; its
    /// state lives under the lab's dirs, so `lab down` removes it.
    pub fn spawn_daemon(
        &self,
        ns: &str,
        node: &str,
        ip: &str,
        cluster_id: &str,
    ) -> (std::process::Child, PathBuf) {
        self.spawn_daemon_with(ns, node, ip, cluster_id, &[])
    }

    /// `spawn_daemon` with extra `shoal daemon` arguments
    /// (`--insecure-gossip`, `--gossip-key-file PATH`, ...).
    pub fn spawn_daemon_with(
        &self,
        ns: &str,
        node: &str,
        ip: &str,
        cluster_id: &str,
        extra: &[&str],
    ) -> (std::process::Child, PathBuf) {
        let data = PathBuf::from(format!("/run/shoal/lab/{}/nodes/{node}", self.name));
        std::fs::create_dir_all(&data).unwrap();
        let socket = data.join("shoal.sock");
        let log = std::fs::File::create(data.with_extension("log")).unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .arg(shoal_bin())
            .args([
                "daemon",
                "--node-name",
                node,
                "--advertise-addr",
                ip,
                "--cluster-id",
                cluster_id,
            ])
            .args(["--join", "198.18.0.1:7946", "--gossip-interval-ms", "200"])
            .arg("--data-dir")
            .arg(&data)
            .arg("--bpffs-dir")
            .arg(format!("/sys/fs/bpf/shoal-lab/{}/{node}", self.name))
            .arg("--socket")
            .arg(&socket)
            .args(extra)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let ok = self.wait_for(std::time::Duration::from_secs(20), || socket.exists());
        assert!(ok.is_some(), "daemon {node} did not come up");
        (child, socket)
    }
}

/// The addresses of the remote endpoints in `shoal debug endpoints
/// --format json` (a lab node's or a host's).
pub fn remote_ips_in(endpoints: &serde_json::Value) -> Vec<String> {
    endpoints
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "remote")
        .map(|e| e["ip"].as_str().unwrap().to_string())
        .collect()
}

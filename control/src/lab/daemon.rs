//! Starting and stopping a lab node's agent: `shoal daemon` run inside the
//! node's namespace (setns in the child, no new mount namespace, so bpffs
//! stays visible), detached into its own session, logging to a file.

use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{Lab, LabNode};
use crate::wire::{AgentState, STATE_FILE};

/// PID of the node's agent if it is alive.
pub fn running_pid(node: &LabNode) -> Option<u32> {
    let text = std::fs::read_to_string(node.data_dir.join(STATE_FILE)).ok()?;
    let st: AgentState = serde_json::from_str(&text).ok()?;
    alive(st.pid).then_some(st.pid)
}

fn alive(pid: u32) -> bool {
    // A zombie counts as dead: it only waits to be reaped.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// Gossip tuning of lab daemons (the defaults, spelled out for the tests).
pub const GOSSIP_INTERVAL_MS: u64 = 200;

/// Starts the node's agent and waits until it serves its API.
pub fn start_node(lab: &Lab, node: &LabNode) -> Result<u32> {
    std::fs::create_dir_all(&node.data_dir)?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&node.log)?;
    let ns = File::open(shoal_dataplane::netns::NetNs::path_of(&node.netns))
        .with_context(|| format!("namespace {} of node {}", node.netns, node.name))?;
    let _ = std::fs::remove_file(node.data_dir.join(STATE_FILE));
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("daemon")
        .args(["--node-name", &node.name])
        .args(["--advertise-addr", &node.underlay_ip.to_string()])
        .args(["--underlay-dev", &node.underlay_dev])
        .arg("--data-dir")
        .arg(&node.data_dir)
        .arg("--bpffs-dir")
        .arg(&node.bpffs_dir)
        .arg("--socket")
        .arg(node.socket())
        .args(["--cluster-id", &lab.name])
        .args(["--gossip-interval-ms", &GOSSIP_INTERVAL_MS.to_string()])
        .args(seeds(lab, node))
        .args(["--accel", &lab.accel])
        .arg("--task-netns-prefix")
        .arg(format!("{}-{}-t", lab.name, node.name))
        // Lab traffic stays in the lab: no forwarding to the host's
        // resolvers unless `--daemon-arg --dns=IP` names one inside it.
        .args(["--dns", "none"])
        // Docker's metrics port, on the node's underlay address.
        .arg("--metrics-addr")
        .arg(node.underlay_ip.to_string())
        .args(
            lab.gossip_key_file
                .iter()
                .flat_map(|k| [std::ffi::OsStr::new("--gossip-key-file"), k.as_os_str()]),
        )
        .args(&lab.daemon_args)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: only async-signal-safe syscalls (setns, setsid) between fork
    // and exec.
    unsafe {
        cmd.pre_exec(move || {
            setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("spawn shoal daemon")?;
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if running_pid(node) == Some(pid) {
            // Reap it in the background if it ever exits while we live.
            std::thread::spawn(move || child.wait());
            return Ok(pid);
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "agent of {} exited ({status}) before it was ready:\n{}",
                node.name,
                log_tail(node)
            );
        }
        if Instant::now() > deadline {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            bail!(
                "agent of {} was not ready within 30 s:\n{}",
                node.name,
                log_tail(node)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops the node's agent: SIGTERM (it leaves the cluster; peers drop its
/// endpoints at once) or, for a restart, SIGUSR1 (no goodbye). SIGKILL
/// after 5 s. The dataplane stays attached either way.
pub fn stop_node(node: &LabNode, restarting: bool) -> Result<()> {
    let Some(pid) = running_pid(node) else {
        return Ok(());
    };
    stop_pid(
        pid,
        if restarting {
            Signal::SIGUSR1
        } else {
            Signal::SIGTERM
        },
    );
    Ok(())
}

pub(super) fn stop_pid(pid: u32, sig: Signal) {
    let p = Pid::from_raw(pid as i32);
    let _ = kill(p, sig);
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if alive(pid) {
        let _ = kill(p, Signal::SIGKILL);
    }
}

/// `--join SEED`: every node joins through the first node, the first
/// through the second; none with `no_join`.
fn seeds(lab: &Lab, node: &LabNode) -> Vec<String> {
    if lab.no_join {
        return vec![];
    }
    let others: Vec<&LabNode> = lab.nodes.iter().filter(|n| n.name != node.name).collect();
    let seed = if node.name == lab.nodes[0].name {
        others.first()
    } else {
        Some(&&lab.nodes[0])
    };
    let seed = seed.map_or(node.underlay_ip, |s| s.underlay_ip);
    vec!["--join".into(), format!("{seed}:7946")]
}

pub fn restart_node(lab: &Lab, name: &str) -> Result<u32> {
    let node = lab.node(name)?;
    stop_node(node, true)?;
    start_node(lab, node)
}

/// Stops a node's agent gracefully (it leaves the cluster).
pub fn stop_node_by_name(lab: &Lab, name: &str) -> Result<()> {
    stop_node(lab.node(name)?, false)
}

/// Starts a stopped node's agent (no-op when it runs).
pub fn start_node_by_name(lab: &Lab, name: &str) -> Result<u32> {
    let node = lab.node(name)?;
    if let Some(pid) = running_pid(node) {
        return Ok(pid);
    }
    start_node(lab, node)
}

/// SIGKILLs a node's agent: no goodbye, peers must detect the failure.
/// The dataplane stays attached.
pub fn kill_node(lab: &Lab, name: &str) -> Result<u32> {
    let node = lab.node(name)?;
    let Some(pid) = running_pid(node) else {
        bail!("the agent of {name} is not running");
    };
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    while alive(pid) {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Its state file would still name the dead PID's socket.
    let _ = std::fs::remove_file(node.data_dir.join(STATE_FILE));
    Ok(pid)
}

fn log_tail(node: &LabNode) -> String {
    let text = std::fs::read_to_string(&node.log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

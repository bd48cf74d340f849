//! `shoal lab`: a whole cluster on one machine. Hosts are network
//! namespaces on an underlay bridge (itself in a namespace, so nothing
//! touches the root namespace), each with its own node agent, state dir and
//! bpffs pin dir. Every namespace and link carries the prefix `LAB-`.

mod daemon;
mod down;
pub mod peers;
pub mod sim;
mod swarm;
mod up;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

pub use daemon::{kill_node, restart_node, start_node_by_name, stop_node_by_name};
pub use down::down;
pub use up::{up, UpOptions};

/// Root of all lab state (one directory per lab).
pub const STATE_ROOT: &str = "/run/shoal/lab";
/// Root of all lab pin dirs on bpffs.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf/shoal-lab";

/// The lab as `shoal lab ls --format json` prints it: a stable interface.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Lab {
    pub name: String,
    pub accel: String,
    /// Namespace holding the underlay bridge.
    pub underlay_netns: String,
    pub underlay_bridge: String,
    pub nodes: Vec<LabNode>,
    pub networks: Vec<crate::wire::Network>,
    pub endpoints: Vec<LabEndpoint>,
    /// The first this many nodes are swarm managers (0: no swarm).
    #[serde(default)]
    pub managers: u32,
    /// Extra `shoal daemon` arguments every node's agent gets (kept for
    /// restarts).
    #[serde(default)]
    pub daemon_args: Vec<String>,
    /// The daemons start with no `--join` seed, as a .deb install runs
    /// them: gossip finds its peers through the swarm's managers.
    #[serde(default)]
    pub no_join: bool,
    /// Hosts on the underlay that are no cluster node (`client`): where
    /// users and tests try published ports from outside the cluster.
    #[serde(default)]
    pub clients: Vec<LabClient>,
    /// An endpoint-only lab's gossip key (`--gossip-key-file` of every
    /// daemon); a swarm lab's nodes get theirs from the managers.
    #[serde(default)]
    pub gossip_key_file: Option<PathBuf>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabClient {
    pub name: String,
    pub netns: String,
    pub underlay_ip: std::net::Ipv4Addr,
}

/// An endpoint the lab asked a node's daemon to create.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabEndpoint {
    pub name: String,
    pub netns: String,
    pub node: String,
    pub network: String,
    pub vni: u32,
    pub ip: Ipv4Addr,
    pub mac: String,
    /// Host-side veth on the node (named by the daemon).
    pub host_if: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabNode {
    pub name: String,
    pub netns: String,
    pub underlay_ip: Ipv4Addr,
    pub underlay_dev: String,
    pub data_dir: PathBuf,
    pub bpffs_dir: PathBuf,
    pub log: PathBuf,
    /// PID of the node agent, when it is running.
    pub pid: Option<u32>,
}

impl LabNode {
    /// The node daemon's API socket.
    pub fn socket(&self) -> PathBuf {
        self.data_dir.join("shoal.sock")
    }
}

impl Lab {
    pub fn state_dir(name: &str) -> PathBuf {
        Path::new(STATE_ROOT).join(name)
    }

    pub fn bpffs_dir(name: &str) -> PathBuf {
        Path::new(BPFFS_ROOT).join(name)
    }

    fn lab_path(name: &str) -> PathBuf {
        Self::state_dir(name).join("lab.json")
    }

    pub fn exists(name: &str) -> bool {
        Self::lab_path(name).exists()
    }

    /// Loads the lab and refreshes each node's agent PID from its state file.
    pub fn load(name: &str) -> Result<Self> {
        validate_name(name)?;
        let path = Self::lab_path(name);
        let text = std::fs::read_to_string(&path).map_err(|_| {
            anyhow::anyhow!("no lab named {name:?} (start one with `shoal lab up --name {name}`)")
        })?;
        let mut lab: Lab =
            serde_json::from_str(&text).with_context(|| format!("bad {}", path.display()))?;
        for n in &mut lab.nodes {
            n.pid = daemon::running_pid(n);
        }
        Ok(lab)
    }

    pub fn save(&self) -> Result<()> {
        std::fs::create_dir_all(Self::state_dir(&self.name))?;
        crate::files::write_atomic(
            &Self::lab_path(&self.name),
            &serde_json::to_vec_pretty(self)?,
        )
    }

    pub fn node(&self, name: &str) -> Result<&LabNode> {
        self.nodes.iter().find(|n| n.name == name).with_context(|| {
            let names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
            format!(
                "lab {} has no node {name:?} (nodes: {})",
                self.name,
                names.join(", ")
            )
        })
    }

    /// The namespace of a node, an endpoint, a client or the underlay (`ul`).
    pub fn netns_of(&self, target: &str) -> Result<String> {
        if target == "ul" || target == "underlay" {
            return Ok(self.underlay_netns.clone());
        }
        if let Some(n) = self.nodes.iter().find(|n| n.name == target) {
            return Ok(n.netns.clone());
        }
        if let Some(e) = self.endpoints.iter().find(|e| e.name == target) {
            return Ok(e.netns.clone());
        }
        if let Some(c) = self.clients.iter().find(|c| c.name == target) {
            return Ok(c.netns.clone());
        }
        bail!(
            "lab {} has no node, endpoint or client named {target:?} (see `shoal lab ls --name {}`)",
            self.name,
            self.name
        )
    }
}

/// Lab names become namespace and link prefixes (links have 15 characters).
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 6
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    {
        bail!("invalid lab name {name:?}: use 1-6 lowercase letters or digits");
    }
    Ok(())
}

/// Runs a command inside one of the lab's namespaces, replacing this process.
pub fn exec(lab: &Lab, target: &str, cmd: &[String]) -> Result<()> {
    use std::os::unix::process::CommandExt;
    if cmd.is_empty() {
        bail!("no command given: shoal lab exec {target} -- CMD [ARGS...]");
    }
    let ns = shoal_dataplane::netns::NetNs::open(&lab.netns_of(target)?)?;
    // `shoal` run there is that node's (an endpoint's: its node's).
    let node = lab.nodes.iter().find(|n| n.name == target).or_else(|| {
        lab.endpoints
            .iter()
            .find(|e| e.name == target)
            .and_then(|e| lab.nodes.iter().find(|n| n.name == e.node))
    });
    ns.enter()?;
    let mut command = std::process::Command::new(&cmd[0]);
    command.args(&cmd[1..]);
    if let Some(n) = node {
        // Every per-node default a `shoal` there would take on a real host
        // (socket, pin dir, data dir, node name) points at this node's.
        command
            .env("SHOAL_SOCKET", n.socket())
            .env("SHOAL_BPFFS_DIR", &n.bpffs_dir)
            .env("SHOAL_DATA_DIR", &n.data_dir)
            .env("SHOAL_NODE", &n.name);
    }
    let err = command.exec();
    bail!("cannot run {}: {err}", cmd[0])
}

/// One row of `shoal lab check`.
#[derive(Clone, Debug, Serialize)]
pub struct PathCheck {
    pub from: String,
    pub to: String,
    pub ip: Ipv4Addr,
    pub same_node: bool,
    pub ok: bool,
    pub rtt_ms: Option<f64>,
}

/// Pings every endpoint from every other (real `ping`, run inside the
/// source endpoint's namespace): the lab's connectivity matrix.
pub fn check(lab: &Lab) -> Result<Vec<PathCheck>> {
    use std::os::fd::AsFd;
    use std::os::unix::process::CommandExt;
    let mut out = vec![];
    for a in &lab.endpoints {
        let ns = std::fs::File::open(shoal_dataplane::netns::NetNs::path_of(&a.netns))
            .with_context(|| format!("namespace of {}", a.name))?;
        for b in lab.endpoints.iter().filter(|b| b.name != a.name) {
            let ns = ns.try_clone()?;
            let mut cmd = std::process::Command::new("ping");
            cmd.args(["-c", "1", "-W", "2", &b.ip.to_string()]);
            // SAFETY: only setns between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(std::io::Error::from)
                });
            }
            let res = cmd
                .output()
                .context("run ping (apt-get install iputils-ping)")?;
            let text = String::from_utf8_lossy(&res.stdout);
            let rtt_ms = text
                .split("time=")
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .and_then(|s| s.parse().ok());
            out.push(PathCheck {
                from: a.name.clone(),
                to: b.name.clone(),
                ip: b.ip,
                same_node: a.node == b.node,
                ok: res.status.success(),
                rtt_ms,
            });
        }
    }
    Ok(out)
}

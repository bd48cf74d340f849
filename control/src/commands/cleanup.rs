//! `shoal cleanup`: removes what a stopped daemon left on this host, for a
//! package removal (the .deb's prerm runs it) or by hand. A stopped daemon
//! leaves its dataplane attached on purpose (local traffic keeps flowing
//! and a restart takes it over), so nothing else ever removes it.
//!
//! Removed: the tasks (their processes and namespaces, the ingress
//! sandbox and the balancer's namespaces: every namespace with the task
//! prefix), the pinned maps and links (which detaches the underlay's and
//! endpoints' programs), the underlay's tc filters on kernels without TCX,
//! the encrypted networks' xfrm policies, SAs and interface, the API
//! socket; with `--purge` also the data dir (identity, Raft state).
//! Refused while a daemon holds the data dir.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use shoal_dataplane::netns::NetNs;

use super::daemon::DEFAULT_BPFFS_DIR;

#[derive(Args, Debug)]
pub struct CleanupArgs {
    /// The daemon's data dir (as given to `shoal daemon`).
    #[arg(long, env = "SHOAL_DATA_DIR", default_value = "/var/lib/shoal")]
    pub data_dir: PathBuf,
    /// Where the daemon pinned its maps and links.
    #[arg(long, env = "SHOAL_BPFFS_DIR", default_value = DEFAULT_BPFFS_DIR)]
    pub bpffs_dir: PathBuf,
    /// The daemon's API socket.
    #[arg(long, env = "SHOAL_SOCKET", default_value = crate::api::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// The daemon's task namespace prefix.
    #[arg(long, default_value = "shoal-t")]
    pub task_netns_prefix: String,
    /// Also remove the data dir: the node's identity and Raft state (it
    /// can only join a swarm again as a new node).
    #[arg(long)]
    pub purge: bool,
}

pub fn run(a: CleanupArgs) -> Result<()> {
    if a.task_netns_prefix.len() < 2 {
        bail!(
            "--task-netns-prefix {:?} would match namespaces that are not Shoal's",
            a.task_netns_prefix
        );
    }
    ensure_stopped(&a.data_dir)?;
    let namespaces = NetNs::list(&a.task_netns_prefix);
    // A task's processes keep its namespace alive after the name is gone.
    NetNs::kill_processes_in(&namespaces);
    for ns in &namespaces {
        NetNs::delete(ns).with_context(|| format!("namespace {ns}"))?;
    }
    say("namespaces", namespaces.len(), &namespaces.join(" "));
    // Pins after the namespaces (the endpoints' veths are gone), and
    // detaching the underlay's programs with their links.
    let pinned = a.bpffs_dir.exists();
    shoal_dataplane::overlay::remove_pins(&a.bpffs_dir)?;
    say(
        "pins",
        usize::from(pinned),
        &a.bpffs_dir.display().to_string(),
    );
    let rt = super::runtime()?;
    let links = rt.block_on(async {
        shoal_dataplane::netlink::Netlink::connect()?
            .link_names()
            .await
    })?;
    let filtered = shoal_dataplane::overlay::remove_underlay_filters(&links);
    say("underlay filters", filtered.len(), &filtered.join(" "));
    let qdiscs: Vec<String> = filtered
        .into_iter()
        .filter(|i| drop_empty_clsact(i))
        .collect();
    say("clsact qdiscs", qdiscs.len(), &qdiscs.join(" "));
    let (policies, sas, devices) = shoal_dataplane::ipsec::remove_all()?;
    say("xfrm policies", policies, "");
    say("xfrm SAs", sas, "");
    say("encrypted networks' vxlan devices", devices, "");
    let socket = a.socket.exists();
    if socket {
        std::fs::remove_file(&a.socket).with_context(|| a.socket.display().to_string())?;
    }
    // Its directory too when nothing else (a lab) lives there.
    if let Some(dir) = a.socket.parent() {
        let _ = std::fs::remove_dir(dir);
    }
    say(
        "API socket",
        usize::from(socket),
        &a.socket.display().to_string(),
    );
    if a.purge {
        let present = a.data_dir.exists();
        if present {
            std::fs::remove_dir_all(&a.data_dir)
                .with_context(|| format!("remove {}", a.data_dir.display()))?;
        }
        say(
            "data dir",
            usize::from(present),
            &a.data_dir.display().to_string(),
        );
    }
    Ok(())
}

/// Removes the clsact qdisc of `ifname` when no filter is left in it (the
/// daemon added it for the underlay's filter; someone else's filters keep
/// it). Through iproute2's `tc`, as the xfrm code uses `ip`: the package
/// depends on iproute2.
fn drop_empty_clsact(ifname: &str) -> bool {
    let empty = ["ingress", "egress"].iter().all(|dir| {
        std::process::Command::new("tc")
            .args(["filter", "show", "dev", ifname, dir])
            .output()
            .is_ok_and(|o| o.status.success() && o.stdout.is_empty())
    });
    empty
        && std::process::Command::new("tc")
            .args(["qdisc", "del", "dev", ifname, "clsact"])
            .output()
            .is_ok_and(|o| o.status.success())
}

/// One line of the report: what, how many, which.
fn say(what: &str, n: usize, which: &str) {
    if n == 0 {
        println!("{what}: none");
    } else if which.is_empty() {
        println!("{what}: {n} removed");
    } else {
        println!("{what}: {n} removed ({which})");
    }
}

/// Refuses while a daemon runs on `data_dir` (it holds the dir's lock).
fn ensure_stopped(data_dir: &Path) -> Result<()> {
    let path = data_dir.join("lock");
    let Ok(f) = File::open(&path) else {
        return Ok(());
    };
    // SAFETY: flock on a file descriptor we own; released when it closes.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        bail!(
            "a shoal daemon is running on data dir {} (stop it first: systemctl stop shoal)",
            data_dir.display()
        );
    }
    Ok(())
}

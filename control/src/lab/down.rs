//! `shoal lab down`: stops the agents, removes every pin, namespace and
//! state file of the lab. Works from whatever is left, even when lab.json
//! is gone or the lab was only half built.

use anyhow::Result;
use shoal_dataplane::netns::NetNs;

use super::{daemon, Lab};

pub fn down(name: &str) -> Result<()> {
    super::validate_name(name)?;
    let state_dir = Lab::state_dir(name);
    // Every agent of this lab, found by its data dir on the command line
    // (also agents the lab file no longer knows about).
    let marker = format!("{}/", state_dir.to_string_lossy());
    for pid in agents_with(&marker) {
        daemon::stop_pid(pid, nix::sys::signal::Signal::SIGTERM);
    }
    // Pins first: detaching the programs before the devices disappear.
    shoal_dataplane::overlay::remove_pins(&Lab::bpffs_dir(name))?;
    // The shared roots go too once the last lab is gone.
    let _ = std::fs::remove_dir(super::BPFFS_ROOT);
    let namespaces = NetNs::list(&format!("{name}-"));
    // Whatever still runs inside the lab (test clients, servers) would keep
    // its namespace alive after the name is gone.
    NetNs::kill_processes_in(&namespaces);
    for ns in namespaces {
        NetNs::delete(&ns)?;
    }
    if state_dir.exists() {
        std::fs::remove_dir_all(&state_dir)?;
    }
    let _ = std::fs::remove_dir(super::STATE_ROOT);
    Ok(())
}

/// PIDs of `shoal daemon` processes whose arguments mention `marker`.
fn agents_with(marker: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
        .filter(|pid| {
            let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<String> = raw
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            args.iter().any(|a| a == "daemon") && args.iter().any(|a| a.starts_with(marker))
        })
        .collect()
}

//! `shoal daemon`: the node agent.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use clap::Args;
use shoal_dataplane::overlay::Accel;

use crate::agent::{self, AgentConfig};

#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// This node's name (default: the hostname).
    #[arg(long)]
    pub node_name: Option<String>,
    /// Underlay address other nodes reach this node at (its VTEP).
    #[arg(long)]
    pub advertise_addr: Ipv4Addr,
    /// Underlay device (default: the device holding --advertise-addr).
    #[arg(long)]
    pub underlay_dev: Option<String>,
    #[arg(long, default_value = "/var/lib/shoal")]
    pub data_dir: PathBuf,
    /// Where the dataplane's maps and links are pinned.
    #[arg(long, default_value = "/sys/fs/bpf/shoal")]
    pub bpffs_dir: PathBuf,
    /// A static endpoint table to program (the lab writes one).
    #[arg(long)]
    pub static_table: Option<PathBuf>,
    /// Which hooks carry the overlay: auto, tc or xdp.
    #[arg(long, default_value = "auto", value_parser = parse_accel)]
    pub accel: Accel,
    /// UDP port of the VXLAN data path.
    #[arg(long, default_value_t = 4789)]
    pub data_path_port: u16,
}

fn parse_accel(s: &str) -> Result<Accel, String> {
    s.parse().map_err(|e: shoal_dataplane::Error| e.to_string())
}

pub fn run(a: DaemonArgs) -> anyhow::Result<()> {
    let node_name = match a.node_name {
        Some(n) => n,
        None => nix::unistd::gethostname()?.to_string_lossy().into_owned(),
    };
    let cfg = AgentConfig {
        node_name,
        advertise_addr: a.advertise_addr,
        underlay_dev: a.underlay_dev,
        data_dir: a.data_dir,
        bpffs_dir: a.bpffs_dir,
        static_table: a.static_table,
        accel: a.accel,
        vxlan_port: a.data_path_port,
    };
    super::runtime()?.block_on(agent::run(cfg))
}

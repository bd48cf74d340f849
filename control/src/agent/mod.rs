//! The node agent (`shoal daemon`): owns the node's dataplane. It loads the
//! overlay (maps pinned under its bpffs dir), attaches decap to the underlay
//! device, plumbs the endpoints that live on this node and programs every
//! endpoint of the table into the maps.
//!
//! Stopping the agent detaches nothing: links and maps are pinned, so
//! traffic keeps flowing and a restarted agent picks up the same state.

pub mod endpoint;

use std::collections::BTreeSet;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use shoal_dataplane::ebpf::{Config, EpValue, IfaceValue, EP_F_LOCAL, EP_F_REMOTE};
use shoal_dataplane::netlink::{self, Netlink};
use shoal_dataplane::overlay::{ip_key, Accel, Hook, Hooks, Maps, Overlay};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

use crate::table::Table;

/// Everything the agent is told at start.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub node_name: String,
    pub advertise_addr: Ipv4Addr,
    pub underlay_dev: Option<String>,
    pub data_dir: PathBuf,
    pub bpffs_dir: PathBuf,
    pub static_table: Option<PathBuf>,
    pub accel: Accel,
    pub vxlan_port: u16,
}

/// Written to DATA_DIR/agent.json once the agent has programmed its table;
/// the lab waits for it, `shoal debug` reads where the maps are.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgentState {
    pub pid: u32,
    pub node: String,
    pub underlay_dev: String,
    pub vtep: Ipv4Addr,
    pub hooks: Hooks,
    pub bpffs_dir: PathBuf,
    pub local_endpoints: usize,
    pub remote_endpoints: usize,
}

pub const STATE_FILE: &str = "agent.json";

/// Holds an exclusive lock on the data dir for the agent's lifetime.
struct DirLock(#[allow(dead_code)] File);

fn lock_data_dir(dir: &std::path::Path) -> Result<DirLock> {
    std::fs::create_dir_all(dir).with_context(|| format!("create data dir {}", dir.display()))?;
    let path = dir.join("lock");
    let f = File::create(&path).with_context(|| format!("create {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        bail!(
            "another shoal daemon is already using data dir {}",
            dir.display()
        );
    }
    Ok(DirLock(f))
}

pub async fn run(cfg: AgentConfig) -> Result<()> {
    let _lock = lock_data_dir(&cfg.data_dir)?;
    let state_path = cfg.data_dir.join(STATE_FILE);
    let _ = std::fs::remove_file(&state_path);

    let nl = Netlink::connect()?;
    let dev = match &cfg.underlay_dev {
        Some(d) => d.clone(),
        None => nl.dev_of_addr(cfg.advertise_addr).await?.with_context(|| {
            format!(
                "no device holds the advertise address {}",
                cfg.advertise_addr
            )
        })?,
    };
    let ul_index = nl
        .require_index(&dev)
        .await
        .with_context(|| format!("underlay device {dev}"))?;
    let ul_mtu = nl.link_mtu(&dev).await?;
    let hooks = cfg.accel.hooks(nl.is_virtual(&dev).await?);
    // bpf_fib_lookup refuses to resolve the VTEP next hop unless forwarding
    // is on for the underlay device.
    netlink::sysctl(&format!("net.ipv4.conf.{dev}.forwarding"), "1")?;

    let mut overlay = Overlay::load(&cfg.bpffs_dir, hooks)?;
    let mut maps = overlay.maps()?;
    maps.set_config(Config {
        underlay_ifindex: ul_index,
        vtep_ip: ip_key(cfg.advertise_addr),
        vxlan_port: cfg.vxlan_port.to_be(),
        ..Default::default()
    })?;
    overlay.attach_underlay(&dev)?;
    info!(node = %cfg.node_name, %dev, vtep = %cfg.advertise_addr, ?hooks, "dataplane attached");

    let mut agent = Agent {
        cfg,
        nl,
        overlay,
        maps,
        ul_mtu,
        dev,
    };
    agent.apply_table().await?;

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                info!("SIGHUP: re-reading the endpoint table");
                if let Err(e) = agent.apply_table().await {
                    warn!("re-applying the table failed: {e:#}");
                }
            }
        }
    }
    info!("stopping; dataplane stays attached (pinned)");
    let _ = std::fs::remove_file(&state_path);
    Ok(())
}

struct Agent {
    cfg: AgentConfig,
    nl: Netlink,
    overlay: Overlay,
    maps: Maps,
    ul_mtu: u32,
    dev: String,
}

impl Agent {
    /// Programs the static table: plumbs this node's endpoints and writes
    /// every endpoint into the maps. Idempotent; entries it does not know
    /// (e.g. `shoal debug peer add`) are left alone.
    async fn apply_table(&mut self) -> Result<()> {
        let Some(path) = &self.cfg.static_table else {
            self.write_state(0, 0)?;
            return Ok(());
        };
        let table = Table::load(path)?;
        let me = self.cfg.node_name.clone();
        let mtu = self.ul_mtu - shoal_dataplane::ebpf::ENCAP_LEN;
        let behind_xdp = self.overlay.hooks().endpoint == Hook::Xdp;
        let (mut local, mut remote) = (0, 0);
        let mut vteps = BTreeSet::new();
        for ep in &table.endpoints {
            let net = table.network(&ep.network).with_context(|| {
                format!("endpoint {} names unknown network {}", ep.name, ep.network)
            })?;
            let (ip, mac) = endpoint::parse_ip_mac(ep)?;
            if ep.node == me {
                let p = endpoint::ensure(&self.nl, ep, net, mac, mtu, behind_xdp).await?;
                self.overlay.attach_endpoint(&ep.host_if)?;
                self.maps.set_iface(
                    p.host_ifindex,
                    IfaceValue {
                        vni: net.vni,
                        ip: ip_key(ip),
                        gateway: ip_key(net.gateway),
                        prefix_len: net.prefix_len as u32,
                        mac,
                        host_mac: p.host_mac,
                    },
                )?;
                self.maps.upsert_endpoint(
                    net.vni,
                    ip,
                    EpValue {
                        ifindex: p.host_ifindex,
                        vtep: 0,
                        mac,
                        flags: EP_F_LOCAL,
                    },
                )?;
                self.maps.add_vni(net.vni)?;
                local += 1;
            } else {
                let node = table.node(&ep.node).with_context(|| {
                    format!("endpoint {} names unknown node {}", ep.name, ep.node)
                })?;
                self.maps.upsert_endpoint(
                    net.vni,
                    ip,
                    EpValue {
                        ifindex: 0,
                        vtep: ip_key(node.underlay_ip),
                        mac,
                        flags: EP_F_REMOTE,
                    },
                )?;
                vteps.insert(node.underlay_ip);
                remote += 1;
            }
        }
        if self.overlay.hooks().endpoint == Hook::Xdp {
            // XDP cannot wait for ARP: keep the VTEPs' MACs resolved.
            let ul = self.nl.require_index(&self.dev).await?;
            for v in vteps {
                self.nl.add_managed_neigh(ul, v).await?;
            }
        }
        info!(local, remote, "endpoint table programmed");
        self.write_state(local, remote)
    }

    fn write_state(&self, local: usize, remote: usize) -> Result<()> {
        let st = AgentState {
            pid: std::process::id(),
            node: self.cfg.node_name.clone(),
            underlay_dev: self.dev.clone(),
            vtep: self.cfg.advertise_addr,
            hooks: self.overlay.hooks(),
            bpffs_dir: self.cfg.bpffs_dir.clone(),
            local_endpoints: local,
            remote_endpoints: remote,
        };
        let path = self.cfg.data_dir.join(STATE_FILE);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&st)?)?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }
}

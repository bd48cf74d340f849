//! The node agent (`shoal daemon`): owns the node's dataplane, serves the
//! local API, and gossips endpoint tables with the other nodes.
//!
//! Stopping the agent detaches nothing: links and maps are pinned, so
//! traffic keeps flowing and a restarted agent picks up the same state.

pub mod dns;
pub mod endpoint;
pub mod flows;
pub mod lb;
mod local_table;
pub mod mesh;
pub mod mesh_local;
mod scrape;
mod service;
pub mod store;
mod swarm;
pub mod sync;
pub mod tasks;

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use shoal_dataplane::ebpf::Config;
use shoal_dataplane::netlink::{self, Netlink};
use shoal_dataplane::overlay::{ip_key, Accel, Hooks, Overlay};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{Mutex, Notify};
use tracing::info;

use crate::gossip::{Gossip, GossipConfig};
use crate::wire::NodeInfo;
use store::{State, Store};
use sync::Programmer;

pub use service::Agent;

/// Everything the agent is told at start.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub node_name: String,
    pub advertise_addr: Ipv4Addr,
    /// Gossip listen address (default: 0.0.0.0:7946).
    pub listen_addr: SocketAddr,
    pub underlay_dev: Option<String>,
    pub data_dir: PathBuf,
    pub bpffs_dir: PathBuf,
    pub socket: PathBuf,
    pub join: Vec<String>,
    pub cluster_id: String,
    pub accel: Accel,
    pub vxlan_port: u16,
    pub gossip_interval: Duration,
    pub phi_threshold: f64,
    /// Manager control plane port (Docker's 2377).
    pub control_port: u16,
    pub raft: crate::raft::manager::Options,
    /// Task namespaces are named this + 12 characters of the task id.
    pub task_netns_prefix: String,
    /// Where the tasks' resolver forwards names it does not know.
    pub dns_upstreams: Vec<SocketAddr>,
    /// TTL of the cluster's DNS answers, seconds.
    pub dns_ttl: u32,
    pub dns_max_forwards: usize,
    /// Maglev table size of every service (a prime of `lb::maglev::SIZES`).
    pub maglev_size: u32,
    /// The VIP balancer (`auto`: eBPF).
    pub lb: crate::wire::LbMode,
    /// Where `/metrics` is served, if anywhere.
    pub metrics_addr: Option<SocketAddr>,
    /// Flow records kept for `debug flows` (0: no flow log).
    pub flow_log_size: usize,
}

/// Written to DATA_DIR/agent.json once the agent serves its API; the lab
/// waits for it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgentState {
    pub pid: u32,
    pub node: String,
    pub socket: PathBuf,
    pub underlay_dev: String,
    pub vtep: Ipv4Addr,
    pub hooks: Hooks,
    pub bpffs_dir: PathBuf,
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

/// Refuses a socket another daemon listens on; removes a stale one.
fn claim_socket(path: &std::path::Path) -> Result<()> {
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        bail!(
            "another shoal daemon is already listening on {}",
            path.display()
        );
    }
    let _ = std::fs::remove_file(path);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    Ok(())
}

fn generation() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub async fn run(cfg: AgentConfig) -> Result<()> {
    let _lock = lock_data_dir(&cfg.data_dir)?;
    claim_socket(&cfg.socket)?;
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
    // The mesh's fields survive a restart (a previous run's, until the
    // first heartbeat): flows through this node keep entering meanwhile.
    let kept = maps.config().unwrap_or_default();
    maps.set_config(Config {
        underlay_ifindex: ul_index,
        vtep_ip: ip_key(cfg.advertise_addr),
        vxlan_port: cfg.vxlan_port.to_be(),
        ingress_vni: kept.ingress_vni,
        ingress_net: kept.ingress_net,
        ingress_prefix: kept.ingress_prefix,
        // IPv4 (20) + TCP (20) + the encapsulation (50).
        mesh_mss: ul_mtu.saturating_sub(90),
        ..Default::default()
    })?;
    overlay.attach_underlay(&dev)?;
    info!(node = %cfg.node_name, %dev, vtep = %cfg.advertise_addr, ?hooks, "dataplane attached");

    let store = Store::new(&cfg.data_dir);
    let state = store.load()?;
    let generation = generation();
    let gossip_cfg = GossipConfig {
        node: cfg.node_name.clone(),
        generation,
        advertise: SocketAddr::new(cfg.advertise_addr.into(), cfg.listen_addr.port()),
        listen: cfg.listen_addr,
        seeds: cfg.join.clone(),
        cluster_id: cfg.cluster_id.clone(),
        interval: cfg.gossip_interval,
        phi_threshold: cfg.phi_threshold,
    };
    let initial = service::records(&state);
    let gossip = Gossip::start(&gossip_cfg, initial).await?;
    // Keep what a previous run programmed until gossip had time to confirm it.
    let programmer = Programmer::new(&maps, cfg.gossip_interval * 25);
    let info = NodeInfo {
        node: cfg.node_name.clone(),
        generation,
        vtep: cfg.advertise_addr,
        gossip_addr: gossip_cfg.advertise,
        cluster_id: cfg.cluster_id.clone(),
        underlay_dev: dev.clone(),
        hooks,
        pid: std::process::id(),
    };
    let lb = match cfg.lb {
        crate::wire::LbMode::Ipvs => {
            lb::ipvs::IpvsLb::probe().context("--lb ipvs")?;
            lb::Lb::Ipvs {
                ipvs: Default::default(),
                mesh: lb::ebpf::LbProgrammer::new(
                    shoal_dataplane::lb::LbMaps::open(&cfg.bpffs_dir)?,
                    cfg.maglev_size,
                ),
            }
        }
        crate::wire::LbMode::Ebpf | crate::wire::LbMode::Auto => {
            lb::Lb::Ebpf(lb::ebpf::LbProgrammer::new(
                shoal_dataplane::lb::LbMaps::open(&cfg.bpffs_dir)?,
                cfg.maglev_size,
            ))
        }
    };
    let cfg = AgentConfig {
        lb: if matches!(lb, lb::Lb::Ipvs { .. }) {
            crate::wire::LbMode::Ipvs
        } else {
            crate::wire::LbMode::Ebpf
        },
        ..cfg
    };
    info!(lb = ?cfg.lb, "VIP balancer");
    let agent = Arc::new(Agent {
        info,
        data_dir: cfg.data_dir.clone(),
        control_port: cfg.control_port,
        raft_opts: cfg.raft.clone(),
        task_netns_prefix: cfg.task_netns_prefix.clone(),
        tasks: Default::default(),
        swarm: Mutex::new(None),
        nl,
        gossip,
        dns: dns::NodeDns::new(shoal_dns::Config {
            ttl: cfg.dns_ttl,
            upstreams: cfg.dns_upstreams.clone(),
            max_inflight: cfg.dns_max_forwards.max(1),
            ..Default::default()
        }),
        mtu: ul_mtu - shoal_dataplane::ebpf::ENCAP_LEN,
        inner: Mutex::new(service::Inner {
            overlay,
            maps,
            state: State::default(),
            store,
            programmer,
            lb,
            mesh: Default::default(),
            relays: Default::default(),
            mesh_ifaces: Default::default(),
            mesh_maps: shoal_dataplane::lb::MeshMaps::open(&cfg.bpffs_dir)?,
        }),
        changed: Notify::new(),
        flows: flows::FlowLog::new(cfg.flow_log_size),
        lb_mode: cfg.lb,
    });
    agent.restore(state).await;
    agent.restore_swarm().await?;

    let sync_task = tokio::spawn(service::sync_loop(agent.clone()));
    tokio::spawn(agent.clone().tasks_loop());
    tokio::spawn(agent.clone().flows_loop(cfg.bpffs_dir.clone()));
    if let Some(addr) = cfg.metrics_addr {
        crate::metrics::serve(agent.clone(), addr).await?;
    }
    let listener = crate::api::server::bind(&cfg.socket)?;
    let shutdown = Arc::new(Notify::new());
    let server = tokio::spawn(crate::api::server::serve(
        listener,
        agent.clone(),
        shutdown.clone(),
    ));

    let st = AgentState {
        pid: std::process::id(),
        node: cfg.node_name.clone(),
        socket: cfg.socket.clone(),
        underlay_dev: dev,
        vtep: cfg.advertise_addr,
        hooks,
        bpffs_dir: cfg.bpffs_dir.clone(),
    };
    let tmp = state_path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&st)?)?;
    std::fs::rename(&tmp, &state_path)?;
    info!(socket = %cfg.socket.display(), gossip = %gossip_cfg.advertise, "serving");

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    // SIGTERM/SIGINT: leaving, peers drop this node's endpoints at once.
    // SIGUSR1: restarting, no goodbye; the next generation takes over the
    // same endpoints before the failure detector convicts this one.
    let leaving = tokio::select! {
        _ = term.recv() => true,
        _ = int.recv() => true,
        _ = usr1.recv() => false,
    };
    info!(leaving, "stopping; the dataplane stays attached (pinned)");
    shutdown.notify_waiters();
    let _ = server.await;
    sync_task.abort();
    if leaving {
        agent.gossip.leave().await;
    }
    let _ = std::fs::remove_file(&cfg.socket);
    let _ = std::fs::remove_file(&state_path);
    Ok(())
}

//! Starting the agent: claim the node (data dir, socket), attach the
//! dataplane to the underlay, start gossip and the balancer, restore the
//! local table and the swarm membership, and start the loops. Serving the
//! local API and metrics over the result is the daemon command's job.

use std::fs::File;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use shoal_dataplane::ebpf::Config;
use shoal_dataplane::netlink::{self, Netlink};
use shoal_dataplane::overlay::{ip_key, Hooks, Maps, Overlay};
use tokio::sync::{Mutex, Notify};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::{dns, flows, lb, sync, Agent, AgentConfig, Inner, Programmer, State, Store};
use crate::gossip::keys::{read_key_file, GossipKeys, SwarmKeys};
use crate::gossip::{Gossip, GossipConfig};
use crate::wire::{LbMode, NodeInfo};

/// A running agent: its shared state, the data dir's lock (held for the
/// agent's life) and the programming loop.
pub struct Started {
    pub agent: Arc<Agent>,
    pub underlay_dev: String,
    pub hooks: Hooks,
    sync_loop: JoinHandle<()>,
    _lock: DirLock,
}

impl Started {
    /// Stops programming; with `leaving`, tells the peers to drop this
    /// node's endpoints at once (a restart says nothing: the next
    /// generation takes them over). The dataplane stays attached.
    pub async fn stop(self, leaving: bool) {
        self.sync_loop.abort();
        if leaving {
            self.agent.gossip.leave().await;
        } else {
            // "Back soon", to the managers and the peers, so a restart
            // slower than their failure detectors moves nothing.
            tokio::join!(self.agent.say_restarting(), self.agent.gossip.pause());
        }
    }
}

pub async fn start(cfg: AgentConfig) -> Result<Started> {
    let lock = lock_data_dir(&cfg.data_dir)?;
    claim_socket(&cfg.socket)?;
    // systemd mounts bpffs at boot; a host booted otherwise may not have.
    if cfg.bpffs_dir.starts_with("/sys/fs/bpf") {
        shoal_dataplane::ensure_bpffs()?;
    }
    let _ = std::fs::remove_file(cfg.data_dir.join(crate::wire::STATE_FILE));

    let nl = Netlink::connect()?;
    let ul = attach_dataplane(&nl, &cfg).await?;
    let store = Store::new(&cfg.data_dir);
    let state = store.load()?;
    let generation = crate::clock::now_ms();
    let keys = gossip_keys(&cfg)?;
    let gossip_cfg = GossipConfig {
        node: cfg.node_name.clone(),
        generation,
        advertise: SocketAddr::new(cfg.advertise_addr.into(), cfg.listen_addr.port()),
        listen: cfg.listen_addr,
        seeds: cfg.join.clone(),
        cluster_id: cfg.cluster_id.clone(),
        interval: cfg.gossip_interval,
        keys,
        peers_file: Some(cfg.data_dir.join(crate::wire::GOSSIP_PEERS_FILE)),
    };
    let gossip = Gossip::start(&gossip_cfg, super::local_table::records(&state)).await?;
    // Keep what a previous run programmed until gossip had time to confirm it.
    let programmer = Programmer::new(&ul.maps, cfg.gossip_interval * 25);
    let info = NodeInfo {
        node: cfg.node_name.clone(),
        generation,
        vtep: cfg.advertise_addr,
        gossip_addr: gossip_cfg.advertise,
        cluster_id: cfg.cluster_id.clone(),
        underlay_dev: ul.dev.clone(),
        hooks: ul.hooks,
        pid: std::process::id(),
    };
    let (lb, lb_mode) = balancer(&cfg)?;
    info!(lb = ?lb_mode, "VIP balancer");
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
        ipsec: super::ipsec::Ipsec::probe(),
        mtu: ul.mtu - shoal_dataplane::ebpf::ENCAP_LEN,
        inner: Mutex::new(Inner {
            overlay: ul.overlay,
            maps: ul.maps,
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
        lb_mode,
        gossip_key_rotation: cfg.gossip_key_rotation,
        min_cert_expiry: cfg.min_cert_expiry,
        sweep: Default::default(),
    });
    agent.restore(state).await;
    agent.restore_swarm().await?;
    agent.restore_attachments().await;

    let sync_loop = tokio::spawn(sync::sync_loop(agent.clone()));
    tokio::spawn(agent.clone().tasks_loop());
    tokio::spawn(agent.clone().flows_loop(cfg.bpffs_dir.clone()));
    tokio::spawn(super::attachments::sweep_loop(agent.clone()));
    Ok(Started {
        agent,
        underlay_dev: ul.dev,
        hooks: ul.hooks,
        sync_loop,
        _lock: lock,
    })
}

/// The gossip keys to start with: the swarm's as a previous run kept
/// them, else the key file's; plaintext only when asked for.
fn gossip_keys(cfg: &AgentConfig) -> Result<Arc<GossipKeys>> {
    let file = match &cfg.gossip_key_file {
        Some(p) => Some(read_key_file(p)?),
        None => None,
    };
    let keys = GossipKeys::new(cfg.insecure_gossip, file, SwarmKeys::load(&cfg.data_dir));
    let v = keys.current().view();
    match v.source.as_str() {
        "insecure" => warn!(
            "--insecure-gossip: gossip on {} travels in clear and unauthenticated until this node joins a swarm; anyone who can reach the port can inject endpoints",
            cfg.listen_addr
        ),
        "none" => info!("no gossip key: gossip sends nothing and refuses everything until this node joins a swarm (or give --gossip-key-file, or --insecure-gossip)"),
        s => info!(source = s, ring = ?v.ring, sealing = ?v.sealing, "gossip sealed"),
    }
    Ok(Arc::new(keys))
}

/// The dataplane as attached to the underlay device.
struct Underlay {
    dev: String,
    mtu: u32,
    hooks: Hooks,
    overlay: Overlay,
    maps: Maps,
}

/// Loads (or adopts the pinned) programs and maps, writes the node's
/// config and attaches to the device holding the advertise address.
async fn attach_dataplane(nl: &Netlink, cfg: &AgentConfig) -> Result<Underlay> {
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
    let mtu = nl.link_mtu(&dev).await?;
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
        mesh_mss: mtu.saturating_sub(90),
        ..Default::default()
    })?;
    overlay.attach_underlay(&dev)?;
    info!(node = %cfg.node_name, %dev, vtep = %cfg.advertise_addr, ?hooks, "dataplane attached");
    Ok(Underlay {
        dev,
        mtu,
        hooks,
        overlay,
        maps,
    })
}

/// The VIP balancer `--lb` asks for (`auto`: eBPF, which every kernel
/// here has), and the mode it runs in.
fn balancer(cfg: &AgentConfig) -> Result<(lb::Lb, LbMode)> {
    let programmer = || -> Result<lb::ebpf::LbProgrammer> {
        Ok(lb::ebpf::LbProgrammer::new(
            shoal_dataplane::lb::LbMaps::open(&cfg.bpffs_dir)?,
            cfg.maglev_size,
        ))
    };
    Ok(match cfg.lb {
        LbMode::Ipvs => {
            lb::ipvs::IpvsLb::probe().context("--lb ipvs")?;
            (
                lb::Lb::Ipvs {
                    ipvs: Default::default(),
                    mesh: programmer()?,
                },
                LbMode::Ipvs,
            )
        }
        LbMode::Ebpf | LbMode::Auto => (lb::Lb::Ebpf(programmer()?), LbMode::Ebpf),
    })
}

/// Holds an exclusive lock on the data dir for the agent's lifetime.
struct DirLock(#[allow(dead_code)] File);

fn lock_data_dir(dir: &Path) -> Result<DirLock> {
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
fn claim_socket(path: &Path) -> Result<()> {
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

//! `shoal daemon`: the node agent.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use shoal_dataplane::overlay::Accel;

use crate::agent::{self, AgentConfig};

/// Where a host's daemon pins its maps and links (and `shoal debug` looks).
pub const DEFAULT_BPFFS_DIR: &str = "/sys/fs/bpf/shoal";

// The path flags also read the environment (SHOAL_DATA_DIR,
// SHOAL_BPFFS_DIR, SHOAL_SOCKET), so a daemon and the CLI beside it agree
// wherever they are pointed (as `shoal lab exec NODE` points the CLI).
#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// This node's name (default: the hostname).
    #[arg(long)]
    pub node_name: Option<String>,
    /// Underlay address other nodes reach this node at (its VTEP and gossip address).
    #[arg(long)]
    pub advertise_addr: Ipv4Addr,
    /// Gossip listen address.
    #[arg(long, default_value = "0.0.0.0:7946")]
    pub listen_addr: SocketAddr,
    /// Gossip seeds (HOST:PORT), any live node of the cluster.
    #[arg(long, num_args = 1..)]
    pub join: Vec<String>,
    /// Only nodes with the same cluster id gossip with each other.
    #[arg(long, default_value = "shoal")]
    pub cluster_id: String,
    /// Underlay device (default: the device holding --advertise-addr).
    #[arg(long)]
    pub underlay_dev: Option<String>,
    /// The node's persisted state (locked: one daemon per data dir).
    #[arg(long, env = "SHOAL_DATA_DIR", default_value = "/var/lib/shoal")]
    pub data_dir: PathBuf,
    /// Where the dataplane's maps and links are pinned.
    #[arg(long, env = "SHOAL_BPFFS_DIR", default_value = DEFAULT_BPFFS_DIR)]
    pub bpffs_dir: PathBuf,
    /// The local API socket.
    #[arg(long, env = "SHOAL_SOCKET", default_value = crate::api::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Which hooks carry the overlay: auto, tc or xdp.
    #[arg(long, default_value = "auto", value_parser = parse_accel)]
    pub accel: Accel,
    /// UDP port of the VXLAN data path.
    #[arg(long, default_value_t = 4789)]
    pub data_path_port: u16,
    /// Gossip round interval in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub gossip_interval_ms: u64,
    /// Manager control plane port (Raft between managers).
    #[arg(long, default_value_t = 2377)]
    pub control_port: u16,
    /// A manager snapshots its Raft state and compacts the log every this
    /// many entries.
    #[arg(long, default_value_t = 1000)]
    pub raft_snapshot_interval: u64,
    /// Task network namespaces are named this + 12 id characters.
    #[arg(long, default_value = "shoal-t")]
    pub task_netns_prefix: String,
    /// Upstream resolvers for names outside the cluster (IP or IP:PORT;
    /// default: the nameservers of /etc/resolv.conf; `none`: do not
    /// forward, answer SERVFAIL).
    #[arg(long = "dns")]
    pub dns: Vec<String>,
    /// TTL of the cluster's own DNS answers, in seconds (Docker: 600).
    #[arg(long, default_value_t = 5)]
    pub dns_ttl: u32,
    /// Forwarded DNS queries in flight at once, node-wide; beyond, REFUSED
    /// (bounded by memory, about 1 KiB each; Docker caps at 1024).
    #[arg(long, default_value_t = 16384)]
    pub dns_max_forwards: usize,
    /// Maglev table size per service VIP (Cilium's default; one of 251,
    /// 509, 1021, 2039, 4093, 8191, 16381).
    #[arg(long, default_value_t = 16381)]
    pub maglev_size: u32,
    /// VIP load balancer: eBPF (Maglev in the tc programs) or IPVS
    /// (Docker's scheme; needs a kernel with IP_VS). auto = ebpf.
    #[arg(long, value_enum, default_value_t = crate::wire::LbMode::Auto)]
    pub lb: crate::wire::LbMode,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (PORT defaults
    /// to 9323, Docker's metrics port). Off unless given.
    #[arg(long, value_name = "ADDR[:PORT]", value_parser = crate::metrics::parse_addr)]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// New service flows and drops kept in memory for `shoal debug flows`
    /// (the newest; about 300 bytes each). 0 turns the flow log off.
    #[arg(long, default_value_t = 4096)]
    pub flow_log_size: usize,
    /// Outside a swarm, seal gossip with this key (a file holding 32 bytes
    /// as 64 hex digits or base64; key id 0). A node in a swarm uses the
    /// swarm's keys instead.
    #[arg(long, value_name = "PATH")]
    pub gossip_key_file: Option<PathBuf>,
    /// Outside a swarm and without --gossip-key-file, gossip in clear and
    /// unauthenticated (otherwise such a node sends nothing and refuses
    /// everything). Logs a warning.
    #[arg(long)]
    pub insecure_gossip: bool,
    /// How often the leader makes a new gossip key, for a `swarm init` on
    /// this node that does not say (seconds, or a duration such as 12h).
    #[arg(long, default_value = "12h", value_parser = parse_rotation)]
    pub gossip_key_rotation: Duration,
    /// The shortest `--cert-expiry` this node's API accepts (Docker's 1h);
    /// lower only for tests that watch certificates renew.
    #[arg(long, default_value = "1h", value_parser = parse_rotation, hide = true)]
    pub min_cert_expiry: Duration,
    /// Serve Docker's network and IPAM driver plugin API (`docker network
    /// create -d shoal --ipam-driver shoal`) on this Unix socket; dockerd
    /// finds /run/docker/plugins/shoal.sock. A relative path is in
    /// --data-dir. Off unless given.
    #[arg(long, value_name = "PATH", env = "SHOAL_DOCKER_PLUGIN")]
    pub docker_plugin: Option<PathBuf>,
    /// dockerd's API socket, where the driver learns containers' names for
    /// Shoal's DNS (Docker's plugin protocol does not carry them). A
    /// relative path is in --data-dir.
    #[arg(
        long,
        value_name = "PATH",
        env = "SHOAL_DOCKER_SOCKET",
        default_value = "/var/run/docker.sock"
    )]
    pub docker_socket: PathBuf,
}

/// Seconds, or a humantime duration (`90s`, `12h`); at least 1 s.
pub fn parse_rotation(s: &str) -> Result<Duration, String> {
    let d = match s.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))?,
    };
    if d < Duration::from_secs(1) {
        return Err(format!("{s:?}: at least 1s"));
    }
    Ok(d)
}

fn parse_accel(s: &str) -> Result<Accel, String> {
    s.parse().map_err(|e: shoal_dataplane::Error| e.to_string())
}

pub fn run(a: DaemonArgs) -> anyhow::Result<()> {
    few_malloc_arenas();
    let node_name = match a.node_name {
        Some(n) => n,
        None => nix::unistd::gethostname()?.to_string_lossy().into_owned(),
    };
    if a.gossip_interval_ms < 10 {
        anyhow::bail!("--gossip-interval-ms must be at least 10");
    }
    if a.raft_snapshot_interval < 10 {
        anyhow::bail!("--raft-snapshot-interval must be at least 10");
    }
    let given: Vec<&String> = a.dns.iter().filter(|s| s.as_str() != "none").collect();
    let dns_upstreams = if a.dns.is_empty() {
        agent::dns::host_upstreams(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
    } else {
        given
            .iter()
            .map(|s| {
                s.parse::<SocketAddr>()
                    .or_else(|_| {
                        s.parse::<std::net::IpAddr>()
                            .map(|ip| SocketAddr::new(ip, 53))
                    })
                    .map_err(|_| anyhow::anyhow!("bad --dns {s:?} (want IP or IP:PORT)"))
            })
            .collect::<anyhow::Result<_>>()?
    };
    if !shoal_dataplane::lb::maglev::SIZES.contains(&a.maglev_size) {
        anyhow::bail!(
            "--maglev-size {}: want one of {:?}",
            a.maglev_size,
            shoal_dataplane::lb::maglev::SIZES
        );
    }
    let cfg = AgentConfig {
        node_name,
        advertise_addr: a.advertise_addr,
        listen_addr: a.listen_addr,
        underlay_dev: a.underlay_dev,
        data_dir: a.data_dir,
        bpffs_dir: a.bpffs_dir,
        socket: a.socket,
        join: a.join,
        cluster_id: a.cluster_id,
        accel: a.accel,
        vxlan_port: a.data_path_port,
        gossip_interval: Duration::from_millis(a.gossip_interval_ms),
        control_port: a.control_port,
        task_netns_prefix: a.task_netns_prefix,
        dns_upstreams,
        dns_ttl: a.dns_ttl,
        dns_max_forwards: a.dns_max_forwards,
        maglev_size: a.maglev_size,
        lb: a.lb,
        metrics_addr: a.metrics_addr,
        flow_log_size: a.flow_log_size,
        gossip_key_file: a.gossip_key_file,
        insecure_gossip: a.insecure_gossip,
        gossip_key_rotation: a.gossip_key_rotation,
        min_cert_expiry: a.min_cert_expiry,
        raft: crate::raft::manager::Options {
            snapshot_every: a.raft_snapshot_interval,
        },
    };
    // (plugin socket, dockerd's API)
    let docker = a
        .docker_plugin
        .map(|p| (cfg.data_dir.join(p), cfg.data_dir.join(a.docker_socket)));
    super::runtime()?.block_on(serve(cfg, docker))
}

/// Starts the agent and serves it: the local API on its socket (and
/// `/metrics` where asked), then the state file the lab waits for; until
/// SIGTERM/SIGINT (leaving: peers drop this node's endpoints at once) or
/// SIGUSR1 (restarting: no goodbye, the next generation takes over the
/// same endpoints before the failure detector convicts this one).
async fn serve(cfg: AgentConfig, docker: Option<(PathBuf, PathBuf)>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};

    let (socket, metrics_addr) = (cfg.socket.clone(), cfg.metrics_addr);
    let state_path = cfg.data_dir.join(crate::wire::STATE_FILE);
    let (node, vtep, bpffs_dir) = (
        cfg.node_name.clone(),
        cfg.advertise_addr,
        cfg.bpffs_dir.clone(),
    );
    let started = agent::start(cfg).await?;
    let a = started.agent.clone();
    if let Some(addr) = metrics_addr {
        crate::metrics::serve(a.clone(), addr).await?;
    }
    if let Some((path, api)) = docker.clone() {
        let a = a.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::docker_driver::serve(&path, api, a).await {
                tracing::error!("Docker driver: {e:#}");
            }
        });
    }
    let listener = crate::api::server::bind(&socket)?;
    let shutdown = std::sync::Arc::new(tokio::sync::Notify::new());
    let server = tokio::spawn(crate::api::server::serve(
        listener,
        a.clone(),
        shutdown.clone(),
    ));
    let st = crate::wire::AgentState {
        pid: std::process::id(),
        node,
        socket: socket.clone(),
        underlay_dev: started.underlay_dev.clone(),
        vtep,
        hooks: started.hooks,
        bpffs_dir,
    };
    crate::files::write_atomic(&state_path, &serde_json::to_vec_pretty(&st)?)?;
    tracing::info!(socket = %socket.display(), gossip = %a.info.gossip_addr, "serving");

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let leaving = tokio::select! {
        _ = term.recv() => true,
        _ = int.recv() => true,
        _ = usr1.recv() => false,
    };
    tracing::info!(leaving, "stopping; the dataplane stays attached (pinned)");
    shutdown.notify_waiters();
    let _ = server.await;
    started.stop(leaving).await;
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(&state_path);
    if let Some((p, _)) = docker {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

/// At most two glibc malloc arenas. glibc gives each thread that allocates
/// its own arena (up to 8 per core), and a programming pass builds and
/// drops the whole table on whichever thread runs it: at Swarm2000's size
/// (96,287 endpoints) the daemon's RSS grew to 1.7 GB that way, against
/// 0.55 GB with two arenas (`daemon-scale-bench`, same table). The
/// daemon's threads rarely allocate at once, so two cost it nothing.
fn few_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before the
    // runtime starts any thread.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

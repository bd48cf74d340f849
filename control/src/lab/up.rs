//! `shoal lab up`: underlay namespace with a bridge, N node namespaces
//! joined to it by veths (198.18.0.0/15 addresses), one agent per node
//! joined by gossip, and K endpoints per node created through each node's
//! endpoint API; with `--managers M` (default 1) the nodes form a swarm
//! first (`swarm.rs`). Returns once every node's gossip knows every node
//! live and has programmed every other node's endpoints. On any failure
//! the partial lab is torn down again.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use shoal_dataplane::netlink::{self, mac_from_ip, Netlink};
use shoal_dataplane::netns::NetNs;

use super::{daemon, Lab, LabEndpoint, LabNode};
use crate::api::client::Client;
use crate::wire::{Endpoint, EndpointCreate, GossipView, Network, NetworkCreate};

#[derive(Clone, Debug)]
pub struct UpOptions {
    pub name: String,
    pub nodes: u32,
    pub endpoints: u32,
    pub accel: String,
    /// Swarm managers among the nodes (the first M; 0: no swarm).
    pub managers: u32,
    pub daemon_args: Vec<String>,
    /// No `--join` seed for any daemon (needs a swarm).
    pub no_join: bool,
}

/// The lab's own overlay network for its static endpoints (n1-e1, ...),
/// defined on each node directly, outside the swarm: VNI 4000 sits below
/// the swarm's VNIs (4096 up) and the lab's swarm takes its subnets from
/// `SWARM_POOL`, so swarm networks never collide with it.
pub fn lab_network() -> Network {
    Network {
        name: "labnet".into(),
        vni: 4000,
        subnet: "10.0.1.0/24".parse().expect("valid"),
        gateway: Ipv4Addr::new(10, 0, 1, 1),
        encrypted: false,
    }
}

/// The lab's outside client (`shoal lab exec client -- CMD`).
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 200);

pub fn node_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, i as u8)
}

pub async fn up(opts: UpOptions) -> Result<Lab> {
    super::validate_name(&opts.name)?;
    if opts.nodes == 0 || opts.nodes > 64 {
        bail!("--nodes must be between 1 and 64");
    }
    if opts.managers > opts.nodes {
        bail!("--managers must be at most --nodes");
    }
    if opts.no_join && opts.managers == 0 {
        bail!("--no-join needs a swarm (--managers 1 or more): without seeds, only the managers bring the nodes' gossip together");
    }
    if opts.nodes * opts.endpoints > 250 {
        bail!("--nodes x --endpoints must be at most 250 (one /24 overlay)");
    }
    opts.accel.parse::<shoal_dataplane::overlay::Accel>()?;
    let prefix = format!("{}-", opts.name);
    if Lab::exists(&opts.name) || !NetNs::list(&prefix).is_empty() {
        bail!(
            "lab {:?} already exists; remove it with `shoal lab down --name {}`",
            opts.name,
            opts.name
        );
    }
    match build(&opts).await {
        Ok(lab) => Ok(lab),
        Err(e) => {
            let _ = super::down(&opts.name);
            Err(e)
        }
    }
}

async fn build(opts: &UpOptions) -> Result<Lab> {
    // XDP forwards raw frames: a checksum a veth left to "offload" would
    // arrive unfinished. Hosts behind a real wire send finished ones, so
    // with XDP the lab's hosts do too.
    let xdp = opts.accel.parse::<shoal_dataplane::overlay::Accel>()?
        == shoal_dataplane::overlay::Accel::Xdp;
    shoal_dataplane::ensure_bpffs()?;
    let name = &opts.name;
    std::fs::create_dir_all(Lab::state_dir(name))?;
    let ul = Underlay::make(name).await?;
    let net = lab_network();
    let mut lab = Lab {
        name: name.clone(),
        accel: opts.accel.clone(),
        underlay_netns: ul.netns_name.clone(),
        underlay_bridge: ul.bridge_name.clone(),
        nodes: vec![],
        networks: vec![net.clone()],
        endpoints: vec![],
        managers: opts.managers,
        daemon_args: opts.daemon_args.clone(),
        no_join: opts.no_join,
        clients: vec![],
        gossip_key_file: None,
    };
    let chosen = |flag: &str| {
        opts.daemon_args
            .iter()
            .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
    };
    if opts.managers == 0 && !chosen("--insecure-gossip") && !chosen("--gossip-key-file") {
        lab.gossip_key_file = Some(write_gossip_key(&Lab::state_dir(name))?);
    }

    let mut next_ip = u32::from(net.gateway) + 1;
    for i in 1..=opts.nodes {
        let node = ul.add_node(name, i, xdp).await?;
        for k in 1..=opts.endpoints {
            let ip = Ipv4Addr::from(next_ip);
            next_ip += 1;
            lab.endpoints
                .push(planned_endpoint(name, &node.name, k, &net, ip));
        }
        lab.nodes.push(node);
    }
    lab.clients.push(ul.add_client(name, xdp).await?);
    lab.save()?;

    for node in lab.nodes.clone() {
        let pid = daemon::start_node(&lab, &node)?;
        if let Some(n) = lab.nodes.iter_mut().find(|n| n.name == node.name) {
            n.pid = Some(pid);
        }
    }
    lab.save()?;
    if opts.managers > 0 {
        super::swarm::form(&lab).await?;
    }

    create_endpoints(&mut lab, &net).await?;
    lab.save()?;
    wait_converged(&lab, Duration::from_secs(30)).await?;
    Ok(lab)
}

/// The lab's switch: a namespace holding a bridge every host plugs into.
struct Underlay {
    netns_name: String,
    bridge_name: String,
    ns: NetNs,
    nl: Netlink,
    bridge: u32,
}

impl Underlay {
    async fn make(name: &str) -> Result<Self> {
        let ul_ns_name = format!("{name}-ul");
        let bridge = format!("{name}-br");
        let ul_ns = NetNs::create(&ul_ns_name)?;
        let ul = Netlink::connect_in(&ul_ns)?;
        ul.add_bridge(&bridge).await?;
        let br = ul.require_index(&bridge).await?;
        ul.set_up(br).await?;
        // The underlay stands for a switch: it runs no iptables on the frames
        // it bridges (with br_netfilter loaded the kernel would, on every hop;
        // the sysctls are absent without it).
        ul_ns.run(|| {
            for k in ["arptables", "iptables", "ip6tables"] {
                let _ = shoal_dataplane::netlink::sysctl(
                    &format!("net.bridge.bridge-nf-call-{k}"),
                    "0",
                );
            }
        })?;
        Ok(Self {
            netns_name: ul_ns_name,
            bridge_name: bridge,
            ns: ul_ns,
            nl: ul,
            bridge: br,
        })
    }

    /// A port named `port` on the bridge, whose other end is `ifname` in
    /// `ns` with the MAC of `ip`.
    async fn plug(&self, port: &str, ifname: &str, ns: &NetNs, ip: Ipv4Addr) -> Result<()> {
        self.nl
            .add_veth(port, ifname, Some(ns), Some(mac_from_ip(ip)), None)
            .await?;
        let idx = self.nl.require_index(port).await?;
        self.nl.set_master(idx, self.bridge).await?;
        self.nl.set_up(idx).await?;
        Ok(())
    }

    /// Node `nI`: its namespace, plugged into the underlay with 198.18.0.I.
    async fn add_node(&self, name: &str, i: u32, xdp: bool) -> Result<LabNode> {
        let node_name = format!("n{i}");
        let state_dir = Lab::state_dir(name);
        let node = LabNode {
            name: node_name.clone(),
            netns: format!("{name}-{node_name}"),
            underlay_ip: node_ip(i),
            underlay_dev: format!("{name}-eth0"),
            data_dir: state_dir.join("nodes").join(&node_name),
            bpffs_dir: Lab::bpffs_dir(name).join(&node_name),
            log: state_dir.join("nodes").join(format!("{node_name}.log")),
            pid: None,
        };
        let ns = NetNs::create(&node.netns)?;
        // Underlay port: LAB-nI on the bridge, LAB-eth0 inside the node.
        let port = format!("{name}-{node_name}");
        self.plug(&port, &node.underlay_dev, &ns, node.underlay_ip)
            .await
            .with_context(|| format!("underlay link of {node_name}"))?;
        // XDP_REDIRECT into the node's underlay veth only delivers when
        // its peer (this bridge port) has GRO on.
        self.ns.run(move || netlink::set_gro(&port, true))??;
        let inside = Netlink::connect_in(&ns)?;
        let dev = inside.require_index(&node.underlay_dev).await?;
        inside.set_up(dev).await?;
        inside.add_addr(dev, node.underlay_ip.into(), 24).await?;
        if xdp {
            let d = node.underlay_dev.clone();
            ns.run(move || netlink::set_tx_csum(&d, false))??;
        }
        Ok(node)
    }

    /// The outside client: a host on the underlay that is no node.
    async fn add_client(&self, name: &str, xdp: bool) -> Result<super::LabClient> {
        let client = super::LabClient {
            name: "client".into(),
            netns: format!("{name}-client"),
            underlay_ip: CLIENT_IP,
        };
        let cns = NetNs::create(&client.netns)?;
        self.plug(&format!("{name}-cl"), "eth0", &cns, CLIENT_IP)
            .await
            .context("underlay link of the client")?;
        let inside = Netlink::connect_in(&cns)?;
        let dev = inside.require_index("eth0").await?;
        inside.set_up(dev).await?;
        inside.add_addr(dev, CLIENT_IP.into(), 24).await?;
        cns.run(netlink::set_lo_up_blocking)??;
        if xdp {
            cns.run(|| netlink::set_tx_csum("eth0", false))??;
        }
        Ok(client)
    }
}

/// Endpoint `NODE-eK` as the lab plans it (made later through the node's API).
fn planned_endpoint(lab: &str, node: &str, k: u32, net: &Network, ip: Ipv4Addr) -> LabEndpoint {
    let ep_name = format!("{node}-e{k}");
    LabEndpoint {
        netns: format!("{lab}-{ep_name}"),
        name: ep_name,
        node: node.to_string(),
        network: net.name.clone(),
        vni: net.vni,
        ip,
        mac: netlink::format_mac(&mac_from_ip(ip)),
        host_if: String::new(),
    }
}

/// The lab's network on every node and its endpoints, through each node's
/// API, as an orchestrator would.
async fn create_endpoints(lab: &mut Lab, net: &Network) -> Result<()> {
    for node in &lab.nodes {
        let c = Client::new(&node.socket());
        let req = NetworkCreate {
            name: net.name.clone(),
            vni: net.vni,
            subnet: net.subnet.to_string(),
            gateway: Some(net.gateway),
            encrypted: false,
        };
        let _: Network = c
            .post("/v1/local/networks", &req)
            .await
            .with_context(|| format!("network on {}", node.name))?;
    }
    for ep in &mut lab.endpoints {
        let node = lab
            .nodes
            .iter()
            .find(|n| n.name == ep.node)
            .expect("planned on a lab node");
        let req = EndpointCreate {
            network: ep.network.clone(),
            ip: format!("{}/{}", ep.ip, net.subnet.prefix_len()),
            mac: Some(ep.mac.clone()),
            netns: None,
            name: Some(ep.netns.clone()),
            ifname: None,
            svc: None,
            default_route: None,
            ..Default::default()
        };
        let created: Endpoint = Client::new(&node.socket())
            .post("/v1/endpoints", &req)
            .await
            .with_context(|| format!("endpoint {} on {}", ep.name, node.name))?;
        ep.host_if = created.host_if;
    }
    Ok(())
}

/// A random gossip key for the lab's daemons (hex, mode 0600): without a
/// swarm to hand out keys, this is what keeps the lab's gossip sealed.
fn write_gossip_key(state_dir: &std::path::Path) -> Result<std::path::PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = state_dir.join("gossip.key");
    use ring::rand::SecureRandom;
    let mut key = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| anyhow::anyhow!("no random source for the lab's gossip key"))?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("write {}", path.display()))?;
    writeln!(f, "{hex}")?;
    Ok(path)
}

/// Waits until every node's gossip knows every node live and has
/// programmed every other node's endpoints. (A swarm lab's nodes gossip
/// only once they hold the swarm's keys, from their first heartbeat after
/// joining: a lab without endpoints must still wait for that.)
pub async fn wait_converged(lab: &Lab, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut missing = vec![];
        for node in &lab.nodes {
            let want = lab.endpoints.iter().filter(|e| e.node != node.name).count();
            let view: GossipView = Client::new(&node.socket()).get("/v1/gossip").await?;
            let have = view.table.iter().filter(|e| e.programmed).count();
            if have < want {
                missing.push(format!("{} has {have} of {want}", node.name));
            }
            let live = view.members.iter().filter(|m| m.live).count();
            if live < lab.nodes.len() {
                missing.push(format!(
                    "{} sees {live} of {} nodes live",
                    node.name,
                    lab.nodes.len()
                ));
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "gossip did not converge within {timeout:?}: {}",
                missing.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

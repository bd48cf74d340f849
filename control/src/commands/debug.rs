//! `shoal debug`: a node's dataplane as the kernel holds it: maps, counters
//! by reason, attached programs; and static VTEP peers.
//!
//! It reads the pinned maps directly, so it works while the agent is down.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use serde::Serialize;
use shoal_dataplane::ebpf::{EpValue, EP_F_LOCAL, EP_F_REMOTE, EP_F_STATIC};
use shoal_dataplane::netlink::{format_mac, parse_mac, Netlink};
use shoal_dataplane::netns::NetNs;
use shoal_dataplane::overlay::{self, ip_key, key_ip, Attachment, Counters, Maps};

use crate::lab::Lab;
use crate::output::{print_json, print_table, Format};

#[derive(Args, Debug)]
pub struct DebugArgs {
    /// The node's pin directory (what its daemon got as --bpffs-dir;
    /// default: $SHOAL_BPFFS_DIR or /sys/fs/bpf/shoal).
    #[arg(long, global = true)]
    pub bpffs_dir: Option<PathBuf>,
    /// A lab node instead: --lab LAB --node NODE.
    #[arg(long, global = true)]
    pub lab: Option<String>,
    #[arg(long, global = true)]
    pub node: Option<String>,
    /// The daemon's API socket, for the commands that ask the daemon
    /// (default: $SHOAL_SOCKET or /run/shoal/shoal.sock).
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t, global = true)]
    pub format: Format,
    #[command(subcommand)]
    pub cmd: DebugCmd,
}

#[derive(Subcommand, Debug)]
pub enum DebugCmd {
    /// Everything below at once.
    Maps,
    /// The endpoint/tunnel table: (VNI, IP) -> local veth or remote VTEP.
    Endpoints,
    /// Forwarding counters and drops by reason.
    Drops,
    /// Which programs are attached where.
    Programs,
    /// Static VTEP peers (remote endpoints behind a foreign VTEP).
    #[command(subcommand)]
    Peer(PeerCmd),
    /// Networks defined locally on the daemon (until the orchestrator
    /// allocates them).
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Gossip: members, the merged endpoint table, refused gossip.
    Gossip,
    /// Raft on this manager: term, leader, membership, log and snapshot.
    Raft,
    /// The node's embedded DNS: counters by kind, upstreams and their
    /// health; with --task, the names that task sees.
    Dns {
        #[arg(long)]
        task: Option<String>,
    },
    /// The datapath's events live: drops with their reason and traces of
    /// forwarded packets (encap, decap, local, mesh entry and reply).
    Monitor(super::debug_monitor::MonitorArgs),
    /// Who talked to which service and what happened, across the cluster:
    /// every node's log of new VIP and mesh flows and drops (on a manager).
    Flows(super::debug_flows::FlowsArgs),
    /// The VIP balancer: services, backends' Maglev shares, conntrack,
    /// counters (from the pinned maps).
    Lb {
        /// Only this VIP.
        #[arg(long)]
        vip: Option<Ipv4Addr>,
        /// Only flows of this client.
        #[arg(long)]
        client: Option<Ipv4Addr>,
    },
    /// Encrypted networks on this node: IPsec support, the key ids in use,
    /// and per peer node its SAs (packets, errors).
    Ipsec,
    /// Schedule a big replicated service over simulated nodes, in-process
    /// (the orchestrator's own plan and apply), and report time and memory.
    ScheduleSim {
        #[arg(long, default_value_t = 2384)]
        nodes: usize,
        #[arg(long, default_value_t = 96287)]
        tasks: u64,
        #[arg(long, default_value_t = 45)]
        max_per_node: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum NetworkCmd {
    Add {
        name: String,
        #[arg(long)]
        vni: u32,
        #[arg(long)]
        subnet: String,
        #[arg(long)]
        gateway: Option<Ipv4Addr>,
    },
    Rm {
        name: String,
    },
    Ls,
}

#[derive(Subcommand, Debug)]
pub enum PeerCmd {
    Add {
        #[arg(long)]
        vni: u32,
        #[arg(long)]
        ip: Ipv4Addr,
        #[arg(long)]
        mac: String,
        #[arg(long)]
        vtep: Ipv4Addr,
    },
    Rm {
        #[arg(long)]
        vni: u32,
        #[arg(long)]
        ip: Ipv4Addr,
    },
    Ls,
}

/// Where to look: the pin dir, the API socket and, for a lab node, its
/// namespace.
pub(super) struct Target {
    pub(super) pins: PathBuf,
    pub(super) socket: PathBuf,
    pub(super) netns: Option<String>,
}

/// The pin dir when none is named: `$SHOAL_BPFFS_DIR` (`shoal lab exec
/// NODE` sets it to the node's, as SHOAL_SOCKET for its API), else the
/// daemon's default.
fn default_pins() -> PathBuf {
    std::env::var_os("SHOAL_BPFFS_DIR")
        .map(Into::into)
        .unwrap_or_else(|| super::daemon::DEFAULT_BPFFS_DIR.into())
}

fn target(a: &DebugArgs) -> Result<Target> {
    match (&a.lab, &a.node, &a.bpffs_dir) {
        (Some(_), _, Some(_)) => bail!("give either --bpffs-dir or --lab/--node, not both"),
        (Some(lab), Some(node), None) => {
            let lab = Lab::load(lab)?;
            let n = lab.node(node)?;
            Ok(Target {
                pins: n.bpffs_dir.clone(),
                socket: n.socket(),
                netns: Some(n.netns.clone()),
            })
        }
        (Some(_), None, None) => bail!("--lab needs --node NODE"),
        (None, Some(_), _) => bail!("--node needs --lab LAB"),
        (None, None, dir) => Ok(Target {
            pins: dir.clone().unwrap_or_else(default_pins),
            socket: crate::api::socket_path(a.socket.as_deref()),
            netns: None,
        }),
    }
}

#[derive(Serialize)]
struct EndpointRow {
    vni: u32,
    ip: Ipv4Addr,
    mac: String,
    /// "local" or "remote".
    kind: &'static str,
    interface: Option<String>,
    ifindex: Option<u32>,
    vtep: Option<Ipv4Addr>,
}

#[derive(Serialize)]
struct MapsView {
    vtep: Ipv4Addr,
    underlay_ifindex: u32,
    vxlan_port: u16,
    vnis: Vec<u32>,
    /// Those of `vnis` that are encrypted (IPsec between nodes).
    encrypted_vnis: Vec<u32>,
    /// The encrypted networks' VXLAN port inside ESP (0: no device).
    crypt_port: u16,
    endpoints: Vec<EndpointRow>,
    counters: Counters,
    programs: Vec<Attachment>,
}

pub fn run(a: DebugArgs) -> Result<()> {
    if let DebugCmd::ScheduleSim {
        nodes,
        tasks,
        max_per_node,
    } = a.cmd
    {
        let r = crate::orchestrator::sim::run(nodes, tasks, max_per_node);
        return print_json(&r);
    }
    let t = target(&a)?;
    match &a.cmd {
        DebugCmd::Network(n) => return super::debug_daemon::network(&t, n, a.format),
        DebugCmd::Gossip => return super::debug_daemon::gossip(&t, a.format),
        DebugCmd::Raft => return super::debug_daemon::raft(&t, a.format),
        DebugCmd::Dns { task } => {
            return super::debug_dns::run(&t.socket, task.as_deref(), a.format)
        }
        DebugCmd::Flows(f) => return super::debug_flows::run(&t.socket, f, a.format),
        DebugCmd::Lb { vip, client } => {
            return super::debug_lb::run(&t.pins, &t.socket, *vip, *client, a.format)
        }
        DebugCmd::Ipsec => return super::debug_ipsec::run(&t.socket, a.format),
        DebugCmd::Monitor(m) => {
            // The node's name: a lab node's (--node, or $SHOAL_NODE that
            // `shoal lab exec` sets), else a host's hostname.
            let node = a
                .node
                .clone()
                .or_else(|| std::env::var("SHOAL_NODE").ok())
                .unwrap_or_else(|| {
                    nix::unistd::gethostname()
                        .map(|h| h.to_string_lossy().into_owned())
                        .unwrap_or_default()
                });
            return super::debug_monitor::run(
                &t.pins,
                &t.socket,
                t.netns.as_deref(),
                &node,
                m,
                a.format,
            );
        }
        DebugCmd::ScheduleSim { .. } => unreachable!("handled before the target"),
        _ => {}
    }
    let open = || super::pinned(Maps::open(&t.pins), &t.pins);
    match &a.cmd {
        DebugCmd::Maps => {
            let maps = open()?;
            let cfg = maps.config()?;
            let view = MapsView {
                vtep: key_ip(cfg.vtep_ip),
                underlay_ifindex: cfg.underlay_ifindex,
                vxlan_port: u16::from_be(cfg.vxlan_port),
                vnis: maps.vnis(),
                encrypted_vnis: maps.encrypted_vnis(),
                crypt_port: u16::from_be(cfg.crypt_port),
                endpoints: endpoint_rows(&t, &maps)?,
                counters: maps.counters(),
                programs: programs(&t, &maps)?,
            };
            match a.format {
                Format::Json => print_json(&view),
                Format::Table => {
                    println!(
                        "VTEP {}  port {}  underlay ifindex {}",
                        view.vtep, view.vxlan_port, view.underlay_ifindex
                    );
                    println!(
                        "VNIs {:?}  encrypted {:?}  their port in ESP {}\n",
                        view.vnis, view.encrypted_vnis, view.crypt_port
                    );
                    print_endpoints(&view.endpoints);
                    println!();
                    print_counters(&view.counters);
                    println!();
                    print_programs(&view.programs);
                    Ok(())
                }
            }
        }
        DebugCmd::Endpoints => {
            let rows = endpoint_rows(&t, &open()?)?;
            match a.format {
                Format::Json => print_json(&rows),
                Format::Table => {
                    print_endpoints(&rows);
                    Ok(())
                }
            }
        }
        DebugCmd::Drops => {
            let c = open()?.counters();
            match a.format {
                Format::Json => print_json(&c),
                Format::Table => {
                    print_counters(&c);
                    Ok(())
                }
            }
        }
        DebugCmd::Programs => {
            let p = programs(&t, &open()?)?;
            match a.format {
                Format::Json => print_json(&p),
                Format::Table => {
                    print_programs(&p);
                    Ok(())
                }
            }
        }
        DebugCmd::Peer(p) => peer(&t, p, a.format, open()?),
        DebugCmd::Network(_)
        | DebugCmd::Gossip
        | DebugCmd::Raft
        | DebugCmd::Dns { .. }
        | DebugCmd::Lb { .. }
        | DebugCmd::Ipsec
        | DebugCmd::Monitor(_)
        | DebugCmd::Flows(_)
        | DebugCmd::ScheduleSim { .. } => {
            unreachable!("handled above")
        }
    }
}

fn peer(t: &Target, cmd: &PeerCmd, format: Format, mut maps: Maps) -> Result<()> {
    match cmd {
        PeerCmd::Add { vni, ip, mac, vtep } => {
            check_vni(*vni)?;
            let mac = parse_mac(mac)?;
            if let Some(existing) = maps.endpoint(*vni, *ip) {
                if existing.flags & EP_F_LOCAL != 0 {
                    bail!(
                        "{ip} on VNI {vni} is a local endpoint of this node; refusing to shadow it"
                    );
                }
            }
            maps.upsert_endpoint(
                *vni,
                *ip,
                EpValue {
                    ifindex: 0,
                    vtep: ip_key(*vtep),
                    mac,
                    flags: EP_F_REMOTE | EP_F_STATIC,
                    slot: 0,
                },
            )?;
            maps.add_vni(*vni, 0)?;
            println!(
                "peer {ip} (vni {vni}, {}) behind VTEP {vtep}",
                format_mac(&mac)
            );
            Ok(())
        }
        PeerCmd::Rm { vni, ip } => {
            check_vni(*vni)?;
            match maps.endpoint(*vni, *ip) {
                None => bail!("no peer {ip} on VNI {vni}"),
                Some(e) if e.flags & EP_F_LOCAL != 0 => {
                    bail!("{ip} on VNI {vni} is a local endpoint, not a peer")
                }
                Some(_) => {
                    maps.remove_endpoint(*vni, *ip)?;
                    println!("peer {ip} (vni {vni}) removed");
                    Ok(())
                }
            }
        }
        PeerCmd::Ls => {
            let rows: Vec<EndpointRow> = endpoint_rows(t, &maps)?
                .into_iter()
                .filter(|r| r.kind == "remote")
                .collect();
            match format {
                Format::Json => print_json(&rows),
                Format::Table => {
                    print_endpoints(&rows);
                    Ok(())
                }
            }
        }
    }
}

fn check_vni(vni: u32) -> Result<()> {
    if vni == 0 || vni > 0xff_ffff {
        bail!("VNI {vni} out of range (1-16777215)");
    }
    Ok(())
}

fn endpoint_rows(t: &Target, maps: &Maps) -> Result<Vec<EndpointRow>> {
    let entries = maps.endpoints();
    // Interface names live in the node's namespace.
    let indexes: Vec<u32> = entries
        .iter()
        .filter(|(_, v)| v.flags & EP_F_LOCAL != 0)
        .map(|(_, v)| v.ifindex)
        .collect();
    let names = resolve_names(t, indexes)?;
    let mut rows: Vec<EndpointRow> = entries
        .into_iter()
        .map(|(k, v)| {
            let local = v.flags & EP_F_LOCAL != 0;
            EndpointRow {
                vni: k.vni,
                ip: key_ip(k.ip),
                mac: format_mac(&v.mac),
                kind: if local { "local" } else { "remote" },
                interface: if local {
                    names
                        .iter()
                        .find(|(i, _)| *i == v.ifindex)
                        .and_then(|(_, n)| n.clone())
                } else {
                    None
                },
                ifindex: local.then_some(v.ifindex),
                vtep: (!local).then(|| key_ip(v.vtep)),
            }
        })
        .collect();
    rows.sort_by_key(|r| (r.vni, u32::from(r.ip)));
    Ok(rows)
}

/// A node's programs: its pinned links, and its endpoints' filters
/// (`overlay::filter`), read in the node's namespace.
fn programs(t: &Target, maps: &Maps) -> Result<Vec<Attachment>> {
    let mut out = overlay::attachments(&t.pins);
    let filtered: Vec<(u32, String)> = endpoint_rows(t, maps)?
        .into_iter()
        .filter_map(|r| Some((r.ifindex?, r.interface?)))
        .filter(|(_, name)| {
            !out.iter()
                .any(|a| a.role == "ep" && a.hook == "tc" && a.interface == *name)
        })
        .collect();
    let netns = t.netns.clone();
    let found = super::runtime()?.block_on(async move {
        let nl = match &netns {
            Some(ns) => Netlink::connect_in(&NetNs::open(ns)?)?,
            None => Netlink::connect()?,
        };
        let mut found = vec![];
        for (index, name) in filtered {
            if let Some(id) = nl.ingress_bpf_prog(index, overlay::filter::PRIO).await? {
                found.push(Attachment {
                    role: "ep".into(),
                    hook: "tc".into(),
                    interface: name,
                    prog_id: Some(id),
                });
            }
        }
        anyhow::Ok(found)
    })?;
    out.extend(found);
    out.sort_by(|a, b| (&a.role, &a.interface, &a.hook).cmp(&(&b.role, &b.interface, &b.hook)));
    Ok(out)
}

fn resolve_names(t: &Target, indexes: Vec<u32>) -> Result<Vec<(u32, Option<String>)>> {
    let netns = t.netns.clone();
    super::runtime()?.block_on(async move {
        let nl = match &netns {
            Some(ns) => Netlink::connect_in(&NetNs::open(ns)?)?,
            None => Netlink::connect()?,
        };
        let mut out = vec![];
        for i in indexes {
            out.push((i, nl.link_name(i).await.ok().flatten()));
        }
        Ok(out)
    })
}

fn print_endpoints(rows: &[EndpointRow]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let via = match (r.kind, &r.interface, r.ifindex, r.vtep) {
                ("local", Some(n), Some(i), _) => format!("{n} (ifindex {i})"),
                ("local", None, Some(i), _) => format!("ifindex {i}"),
                (_, _, _, Some(v)) => format!("VTEP {v}"),
                _ => "?".into(),
            };
            vec![
                r.vni.to_string(),
                r.ip.to_string(),
                r.mac.clone(),
                r.kind.to_string(),
                via,
            ]
        })
        .collect();
    print_table(&["VNI", "IP", "MAC", "KIND", "VIA"], &rows);
}

fn print_counters(c: &Counters) {
    let mut rows: Vec<Vec<String>> = c
        .stats
        .iter()
        .map(|(k, v)| vec!["forward".into(), k.clone(), v.to_string()])
        .collect();
    rows.extend(
        c.drops
            .iter()
            .map(|(k, v)| vec!["drop".into(), k.clone(), v.to_string()]),
    );
    print_table(&["TYPE", "COUNTER", "PACKETS"], &rows);
}

fn print_programs(p: &[Attachment]) {
    let rows: Vec<Vec<String>> = p
        .iter()
        .map(|a| {
            let what = if a.role == "ul" {
                "underlay ingress (decap)"
            } else {
                "endpoint ingress (encap)"
            };
            vec![
                a.interface.clone(),
                a.hook.clone(),
                what.into(),
                a.prog_id.map(|i| i.to_string()).unwrap_or("-".into()),
            ]
        })
        .collect();
    print_table(&["INTERFACE", "HOOK", "ROLE", "PROG ID"], &rows);
}

//! `shoal debug lb [--service VIP|NAME] [--client IP]`: the VIP balancer
//! as the node's pinned maps hold it: each service with its backends'
//! shares of the Maglev table, the conntrack entries, and the balancer's
//! counters. Read from the maps directly (works while the daemon is down).

use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;
use shoal_dataplane::lb::{LbCounter, LbFlow, LbMaps, LbService, MeshFlow, MeshMaps, MeshPort};
use shoal_dataplane::overlay::Maps;
use shoal_ebpf::{DropReason, Stat};

use crate::output::{print_json, print_table, Format};
use crate::wire::LocalPort;
use crate::wire::{LbMode, LbReport};

#[derive(Serialize)]
struct LbView {
    services: Vec<LbService>,
    /// Packets and bytes each service sent each backend (also past ones).
    per_backend: Vec<LbCounter>,
    flows: Vec<LbFlow>,
    /// The routing mesh: published ports, and flows that entered here.
    published: Vec<MeshPort>,
    /// The node's addresses besides the advertise address where they
    /// answer too.
    mesh_addresses: Vec<std::net::Ipv4Addr>,
    mesh_flows: Vec<MeshFlow>,
    /// Published ports relayed for the node's own processes.
    local_relays: Vec<LocalPort>,
    counters: Vec<(String, u64)>,
}

pub fn run(
    pins: &Path,
    socket: &Path,
    vip: Option<Ipv4Addr>,
    client: Option<Ipv4Addr>,
    format: Format,
) -> Result<()> {
    // The daemon says which balancer it runs; without a daemon, the pins.
    let api = crate::api::client::Client::new(socket);
    let report = super::runtime()?
        .block_on(api.get::<LbReport>("/v1/debug/lb"))
        .ok();
    if let Some(r) = report.as_ref().filter(|r| r.mode == LbMode::Ipvs) {
        return print_ipvs(r.clone(), vip, format);
    }
    let local = report.map(|r| r.local).unwrap_or_default();
    let view = read_view(pins, vip, client, local)?;
    if format == Format::Json {
        return print_json(&view);
    }
    print_services(&view);
    println!();
    print_flows(&view);
    println!();
    print_mesh(&view);
    println!();
    print_local(&view);
    println!();
    let c: Vec<Vec<String>> = view
        .counters
        .iter()
        .map(|(k, v)| vec![k.clone(), v.to_string()])
        .collect();
    print_table(&["COUNTER", "VALUE"], &c);
    Ok(())
}

/// The eBPF balancer and the mesh as the pinned maps hold them, filtered
/// by VIP and client.
fn read_view(
    pins: &Path,
    vip: Option<Ipv4Addr>,
    client: Option<Ipv4Addr>,
    local_relays: Vec<LocalPort>,
) -> Result<LbView> {
    let lb = super::pinned(LbMaps::open(pins), pins)?;
    let c = super::pinned(Maps::open(pins), pins)?.counters();
    let mut counters: Vec<(String, u64)> = [
        Stat::LbDnat,
        Stat::LbRevnat,
        Stat::LbEcho,
        Stat::MeshEntry,
        Stat::MeshReply,
    ]
    .iter()
    .map(|s| (s.label().to_string(), c.stat(*s)))
    .collect();
    counters.extend(
        [
            DropReason::NoBackend,
            DropReason::VipFragment,
            DropReason::VipProto,
            DropReason::LbRewrite,
            DropReason::MeshFragment,
            DropReason::MeshCt,
        ]
        .iter()
        .map(|r| (format!("drop_{}", r.label()), c.drop_count(*r))),
    );
    let mesh = MeshMaps::open(pins).ok();
    Ok(LbView {
        services: lb
            .services()
            .into_iter()
            .filter(|s| vip.is_none_or(|v| s.vip == v))
            .collect(),
        per_backend: lb
            .counters()
            .into_iter()
            .filter(|c| vip.is_none_or(|v| c.vip == v))
            .collect(),
        flows: lb
            .flows()
            .into_iter()
            .filter(|f| vip.is_none_or(|v| f.vip == v) && client.is_none_or(|c| f.client == c))
            .collect(),
        published: mesh.as_ref().map(|m| m.ports()).unwrap_or_default(),
        mesh_addresses: mesh
            .as_ref()
            .map(|m| m.addrs().into_keys().collect())
            .unwrap_or_default(),
        mesh_flows: mesh
            .as_ref()
            .map(|m| m.flows())
            .unwrap_or_default()
            .into_iter()
            .filter(|f| client.is_none_or(|c| f.client == c))
            .collect(),
        local_relays,
        counters,
    })
}

fn proto(p: u8) -> String {
    match p {
        6 => "tcp".to_string(),
        17 => "udp".to_string(),
        p => p.to_string(),
    }
}

/// Each service's backends with their Maglev shares and what they were sent.
fn print_services(view: &LbView) {
    let sent = |vni: u32, vip: Ipv4Addr, b: Ipv4Addr| {
        view.per_backend
            .iter()
            .find(|c| (c.vni, c.vip, c.backend) == (vni, vip, b))
            .map_or((0, 0), |c| (c.packets, c.bytes))
    };
    let rows: Vec<Vec<String>> = view
        .services
        .iter()
        .flat_map(|s| {
            let none = s.backends.is_empty().then(|| {
                vec![
                    s.vni.to_string(),
                    s.vip.to_string(),
                    s.m.to_string(),
                    "-".into(),
                    "0".into(),
                    "0".into(),
                    "0".into(),
                ]
            });
            s.backends
                .iter()
                .map(move |(b, n)| {
                    let (packets, bytes) = sent(s.vni, s.vip, *b);
                    vec![
                        s.vni.to_string(),
                        s.vip.to_string(),
                        s.m.to_string(),
                        b.to_string(),
                        format!("{n} ({:.1}%)", *n as f64 * 100.0 / s.m.max(1) as f64),
                        packets.to_string(),
                        bytes.to_string(),
                    ]
                })
                .chain(none)
        })
        .collect();
    print_table(
        &["VNI", "VIP", "M", "BACKEND", "SLOTS", "PACKETS", "BYTES"],
        &rows,
    );
}

fn print_flows(view: &LbView) {
    let flows: Vec<Vec<String>> = view
        .flows
        .iter()
        .map(|f| {
            vec![
                proto(f.proto),
                format!("{}:{}", f.client, f.client_port),
                format!("{}:{}", f.vip, f.port),
                f.backend.to_string(),
            ]
        })
        .collect();
    print_table(&["PROTO", "CLIENT", "VIP", "BACKEND"], &flows);
}

/// Published ports, the extra addresses they answer on, and flows that
/// entered here.
fn print_mesh(view: &LbView) {
    let published: Vec<Vec<String>> = view
        .published
        .iter()
        .map(|p| {
            vec![
                format!("{}/{}", p.published, proto(p.proto)),
                if p.host { "host" } else { "ingress" }.to_string(),
                p.addr.to_string(),
                p.target.to_string(),
            ]
        })
        .collect();
    print_table(
        &["PUBLISHED", "MODE", "TO (VIP or task)", "TARGET"],
        &published,
    );
    if !view.mesh_addresses.is_empty() {
        let a: Vec<String> = view.mesh_addresses.iter().map(|a| a.to_string()).collect();
        println!("also on: {} (besides the advertise address)", a.join(", "));
    }
    println!();
    let mesh_flows: Vec<Vec<String>> = view
        .mesh_flows
        .iter()
        .map(|f| {
            vec![
                proto(f.proto),
                format!("{}:{}", f.client, f.client_port),
                format!("{}:{}", f.node_addr, f.published),
                f.backend.to_string(),
            ]
        })
        .collect();
    print_table(&["PROTO", "CLIENT", "ENTERED AT", "BACKEND"], &mesh_flows);
}

fn print_local(view: &LbView) {
    let local: Vec<Vec<String>> = view
        .local_relays
        .iter()
        .map(|l| {
            vec![
                format!("{}/{}", l.published, proto(l.proto)),
                l.upstream.to_string(),
                l.netns.clone(),
            ]
        })
        .collect();
    print_table(&["LOCAL ACCESS", "RELAYED TO", "FROM NAMESPACE"], &local);
}

/// IPVS mode: each balancing namespace's virtual services (one per VIP,
/// the fwmark being the VIP) with their real servers and connection counts.
fn print_ipvs(mut r: LbReport, vip: Option<Ipv4Addr>, format: Format) -> Result<()> {
    for ns in &mut r.ipvs {
        ns.services
            .retain(|s| vip.is_none_or(|v| Ipv4Addr::from(s.fwmark) == v));
    }
    if format == Format::Json {
        return print_json(&r);
    }
    println!("balancer: IPVS (a balancing namespace per network, fwmark = VIP, NAT)");
    let rows: Vec<Vec<String>> = r
        .ipvs
        .iter()
        .flat_map(|ns| {
            ns.services.iter().flat_map(move |s| {
                let head = vec![
                    ns.vni.to_string(),
                    Ipv4Addr::from(s.fwmark).to_string(),
                    ns.lb_addr.to_string(),
                    s.sched.clone(),
                ];
                let none = s.dests.is_empty().then(|| {
                    let mut r = head.clone();
                    r.extend(["-".into(), "0".into(), "0".into()]);
                    r
                });
                s.dests
                    .iter()
                    .map(move |d| {
                        let mut r = head.clone();
                        r.extend([
                            d.addr.to_string(),
                            d.active.to_string(),
                            d.inactive.to_string(),
                        ]);
                        r
                    })
                    .chain(none)
            })
        })
        .collect();
    print_table(
        &[
            "VNI", "VIP", "SNAT TO", "SCHED", "BACKEND", "ACTIVE", "INACTIVE",
        ],
        &rows,
    );
    Ok(())
}

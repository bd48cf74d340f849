//! `shoal debug monitor`: the local node's datapath events, live — drops
//! with their reason and (when asked) traces of forwarded packets, decoded
//! into one line each (time, node, hook, interface and its endpoint or
//! task, flow, VNI, verdict). Reads the node's pinned ring buffer
//! (`ebpf/c/include/events.h`) and switches reporting on while it runs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde::Serialize;
use shoal_dataplane::ebpf::{
    proto_label, trace_label, DropReason, Event, EV_DROP, MON_DROPS, MON_TRACES,
};
use shoal_dataplane::monitor::{Monitor, MonoClock};
use shoal_dataplane::netns::NetNs;

use crate::output::Format;
use crate::wire::{Endpoint, GossipView};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EventType {
    Drop,
    Trace,
}

#[derive(Args, Debug, Clone)]
pub struct MonitorArgs {
    /// Only drops or only traces (default: both).
    #[arg(long = "type", value_enum)]
    pub kind: Option<EventType>,
    /// Only flows from or to this service (its VIP and its tasks).
    #[arg(long)]
    pub service: Option<String>,
    /// Only flows from or to this task (name, or id prefix).
    #[arg(long)]
    pub task: Option<String>,
    /// Report one trace in N (drops are always all reported).
    #[arg(long, default_value_t = 1)]
    pub sample: u32,
    /// Stop after this many events.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    pub timeout: Option<u64>,
}

/// One decoded event.
#[derive(Serialize, Debug)]
struct Line {
    time: String,
    node: String,
    hook: &'static str,
    interface: String,
    /// The endpoint (and its task) behind the interface, if it is one.
    endpoint: Option<String>,
    task: Option<String>,
    /// `drop` or `trace`.
    kind: &'static str,
    /// The drop reason, or the trace point (encap, decap, local,
    /// mesh_entry, mesh_reply).
    verdict: String,
    proto: String,
    src: String,
    dst: String,
    vni: Option<u32>,
    /// The VTEP a VXLAN packet came from (or, for encap, left by).
    vtep: Option<Ipv4Addr>,
    len: u32,
}

fn ip(k: u32) -> Ipv4Addr {
    Ipv4Addr::from(k.to_ne_bytes())
}

/// What the node knows that names things: endpoints by interface, and
/// addresses of services and tasks.
#[derive(Default)]
struct Names {
    by_if: BTreeMap<String, Endpoint>,
    table: Vec<crate::wire::TableEntry>,
}

impl Names {
    async fn load(socket: &Path) -> Self {
        let api = crate::api::client::Client::new(socket);
        let eps: Vec<Endpoint> = api.get("/v1/endpoints").await.unwrap_or_default();
        let g: Option<GossipView> = api.get("/v1/gossip").await.ok();
        Self {
            by_if: eps.into_iter().map(|e| (e.host_if.clone(), e)).collect(),
            table: g.map(|g| g.table).unwrap_or_default(),
        }
    }

    /// The addresses of a service (VIPs and tasks) or a task.
    fn addrs(&self, service: Option<&str>, task: Option<&str>) -> Option<BTreeSet<Ipv4Addr>> {
        if service.is_none() && task.is_none() {
            return None;
        }
        let svcs = self
            .table
            .iter()
            .filter_map(|e| Some((e.ip, e.svc.as_ref()?)))
            .chain(
                self.by_if
                    .values()
                    .filter_map(|e| Some((e.ip, e.svc.as_ref()?))),
            );
        let mut out = BTreeSet::new();
        for (addr, r) in svcs {
            let by_service = service.is_some_and(|s| r.service == s);
            let by_task = task.is_some_and(|t| r.task == t || r.task_id.starts_with(t));
            if by_service || by_task {
                out.insert(addr);
            }
            if by_service {
                out.extend(r.vip);
            }
        }
        Some(out)
    }
}

/// Interface names by index, resolved in the node's namespace.
fn if_name(netns: Option<&str>, idx: u32, cache: &mut BTreeMap<u32, String>) -> String {
    if let Some(n) = cache.get(&idx) {
        return n.clone();
    }
    let resolve = move || {
        nix::net::if_::if_indextoname(idx)
            .ok()
            .map(|n| n.to_string_lossy().into_owned())
    };
    let name = match netns {
        Some(ns) => NetNs::open(ns)
            .ok()
            .and_then(|ns| ns.run(resolve).ok().flatten()),
        None => resolve(),
    }
    .unwrap_or_else(|| format!("if{idx}"));
    cache.insert(idx, name.clone());
    name
}

pub fn run(
    pins: &Path,
    socket: &Path,
    netns: Option<&str>,
    node: &str,
    a: &MonitorArgs,
    format: Format,
) -> Result<()> {
    if a.sample == 0 {
        bail!("--sample must be at least 1");
    }
    let mut mon = super::pinned(Monitor::open(pins), pins)?;
    let flags = match a.kind {
        Some(EventType::Drop) => MON_DROPS,
        Some(EventType::Trace) => MON_TRACES,
        None => MON_DROPS | MON_TRACES,
    };
    let mut ring = mon.take_ring().context("ring buffer")?;
    // Events already waiting are from an earlier listener: not ours.
    Monitor::drain(&mut ring);
    mon.start(flags, a.sample)?;
    if format != Format::Json {
        eprintln!(
            "listening on {node}'s datapath ({}); Ctrl-C to stop",
            match a.kind {
                Some(EventType::Drop) => "drops",
                Some(EventType::Trace) => "traces",
                None => "drops and traces",
            }
        );
    }
    let rt = super::runtime()?;
    rt.block_on(async move {
        let mut names = Names::load(socket).await;
        let mut loaded = Instant::now();
        let mut filter = names.addrs(a.service.as_deref(), a.task.as_deref());
        let mut ifs = BTreeMap::new();
        let mut ring = ring;
        // Ctrl-C and SIGTERM end the monitor cleanly (it switches reporting
        // back). Listened to from here on: a signal that arrives while
        // events are being printed is not lost.
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let deadline = a
            .timeout
            .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
        let mut seen = 0u64;
        // Monotonic (event) time -> wall clock (events come after this:
        // they used to all get the monitor's start time).
        let clock = MonoClock::now();
        loop {
            // The ring is polled (every 20 ms when idle): a CLI tool's
            // latency, and no fd registration to keep sound.
            let events = Monitor::drain(&mut ring);
            if events.is_empty() {
                tokio::select! {
                    _ = int.recv() => break,
                    _ = term.recv() => break,
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
                if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                    break;
                }
                continue;
            }
            if loaded.elapsed() > Duration::from_secs(5) {
                names = Names::load(socket).await;
                filter = names.addrs(a.service.as_deref(), a.task.as_deref());
                loaded = Instant::now();
            }
            for e in events {
                if let Some(f) = &filter {
                    if !f.contains(&ip(e.saddr)) && !f.contains(&ip(e.daddr)) {
                        continue;
                    }
                }
                let line = decode(&e, node, netns, &names, &mut ifs, &clock);
                if format == Format::Json {
                    println!("{}", serde_json::to_string(&line)?);
                } else {
                    println!(
                        "{} {} {:<3} {:<16} {:<5} {:<24} {:<4} {} -> {}{}{}",
                        line.time,
                        line.node,
                        line.hook,
                        match (&line.task, &line.endpoint) {
                            (Some(t), _) => t.clone(),
                            (None, Some(ep)) => ep.clone(),
                            _ => line.interface.clone(),
                        },
                        line.kind,
                        line.verdict,
                        line.proto,
                        line.src,
                        line.dst,
                        line.vni.map(|v| format!(" vni {v}")).unwrap_or_default(),
                        line.vtep.map(|v| format!(" vtep {v}")).unwrap_or_default(),
                    );
                }
                seen += 1;
                if a.count.is_some_and(|c| seen >= c) {
                    return Ok::<(), anyhow::Error>(());
                }
            }
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                break;
            }
            // Busy: still notice a signal between batches.
            if fired(&mut int) || fired(&mut term) {
                break;
            }
        }
        Ok(())
    })?;
    drop(mon);
    Ok(())
}

fn decode(
    e: &Event,
    node: &str,
    netns: Option<&str>,
    names: &Names,
    ifs: &mut BTreeMap<u32, String>,
    clock: &MonoClock,
) -> Line {
    let interface = if_name(netns, e.ifindex, ifs);
    let ep = names.by_if.get(&interface);
    let at = clock.wall(e.ts_ns);
    let time = humantime::format_rfc3339_micros(at).to_string();
    let port = |p: u16| {
        if e.proto == 6 || e.proto == 17 {
            format!(":{}", u16::from_be(p))
        } else {
            String::new()
        }
    };
    Line {
        time,
        node: node.to_string(),
        hook: if e.hook == 1 { "xdp" } else { "tc" },
        interface,
        endpoint: ep.map(|e| e.name.clone()),
        task: ep.and_then(|e| e.svc.as_ref()).map(|s| s.task.clone()),
        kind: if e.kind == EV_DROP { "drop" } else { "trace" },
        verdict: if e.kind == EV_DROP {
            DropReason::ALL
                .get(e.code as usize)
                .map(|r| r.label().to_string())
                .unwrap_or_else(|| format!("reason {}", e.code))
        } else {
            trace_label(e.code).to_string()
        },
        proto: proto_label(e.proto),
        src: format!("{}{}", ip(e.saddr), port(e.sport)),
        dst: format!("{}{}", ip(e.daddr), port(e.dport)),
        vni: (e.vni != 0).then_some(e.vni),
        vtep: (e.vtep != 0).then(|| ip(e.vtep)),
        len: e.len,
    }
}

/// Whether `sig` has fired, without waiting.
fn fired(sig: &mut tokio::signal::unix::Signal) -> bool {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    matches!(sig.poll_recv(&mut cx), std::task::Poll::Ready(_))
}

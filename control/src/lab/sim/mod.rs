//! `shoal lab sim`: the daemon's gossip (membership from
//! `gossip::roster`: SWIM and the cluster table of node records; the
//! per-network tables from `gossip::netdb`), simulated at full size: 2,384
//! nodes and 96,287 endpoints in one process, on simulated time.
//! `gossip-sim-bench` runs it beside the whole-cluster replication it
//! replaced and prints both.
//!
//! Phases, each measured: a cold start (every node has only its own
//! records; rounds until every node on a network holds all of its
//! records), steady gossip (nothing changes), single changes (rounds until
//! every node on the network has one new endpoint), a killed node (time
//! until every other node has declared it down and dropped its records),
//! a goodbye (until no node holds the leaver's records), and a restart
//! announced to one seed (until every node knows the new process with its
//! record, and until it holds its networks' tables).

mod engine;
mod shape;

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use ipnet::Ipv4Net;
use rand::Rng;
use serde::Serialize;

use crate::gossip::netdb::{Key, Origin};
use engine::{origin, Sim, MEMBERSHIP, TABLES};
pub use shape::Shape;

#[derive(Args, Debug)]
pub struct SimArgs {
    #[arg(long, default_value_t = 2384)]
    pub nodes: usize,
    /// Endpoints over the whole cluster (the mix adds one per node on the
    /// ingress network).
    #[arg(long, default_value_t = 96_287)]
    pub total_endpoints: usize,
    #[arg(long, value_enum, default_value_t = Shape::OneNetwork)]
    pub shape: Shape,
    #[arg(long, default_value_t = 200)]
    pub interval_ms: u64,
    /// Single changes measured, one after the other.
    #[arg(long, default_value_t = 20)]
    pub changes: usize,
    /// Simulated seconds of steady gossip measured.
    #[arg(long, default_value_t = 10)]
    pub steady_s: u64,
    /// Give up on the cold start after this many simulated seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout_s: u64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the report as JSON (else as a table).
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize, Debug)]
pub struct Rate {
    pub mean: f64,
    pub max: f64,
}

#[derive(Serialize, Debug)]
pub struct Report {
    pub shape: Shape,
    pub nodes: usize,
    pub networks: usize,
    pub records: usize,
    pub interval_ms: u64,
    pub cold_converged: bool,
    pub cold_rounds: f64,
    pub cold_seconds: f64,
    /// Bytes/s per node while converging: tables, membership.
    pub cold_table_bytes_per_node_s: Rate,
    pub cold_membership_bytes_per_node_s: Rate,
    pub steady_table_bytes_per_node_s: Rate,
    pub steady_membership_bytes_per_node_s: Rate,
    pub steady_datagrams_per_node_s: f64,
    /// Rounds until every node on the network had the change, per change.
    pub change_rounds: Vec<f64>,
    pub change_rounds_p50: f64,
    pub change_rounds_p99: f64,
    pub change_rounds_max: f64,
    /// Per node and change, the round it arrived in: p50 / p99.
    pub change_arrival_p50: f64,
    pub change_arrival_p99: f64,
    pub killed_detected_p50_s: f64,
    pub killed_detected_everywhere_s: f64,
    pub killed_records_gone_everywhere_s: f64,
    /// A node that said goodbye: until no node holds its records.
    pub goodbye_gone_everywhere_s: f64,
    /// A restarted node (its next process, announced to one seed): until
    /// every node knows it alive with its record, and until it holds its
    /// networks' tables.
    pub restart_known_everywhere_s: f64,
    pub restart_tables_pulled_s: f64,
    /// Alive nodes declared down by someone, over the whole run.
    pub false_downs: usize,
    pub table_bytes_per_node: Rate,
    pub membership_bytes_per_node: f64,
    pub process_rss_bytes: u64,
    pub decode_errors: u64,
    pub wall_s: f64,
}

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() as f64 - 1.0) * p).round() as usize]
}

fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

/// Every node on every network holds each member's records up to that
/// member's own watermark. `pending` holds the (network, node) pairs not
/// yet seen converged (they stay converged while nothing changes).
fn converged(sim: &Sim, pending: &mut Vec<(usize, usize)>) -> bool {
    pending.retain(|&(s, i)| {
        let spec = &sim.specs[s];
        let db = &sim.nodes[i].db;
        !spec.nodes.iter().all(|&j| {
            let o = origin(j);
            let want = sim.nodes[j]
                .db
                .view(spec.vni, &o)
                .map_or(0, |v| v.watermark);
            db.view(spec.vni, &o).map_or(0, |v| v.watermark) >= want
        })
    });
    pending.is_empty()
}

fn rates(sim: &Sim, before: &[[u64; 2]], layer: usize, secs: f64) -> Rate {
    let alive: Vec<f64> = sim
        .bytes
        .iter()
        .zip(before)
        .zip(&sim.nodes)
        .filter(|(_, n)| n.alive)
        .map(|((a, b), _)| (a[layer] - b[layer]) as f64 / secs)
        .collect();
    Rate {
        mean: alive.iter().sum::<f64>() / alive.len().max(1) as f64,
        max: alive.iter().copied().fold(0.0, f64::max),
    }
}

pub fn simulate(a: &SimArgs) -> Result<Report> {
    if a.nodes < 4 {
        bail!("--nodes must be at least 4, got {}", a.nodes);
    }
    if a.total_endpoints == 0 || a.interval_ms == 0 {
        bail!("--total-endpoints and --interval-ms must be above zero");
    }
    let started = Instant::now();
    let specs = shape::build(a.shape, a.nodes, a.total_endpoints, a.seed);
    let networks = specs.len();
    let records: usize = specs.iter().map(|s| s.records()).sum();
    let mut sim = Sim::new(specs, a.nodes, Duration::from_millis(a.interval_ms), a.seed);
    let round = sim.interval_us();
    let subnet: Ipv4Net = "10.128.0.0/9".parse().expect("a subnet");

    // Each node's own records: real endpoint records, as the daemon
    // publishes them.
    let mut k = 0u32;
    for s in 0..sim.specs.len() {
        let (vni, members): (u32, Vec<(usize, u32)>) = {
            let spec = &sim.specs[s];
            (
                spec.vni,
                spec.nodes
                    .iter()
                    .copied()
                    .zip(spec.endpoints.iter().copied())
                    .collect(),
            )
        };
        for (i, count) in members {
            for _ in 0..count {
                let rec =
                    crate::lab::peers::synthetic_record(subnet, &format!("net{vni}"), 1000, k);
                let ip = crate::lab::peers::addr_of(subnet, k);
                let value = serde_json::to_vec(&rec)?;
                sim.set(i, vni, Key::Ep(ip), value);
                k += 1;
            }
        }
    }

    // Cold start.
    let mut pending: Vec<(usize, usize)> = sim
        .specs
        .iter()
        .enumerate()
        .flat_map(|(s, spec)| spec.nodes.iter().map(move |&i| (s, i)))
        .collect();
    let before = sim.bytes.clone();
    let mut rounds = 0u64;
    let limit = a.timeout_s * 1_000_000 / round;
    let mut cold_converged = false;
    while rounds < limit {
        rounds += 1;
        sim.run_to(rounds * round);
        if converged(&sim, &mut pending) {
            cold_converged = true;
            break;
        }
    }
    let cold_secs = (rounds * round) as f64 / 1e6;
    let cold_table = rates(&sim, &before, TABLES, cold_secs);
    let cold_membership = rates(&sim, &before, MEMBERSHIP, cold_secs);

    // Let the cold start's rumors age out and the tables go quiet
    // (`netdb::Config::quiet_after`), then measure a quiet cluster.
    sim.run_to(sim.now + 60 * round);
    let before = sim.bytes.clone();
    let dg_before = sim.datagrams.clone();
    sim.run_to(sim.now + a.steady_s * 1_000_000);
    let steady_table = rates(&sim, &before, TABLES, a.steady_s as f64);
    let steady_membership = rates(&sim, &before, MEMBERSHIP, a.steady_s as f64);
    let dgs: u64 = sim
        .datagrams
        .iter()
        .zip(&dg_before)
        .map(|(x, y)| x[0] + x[1] - y[0] - y[1])
        .sum();
    let steady_datagrams = dgs as f64 / a.nodes as f64 / a.steady_s as f64;
    let cluster = crate::gossip::roster::CLUSTER;
    let table_mem: Vec<f64> = sim
        .nodes
        .iter()
        .map(|n| (n.db.heap_bytes() - n.db.heap_bytes_of(cluster)) as f64)
        .collect();
    // foca's members and the cluster table of node records.
    let membership_mem = sim.nodes[0].roster.swim_members()
        * std::mem::size_of::<foca::Member<crate::gossip::netdb::Origin>>()
        + sim.nodes[0].db.heap_bytes_of(cluster);

    // Single changes: a random node adds an endpoint on one of its networks.
    let mut change_rounds = Vec::new();
    let mut arrivals = Vec::new();
    for c in 0..a.changes {
        let i = sim.rng().random_range(0..a.nodes);
        let on = sim.nodes[i].nets.len();
        let pick = sim.rng().random_range(0..on);
        let s = sim.nodes[i].nets[pick];
        let vni = sim.specs[s].vni;
        let ip = crate::lab::peers::addr_of(subnet, k + c as u32);
        let rec =
            crate::lab::peers::synthetic_record(subnet, &format!("net{vni}"), 1000, k + c as u32);
        let key = Key::Ep(ip);
        let Some(version) = sim.set(i, vni, key, serde_json::to_vec(&rec)?) else {
            bail!("node {i} could not publish on network {vni}");
        };
        let o = origin(i);
        let start = sim.now;
        let mut missing: Vec<usize> = sim.specs[s]
            .nodes
            .iter()
            .copied()
            .filter(|&j| j != i)
            .collect();
        let mut r = 0u64;
        while !missing.is_empty() && r < 100 {
            r += 1;
            sim.run_to(start + r * round);
            missing.retain(|&j| {
                let has = sim.nodes[j]
                    .db
                    .view(vni, &o)
                    .and_then(|v| v.get(&key))
                    .is_some_and(|x| x.version >= version);
                if has {
                    arrivals.push(r as f64);
                }
                !has
            });
        }
        change_rounds.push(if missing.is_empty() {
            r as f64
        } else {
            f64::INFINITY
        });
        sim.run_to(sim.now + 2 * round);
    }

    // A node killed: every other node declares it down and drops its records.
    let victim = sim.rng().random_range(0..a.nodes);
    sim.nodes[victim].alive = false;
    let t0 = sim.now;
    let kill_t0 = t0;
    let vo = origin(victim);
    let mut gone_at = None;
    let mut r = 0u64;
    while r * round < 30_000_000 {
        r += 1;
        sim.run_to(t0 + r * round);
        let holds = sim.nodes.iter().any(|n| {
            n.alive
                && n.nets
                    .iter()
                    .any(|&s| n.db.view(sim.specs[s].vni, &vo).is_some())
        });
        let declared = sim
            .downs
            .iter()
            .filter(|&&(_, m, at)| m == victim && at >= t0)
            .count();
        if !holds && gone_at.is_none() {
            gone_at = Some(sim.now);
        }
        if gone_at.is_some() && declared >= a.nodes - 1 {
            break;
        }
    }
    let detect: Vec<f64> = sim
        .downs
        .iter()
        .filter(|&&(_, m, at)| m == victim && at >= t0)
        .map(|&(_, _, at)| (at - t0) as f64 / 1e6)
        .collect();
    let everywhere = if detect.len() >= a.nodes - 1 {
        detect.iter().copied().fold(0.0, f64::max)
    } else {
        f64::INFINITY
    };
    let false_downs = sim
        .downs
        .iter()
        .filter(|&&(_, m, at)| !(m == victim && at >= t0))
        .count();

    // A node says goodbye: every other node drops its records from every
    // network.
    let alive_pick = |sim: &mut Sim, not: &[usize]| loop {
        let i = sim.rng().random_range(0..a.nodes);
        if sim.nodes[i].alive && !not.contains(&i) {
            break i;
        }
    };
    let leaver = alive_pick(&mut sim, &[victim]);
    let theirs: Vec<(u32, Origin)> = sim.nodes[leaver]
        .nets
        .iter()
        .filter_map(|&s| {
            let vni = sim.specs[s].vni;
            Some((vni, sim.nodes[leaver].db.me_on(vni)?))
        })
        .collect();
    sim.goodbye(leaver);
    let g0 = sim.now;
    let mut goodbye_at = None;
    for r in 1..=50u64 {
        sim.run_to(g0 + r * round);
        let holds = sim.nodes.iter().enumerate().any(|(i, n)| {
            i != leaver && n.alive && theirs.iter().any(|(vni, o)| n.db.view(*vni, o).is_some())
        });
        if !holds {
            goodbye_at = Some(sim.now);
            break;
        }
    }
    sim.nodes[leaver].alive = false;

    // A node restarts: its next process knows only a seed and its own
    // records; every other node learns it (and its record), and it pulls
    // its networks' tables.
    let restarted = alive_pick(&mut sim, &[victim, leaver]);
    let seed = alive_pick(&mut sim, &[victim, leaver, restarted]);
    let new = sim.restart(restarted, seed, a.seed ^ 0x5eed);
    let t0 = sim.now;
    let (mut known_at, mut pulled_at) = (None, None);
    let mut pending: Vec<usize> = (0..a.nodes)
        .filter(|&i| i != restarted && sim.nodes[i].alive)
        .collect();
    for r in 1..=150u64 {
        sim.run_to(t0 + r * round);
        pending.retain(|&i| {
            let n = &mut sim.nodes[i];
            !(n.roster.liveness(&new) == Some(crate::gossip::roster::Liveness::Alive)
                && n.roster.record_of(&n.db, &new).is_some())
        });
        if pending.is_empty() && known_at.is_none() {
            known_at = Some(sim.now);
        }
        if pulled_at.is_none() && pulled(&sim, restarted) {
            pulled_at = Some(sim.now);
        }
        if known_at.is_some() && pulled_at.is_some() {
            break;
        }
    }
    let since = |t: Option<u64>| t.map_or(f64::INFINITY, |t| (t - t0) as f64 / 1e6);
    let (restart_known_everywhere_s, restart_tables_pulled_s) = (since(known_at), since(pulled_at));
    let goodbye_gone_everywhere_s = goodbye_at.map_or(f64::INFINITY, |g| (g - g0) as f64 / 1e6);

    let r = |x: f64| x / (round as f64 / 1e6);
    Ok(Report {
        shape: a.shape,
        nodes: a.nodes,
        networks,
        records,
        interval_ms: a.interval_ms,
        cold_converged,
        cold_rounds: r(cold_secs),
        cold_seconds: cold_secs,
        cold_table_bytes_per_node_s: cold_table,
        cold_membership_bytes_per_node_s: cold_membership,
        steady_table_bytes_per_node_s: steady_table,
        steady_membership_bytes_per_node_s: steady_membership,
        steady_datagrams_per_node_s: steady_datagrams,
        change_rounds_p50: pct(&change_rounds, 0.5),
        change_rounds_p99: pct(&change_rounds, 0.99),
        change_rounds_max: change_rounds.iter().copied().fold(0.0, f64::max),
        change_rounds,
        change_arrival_p50: pct(&arrivals, 0.5),
        change_arrival_p99: pct(&arrivals, 0.99),
        killed_detected_p50_s: pct(&detect, 0.5),
        killed_detected_everywhere_s: everywhere,
        killed_records_gone_everywhere_s: gone_at
            .map_or(f64::INFINITY, |g| (g - kill_t0) as f64 / 1e6),
        goodbye_gone_everywhere_s,
        restart_known_everywhere_s,
        restart_tables_pulled_s,
        false_downs,
        table_bytes_per_node: Rate {
            mean: table_mem.iter().sum::<f64>() / table_mem.len() as f64,
            max: table_mem.iter().copied().fold(0.0, f64::max),
        },
        membership_bytes_per_node: membership_mem as f64,
        process_rss_bytes: rss(),
        decode_errors: sim.decode_errors,
        wall_s: started.elapsed().as_secs_f64(),
    })
}

/// Whether the restarted node `i` holds, on each of its networks, every
/// live member's records up to that member's own watermark.
fn pulled(sim: &Sim, i: usize) -> bool {
    sim.nodes[i].nets.iter().all(|&s| {
        let vni = sim.specs[s].vni;
        sim.specs[s].nodes.iter().all(|&j| {
            let n = &sim.nodes[j];
            if j == i || !n.alive {
                return true;
            }
            let Some(o) = n.db.me_on(vni) else {
                return true;
            };
            let want = n.db.view(vni, &o).map_or(0, |v| v.watermark);
            sim.nodes[i].db.view(vni, &o).map_or(0, |v| v.watermark) >= want
        })
    })
}

/// "tables (max busiest), membership" in KB/s.
fn traffic(tables: &Rate, membership: &Rate) -> String {
    let kb = |x: f64| format!("{:.1} KB/s", x / 1000.0);
    format!(
        "{} (max {}), {}",
        kb(tables.mean),
        kb(tables.max),
        kb(membership.mean)
    )
}

pub fn run(a: SimArgs) -> Result<()> {
    let report = simulate(&a)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let rows = [
        ("shape", format!("{:?}", report.shape)),
        (
            "nodes / networks / records",
            format!(
                "{} / {} / {}",
                report.nodes, report.networks, report.records
            ),
        ),
        (
            "cold start: rounds, simulated s",
            format!(
                "{:.0}, {:.1} (converged: {})",
                report.cold_rounds, report.cold_seconds, report.cold_converged
            ),
        ),
        (
            "cold start: tables, membership per node",
            traffic(
                &report.cold_table_bytes_per_node_s,
                &report.cold_membership_bytes_per_node_s,
            ),
        ),
        (
            "steady: tables, membership per node",
            traffic(
                &report.steady_table_bytes_per_node_s,
                &report.steady_membership_bytes_per_node_s,
            ),
        ),
        (
            "one change, rounds to all: p50 / p99 / max",
            format!(
                "{} / {} / {}",
                report.change_rounds_p50, report.change_rounds_p99, report.change_rounds_max
            ),
        ),
        (
            "killed node down everywhere, s (p50)",
            format!(
                "{:.2} ({:.2})",
                report.killed_detected_everywhere_s, report.killed_detected_p50_s
            ),
        ),
        (
            "goodbye: records gone everywhere, s",
            format!("{:.2}", report.goodbye_gone_everywhere_s),
        ),
        (
            "restart: known everywhere, tables pulled, s",
            format!(
                "{:.2}, {:.2}",
                report.restart_known_everywhere_s, report.restart_tables_pulled_s
            ),
        ),
        (
            "tables per node, MB (max)",
            format!(
                "{:.1} ({:.1})",
                report.table_bytes_per_node.mean / 1e6,
                report.table_bytes_per_node.max / 1e6
            ),
        ),
        (
            "false downs, decode errors",
            format!("{}, {}", report.false_downs, report.decode_errors),
        ),
        ("wall time, s", format!("{:.0}", report.wall_s)),
    ];
    for (k, v) in rows {
        println!("{k:<45} {v}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(shape: Shape) -> SimArgs {
        SimArgs {
            nodes: 200,
            total_endpoints: 8_000,
            shape,
            interval_ms: 200,
            changes: 10,
            steady_s: 5,
            timeout_s: 60,
            seed: 7,
            json: false,
        }
    }

    /// The design at the suite's size (200 nodes, Swarm2000's endpoints
    /// per node), both shapes: the full size is `gossip-sim-bench`'s.
    #[test]
    fn two_hundred_nodes_converge_spread_changes_and_detect_a_death() {
        for shape in [Shape::OneNetwork, Shape::Mix] {
            let r = simulate(&args(shape)).unwrap();
            let msg = format!("{shape:?}: {r:#?}");
            assert!(r.cold_converged, "{msg}");
            assert!(r.cold_rounds <= 20.0, "{msg}");
            assert!(r.change_rounds_max <= 12.0, "{msg}");
            assert!(r.killed_detected_everywhere_s < 3.0, "{msg}");
            assert!(r.killed_records_gone_everywhere_s < 3.0, "{msg}");
            assert!(r.goodbye_gone_everywhere_s < 2.0, "{msg}");
            assert!(r.restart_known_everywhere_s < 3.0, "{msg}");
            assert!(r.restart_tables_pulled_s < 5.0, "{msg}");
            assert_eq!((r.false_downs, r.decode_errors), (0, 0), "{msg}");
            let steady =
                r.steady_table_bytes_per_node_s.max + r.steady_membership_bytes_per_node_s.max;
            assert!(steady < 10_000.0, "{msg}");
        }
    }

    #[test]
    fn nonsense_sizes_are_refused() {
        let mut a = args(Shape::OneNetwork);
        a.nodes = 2;
        assert!(simulate(&a).unwrap_err().to_string().contains("--nodes"));
        let mut a = args(Shape::Mix);
        a.total_endpoints = 0;
        assert!(simulate(&a).is_err());
    }
}

//! `shoal lab peers`: simulated gossip peers for measuring a real daemon
//! at size. Each peer is the daemon's own gossip (`gossip::Gossip`: the
//! sealed transport, membership, the network's table) on its own
//! address, publishing its share of a network's endpoints as tasks of
//! services, so the daemons they reach hold a table as big as asked
//! (Swarm2000: 96,287 endpoints) without a namespace per endpoint.
//!
//! Run it in a namespace on the lab's underlay that holds the peers'
//! addresses (`daemon-scale-bench` sets that up). It prints `ready` once
//! every record is published, then reads commands on stdin, one per line:
//!
//! - `add K`: peer K % N publishes one more endpoint; prints `added IP`.
//! - `rm IP`: the peer that published IP withdraws it; prints `removed IP`.
//!
//! and stops (saying goodbye) at end of input or on SIGTERM.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use ipnet::Ipv4Net;
use tokio::io::AsyncBufReadExt;

use crate::gossip::keys::{read_key_file, GossipKeys, SwarmKeys};
use crate::gossip::{Gossip, GossipConfig};
use crate::wire::{EpRecord, SvcRecord, TaskHealth};

#[derive(Args, Debug)]
pub struct PeersArgs {
    /// How many peers (one address each, counting up from --first-addr).
    #[arg(long, default_value_t = 24)]
    pub peers: u32,
    #[arg(long)]
    pub first_addr: Ipv4Addr,
    /// Endpoints, over all peers.
    #[arg(long, default_value_t = 96_287)]
    pub endpoints: u32,
    /// Services the endpoints are tasks of (round robin), each with a VIP.
    #[arg(long, default_value_t = 1000)]
    pub services: u32,
    /// The network's name, VNI and subnet, as the daemons have it.
    #[arg(long)]
    pub network: String,
    #[arg(long)]
    pub vni: u32,
    #[arg(long)]
    pub subnet: Ipv4Net,
    /// A daemon to join through (ADDR:PORT).
    #[arg(long)]
    pub join: String,
    #[arg(long)]
    pub cluster_id: String,
    /// The key an endpoint-only lab's daemons gossip with...
    #[arg(long, required_unless_present = "gossip_keys_of")]
    pub gossip_key_file: Option<PathBuf>,
    /// ...or a swarm node's data directory: the swarm's key ring it holds.
    #[arg(long, conflicts_with = "gossip_key_file")]
    pub gossip_keys_of: Option<PathBuf>,
    #[arg(long, default_value_t = 200)]
    pub gossip_interval_ms: u64,
}

/// The k-th endpoint's address: from the subnet's third address up (the
/// daemons' own endpoints use the first ones); the VIPs count down from
/// the top of the subnet.
pub fn addr_of(subnet: Ipv4Net, k: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 16 + k)
}

fn vip_of(subnet: Ipv4Net, s: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.broadcast()) - 1 - s)
}

/// A 25-character id as Docker's look: distinct in its first 12, which
/// DNS answers as a task's short id.
fn id_of(n: u64) -> String {
    let h = n.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    format!("{h:016x}{:09x}", h >> 28)
}

fn record(a: &PeersArgs, k: u32) -> EpRecord {
    synthetic_record(a.subnet, &a.network, a.services, k)
}

/// The k-th endpoint of a synthetic table: a task of one of `services`
/// services (round robin), each with a VIP, shaped as the daemon's own.
pub fn synthetic_record(subnet: Ipv4Net, network: &str, services: u32, k: u32) -> EpRecord {
    let ip = addr_of(subnet, k);
    let o = ip.octets();
    let s = k % services;
    let slot = k / services + 1;
    EpRecord {
        mac: format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3]),
        net: network.to_string(),
        since: crate::clock::now_ms(),
        svc: Some(SvcRecord {
            service_id: id_of(u64::from(s) | 1 << 40),
            service: format!("svc{s}"),
            task_id: id_of(u64::from(k)),
            task: format!("svc{s}.{slot}"),
            slot: slot as u64,
            network: network.to_string(),
            vip: Some(vip_of(subnet, s)),
            aliases: vec![],
            health: TaskHealth::None,
        }),
        container: None,
    }
}

pub fn run(a: PeersArgs) -> Result<()> {
    if a.peers == 0 || a.services == 0 {
        bail!("--peers and --services must be at least 1");
    }
    let room = a.subnet.hosts().count() as u64;
    if u64::from(a.endpoints) + u64::from(a.services) + 32 > room {
        bail!(
            "{} endpoints and {} VIPs do not fit {} ({room} addresses)",
            a.endpoints,
            a.services,
            a.subnet
        );
    }
    let keys = match (&a.gossip_key_file, &a.gossip_keys_of) {
        (Some(f), _) => GossipKeys::new(
            false,
            Some(read_key_file(f).with_context(|| format!("gossip key file {}", f.display()))?),
            None,
        ),
        (None, Some(dir)) => GossipKeys::new(
            false,
            None,
            Some(
                SwarmKeys::load(dir)
                    .with_context(|| format!("no swarm gossip keys under {}", dir.display()))?,
            ),
        ),
        (None, None) => bail!("--gossip-key-file or --gossip-keys-of"),
    };
    tokio::runtime::Runtime::new()?.block_on(serve(a, Arc::new(keys)))
}

async fn serve(a: PeersArgs, keys: Arc<GossipKeys>) -> Result<()> {
    let mut peers = vec![];
    for i in 0..a.peers {
        let ip = Ipv4Addr::from(u32::from(a.first_addr) + i);
        let addr = SocketAddr::new(ip.into(), 7946);
        let cfg = GossipConfig {
            node: format!("peer{i}"),
            generation: crate::clock::now_ms(),
            advertise: addr,
            listen: addr,
            seeds: vec![a.join.clone()],
            cluster_id: a.cluster_id.clone(),
            interval: Duration::from_millis(a.gossip_interval_ms),
            keys: keys.clone(),
            peers_file: None,
        };
        let initial = (i..a.endpoints)
            .step_by(a.peers as usize)
            .map(|k| {
                (
                    crate::gossip::table::ep_key(a.vni, addr_of(a.subnet, k)),
                    serde_json::to_string(&record(&a, k)).expect("record serialises"),
                )
            })
            .collect();
        let g = Gossip::start(&cfg, initial)
            .await
            .with_context(|| format!("peer {i} on {addr}"))?;
        peers.push(Arc::new(g));
    }
    // Who published what, for `rm`.
    let mut owner: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
    let mut next = a.endpoints;
    say("ready");
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let line = tokio::select! {
            l = lines.next_line() => l?,
            _ = term.recv() => None,
        };
        let Some(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["add", k] => {
                let Ok(k) = k.parse::<usize>() else {
                    say(&format!("error: not a number: {k}"));
                    continue;
                };
                let p = k % peers.len();
                let ip = addr_of(a.subnet, next);
                peers[p].publish(a.vni, ip, &record(&a, next)).await;
                owner.insert(ip, p);
                next += 1;
                say(&format!("added {ip}"));
            }
            ["rm", ip] => match ip
                .parse::<Ipv4Addr>()
                .ok()
                .and_then(|i| owner.remove(&i).map(|p| (i, p)))
            {
                Some((ip, p)) => {
                    peers[p].withdraw(a.vni, ip).await;
                    say(&format!("removed {ip}"));
                }
                None => say(&format!("error: no endpoint {ip} added here")),
            },
            _ => say(&format!("error: unknown command {line:?} (add K, rm IP)")),
        }
    }
    let mut leaving = tokio::task::JoinSet::new();
    for g in peers {
        leaving.spawn(async move { g.leave().await });
    }
    while leaving.join_next().await.is_some() {}
    Ok(())
}

fn say(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{s}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_vips_stay_apart_inside_the_subnet() {
        let subnet: Ipv4Net = "10.64.0.0/15".parse().unwrap();
        assert_eq!(addr_of(subnet, 0), Ipv4Addr::new(10, 64, 0, 16));
        assert_eq!(vip_of(subnet, 0), Ipv4Addr::new(10, 65, 255, 254));
        let last = addr_of(subnet, 96_286);
        assert!(subnet.contains(&last) && last < vip_of(subnet, 999));
    }

    fn args(peers: u32, endpoints: u32, subnet: &str) -> PeersArgs {
        PeersArgs {
            peers,
            first_addr: "198.18.0.101".parse().unwrap(),
            endpoints,
            services: 10,
            network: "n".into(),
            vni: 4097,
            subnet: subnet.parse().unwrap(),
            join: "198.18.0.1:7946".into(),
            cluster_id: "c".into(),
            gossip_key_file: Some("/nonexistent/key".into()),
            gossip_keys_of: None,
            gossip_interval_ms: 200,
        }
    }

    #[test]
    fn bad_input_is_refused_with_a_clear_error_before_anything_starts() {
        let err = |a| format!("{:#}", run(a).unwrap_err());
        assert!(err(args(0, 10, "10.0.0.0/24")).contains("at least 1"));
        assert!(err(args(2, 300, "10.0.0.0/24")).contains("do not fit"));
        assert!(err(args(2, 10, "10.0.0.0/24")).contains("gossip key file"));
    }

    #[test]
    fn ids_look_like_docker_s_and_differ_in_their_short_form() {
        let short: std::collections::BTreeSet<String> =
            (0..100_000).map(|k| id_of(k)[..12].to_string()).collect();
        assert_eq!(short.len(), 100_000);
        assert_eq!(id_of(7).len(), 25);
    }
}

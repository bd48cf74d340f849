//! In-process scheduling at scale, without processes (`shoal debug
//! schedule-sim`): N simulated nodes, one replicated service of T tasks on
//! one network with a constraint and a max-per-node, planned and applied
//! exactly as the leader does. Reports time, spread and peak memory.

use std::time::Instant;

use serde::Serialize;

use super::plan::plan;
use crate::raft::state::ClusterState;
use crate::wire::NetworkSpec;
use crate::wire::{Availability, Command, NodeRecord, NodeState, Role};
use crate::wire::{EndpointMode, Mode, NetAttach, RestartPolicy, ServiceSpec};

#[derive(Debug, Serialize)]
pub struct SimReport {
    pub nodes: usize,
    pub tasks: u64,
    pub max_per_node: u64,
    pub constraint: String,
    pub plan_ms: f64,
    pub apply_ms: f64,
    pub scheduled: usize,
    pub pending: usize,
    pub per_node_min: u64,
    pub per_node_max: u64,
    pub peak_rss_mb: f64,
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

pub fn run(nodes: usize, tasks: u64, max_per_node: u64) -> SimReport {
    let mut st = ClusterState::default();
    for i in 0..nodes {
        let node = NodeRecord {
            ipsec: Default::default(),
            cert_not_after_ms: None,
            cert_issuer: None,
            id: format!("node{i:05}"),
            raft_id: None,
            hostname: format!("h{i}"),
            addr: std::net::Ipv4Addr::from(0xc612_0000u32 + i as u32 + 1),
            role: if i < 3 { Role::Manager } else { Role::Worker },
            availability: Availability::Active,
            labels: [("zone".to_string(), format!("z{}", i % 4))].into(),
            state: NodeState::Ready,
            version: 0,
        };
        st.apply(1, Command::NodeAdd { node });
    }
    st.apply(
        2,
        Command::NetworkCreate {
            id: "net".into(),
            spec: NetworkSpec {
                name: "big".into(),
                subnet: Some("10.128.0.0/14".parse().expect("valid")),
                ..Default::default()
            },
            now: 0,
        },
    );
    let constraint = "node.role==worker".to_string();
    let spec = ServiceSpec {
        name: "swarm2000".into(),
        mode: Mode::Replicated { replicas: tasks },
        command: vec!["true".into()],
        env: vec![],
        workdir: None,
        networks: vec![NetAttach {
            target: "big".into(),
            aliases: vec![],
        }],
        endpoint_mode: EndpointMode::Vip,
        ports: vec![],
        constraints: vec![constraint.clone()],
        placement_prefs: vec![],
        max_per_node,
        restart: RestartPolicy::default(),
        health: None,
        stop_grace_ms: 10_000,
        labels: Default::default(),
        update: Default::default(),
        rollback: Default::default(),
        force_update: 0,
    };
    st.apply(
        3,
        Command::ServiceCreate {
            id: "svc".into(),
            spec,
            now: 0,
        },
    );
    let mut n = 0u64;
    let mut id = || {
        n += 1;
        format!("t{n:08}")
    };
    let t0 = Instant::now();
    let cmds = plan(&st, 1, &mut id);
    let plan_ms = t0.elapsed().as_secs_f64() * 1e3;
    let t1 = Instant::now();
    for c in cmds {
        st.apply(4, c);
    }
    let apply_ms = t1.elapsed().as_secs_f64() * 1e3;
    let mut per: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    let mut pending = 0;
    for t in st.tasks.values() {
        match &t.node_id {
            Some(n) => *per.entry(n.as_str()).or_default() += 1,
            None => pending += 1,
        }
    }
    SimReport {
        nodes,
        tasks,
        max_per_node,
        constraint,
        plan_ms,
        apply_ms,
        scheduled: st.tasks.len() - pending,
        pending,
        per_node_min: per.values().copied().min().unwrap_or(0),
        per_node_max: per.values().copied().max().unwrap_or(0),
        peak_rss_mb: peak_rss_mb(),
    }
}

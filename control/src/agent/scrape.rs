//! One metrics scrape of this node (`crate::metrics`): everything read
//! fresh, nothing kept between scrapes.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use shoal_dataplane::lb::{LbMaps, MeshMaps};

use super::Agent;

/// What a balancer sent one backend of one service.
#[derive(Debug, Default)]
pub struct BackendCount {
    pub service: String,
    pub vip: String,
    pub backend: String,
    pub packets: u64,
    pub bytes: u64,
}

/// One local endpoint's traffic.
#[derive(Debug, Default)]
pub struct EndpointCount {
    pub name: String,
    pub network: String,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
}

#[derive(Debug, Default)]
pub struct RaftSnap {
    pub term: u64,
    pub is_leader: bool,
    pub commit_lag: u64,
    pub leader_changes: u64,
}

/// One scrape's values.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub node: String,
    pub forwarded: Vec<(String, u64)>,
    pub drops: Vec<(String, u64)>,
    pub endpoints: Vec<EndpointCount>,
    pub backends: Vec<BackendCount>,
    /// (table, entries, capacity)
    pub conntrack: Vec<(String, u64, u64)>,
    /// (VIP, Maglev slots, backends)
    pub maglev: Vec<(String, u64, u64)>,
    /// (alive | dead, nodes)
    pub gossip_members: Vec<(String, u64)>,
    pub gossip_max_age_s: f64,
    /// Other nodes' new endpoints: creation there -> in this node's table.
    pub gossip_propagation: shoal_dns::LatencyStats,
    pub programming_passes: shoal_dns::LatencyStats,
    /// Refused gossip by reason: datagrams (sealing, SWIM, tables) and entries
    /// (the merge rules).
    pub gossip_refused: Vec<(String, u64)>,
    /// Refused control-port handshakes by reason (a manager's).
    pub control_refused: Vec<(String, u64)>,
    pub gossip_traffic: crate::wire::GossipTraffic,
    pub gossip_keys: crate::wire::GossipKeysView,
    /// Per peer node, its IPsec SAs (encrypted networks).
    pub ipsec: Vec<crate::wire::IpsecPeerView>,
    pub raft: Option<RaftSnap>,
    pub dns: shoal_dns::Stats,
    /// (local | forwarded, latency histogram)
    pub dns_latency: Vec<(String, shoal_dns::LatencyStats)>,
    /// (state, tasks)
    pub tasks: Vec<(String, u64)>,
}

impl Agent {
    pub async fn metrics_snapshot(&self) -> Snapshot {
        let mut s = Snapshot {
            node: self.info.node.clone(),
            ..Default::default()
        };
        let names = self.vip_names().await;
        {
            let inner = self.inner.lock().await;
            let c = inner.maps.counters();
            s.forwarded = c.stats;
            s.drops = c.drops;
            let traffic = inner.maps.endpoint_traffic();
            s.endpoints = inner
                .state
                .endpoints
                .iter()
                .map(|e| {
                    let t = nix::net::if_::if_nametoindex(e.host_if.as_str())
                        .ok()
                        .and_then(|i| traffic.get(&i).copied())
                        .unwrap_or_default();
                    EndpointCount {
                        name: e.name.clone(),
                        network: e.network.clone(),
                        tx_packets: t.tx_packets,
                        tx_bytes: t.tx_bytes,
                        rx_packets: t.rx_packets,
                        rx_bytes: t.rx_bytes,
                    }
                })
                .collect();
            let pins = inner.overlay.pin_dir().to_path_buf();
            drop(inner);
            if let Ok(lb) = LbMaps::open(&pins) {
                s.backends = lb
                    .counters()
                    .into_iter()
                    .map(|c| BackendCount {
                        service: names.get(&(c.vni, c.vip)).cloned().unwrap_or_default(),
                        vip: c.vip.to_string(),
                        backend: c.backend.to_string(),
                        packets: c.packets,
                        bytes: c.bytes,
                    })
                    .collect();
                s.maglev = lb
                    .services()
                    .into_iter()
                    .map(|v| (v.vip.to_string(), v.m as u64, v.backends.len() as u64))
                    .collect();
                let (ct, rct) = lb.conntrack_entries();
                s.conntrack.push(("lb".into(), ct, LbMaps::CT_CAPACITY));
                s.conntrack
                    .push(("lb_reverse".into(), rct, LbMaps::CT_CAPACITY));
            }
            if let Ok(m) = MeshMaps::open(&pins) {
                let (ct, rev) = m.conntrack_entries();
                s.conntrack.push(("mesh".into(), ct, MeshMaps::CT_CAPACITY));
                s.conntrack
                    .push(("mesh_reverse".into(), rev, MeshMaps::CT_CAPACITY));
            }
        }
        {
            let inner = self.inner.lock().await;
            s.gossip_propagation = inner.programmer.propagation.stats();
            s.programming_passes = inner.programmer.passes.stats();
        }
        s.gossip_refused = self.gossip_view_refused().await;
        s.gossip_traffic = self.gossip.counters.traffic();
        s.gossip_keys = self.gossip.keys.current().view();
        s.ipsec = self.ipsec_view().await.peers;
        let members = self.gossip.members().await;
        let alive = members.iter().filter(|m| m.live).count() as u64;
        s.gossip_members = vec![
            ("alive".into(), alive),
            ("dead".into(), members.len() as u64 - alive),
        ];
        s.gossip_max_age_s = members
            .iter()
            .filter(|m| m.live && !m.is_self)
            .filter_map(|m| m.heard_ms_ago)
            .max()
            .unwrap_or(0) as f64
            / 1e3;
        let (manager, control_refused) = match self.swarm.lock().await.as_ref() {
            Some(sw) => (sw.manager.clone(), sw.tls.refusals()),
            None => (None, Default::default()),
        };
        if manager.is_some() {
            s.control_refused = control_refused.into_iter().collect();
        }
        if let Some(m) = manager {
            let r = m.raft_metrics();
            s.raft = Some(RaftSnap {
                term: r.term,
                is_leader: r.is_leader,
                commit_lag: r.commit_lag,
                leader_changes: r.leader_changes,
            });
        }
        s.dns = self.dns.server.stats();
        s.dns_latency = self
            .dns
            .server
            .latency()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let mut tasks: BTreeMap<String, u64> = BTreeMap::new();
        for t in self.local_tasks() {
            *tasks
                .entry(format!("{:?}", t.state).to_lowercase())
                .or_default() += 1;
        }
        s.tasks = tasks.into_iter().collect();
        s
    }

    /// Service names by (VNI, VIP), from the gossiped task records.
    async fn vip_names(&self) -> BTreeMap<(u32, Ipv4Addr), String> {
        self.task_addresses()
            .await
            .into_iter()
            .filter_map(|(vni, _, rec)| Some(((vni, rec.vip?), rec.service)))
            .collect()
    }
}

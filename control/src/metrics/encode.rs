//! A scrape's values in the Prometheus/OpenMetrics text format, through
//! prometheus-client: the values are read fresh at each scrape (the
//! dataplane's counters live in BPF maps, the rest in the agent), so they
//! go out through a `Collector` as constant metrics rather than as
//! instruments the hot paths would have to bump twice.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::agent::scrape::{BackendCount, EndpointCount, Snapshot};

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A metric family: one name, many label sets.
fn family<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    rows: impl IntoIterator<Item = (Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let mut rows = rows.into_iter().peekable();
    let Some((_, first)) = rows.peek() else {
        return Ok(());
    };
    let mut m = enc.encode_descriptor(name, help, unit, first.metric_type())?;
    for (l, v) in rows {
        v.encode(m.encode_family(&l)?)?;
    }
    Ok(())
}

fn counter(v: u64) -> ConstCounter<u64> {
    ConstCounter::new(v)
}

fn gauge(v: i64) -> ConstGauge<i64> {
    ConstGauge::new(v)
}

/// A histogram from cumulative bucket counts (prometheus-client's own
/// Histogram is an instrument; this one is read from the DNS server's).
#[derive(Debug)]
struct ConstHistogram {
    sum: f64,
    count: u64,
    /// (upper bound, cumulative count), ending with +Inf.
    buckets: Vec<(f64, u64)>,
}

impl ConstHistogram {
    /// From per-bucket counts: Prometheus wants them cumulative, with +Inf.
    fn of(h: &shoal_dns::LatencyStats) -> Self {
        let mut cum = 0;
        let mut buckets: Vec<(f64, u64)> = h
            .bounds
            .iter()
            .zip(&h.buckets)
            .map(|(b, n)| {
                cum += n;
                (*b, cum)
            })
            .collect();
        buckets.push((f64::INFINITY, h.count));
        Self {
            sum: h.sum_seconds,
            count: h.count,
            buckets,
        }
    }
}

impl EncodeMetric for ConstHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.sum,
            self.count,
            &self.buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn ep_labels(ep: &EndpointCount, direction: &str) -> Labels {
    labels(&[
        ("endpoint", &ep.name),
        ("network", &ep.network),
        ("direction", direction),
    ])
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let e = &mut enc;
        family(
            e,
            "shoal_dataplane_forwarded_packets",
            "Packets the eBPF dataplane forwarded, by action (encap, decap, local, lb_dnat, mesh_entry, ...).",
            None,
            self.forwarded
                .iter()
                .map(|(a, v)| (labels(&[("action", a)]), counter(*v))),
        )?;
        family(
            e,
            "shoal_dataplane_drops",
            "Packets the eBPF dataplane dropped, by reason.",
            None,
            self.drops
                .iter()
                .map(|(r, v)| (labels(&[("reason", r)]), counter(*v))),
        )?;
        family(
            e,
            "shoal_endpoint_packets",
            "Packets each local endpoint sent (tx) and was delivered (rx).",
            None,
            self.endpoints.iter().flat_map(|ep| {
                [("tx", ep.tx_packets), ("rx", ep.rx_packets)]
                    .map(|(d, v)| (ep_labels(ep, d), counter(v)))
            }),
        )?;
        family(
            e,
            "shoal_endpoint",
            "Bytes each local endpoint sent (tx) and was delivered (rx).",
            Some(&Unit::Bytes),
            self.endpoints.iter().flat_map(|ep| {
                [("tx", ep.tx_bytes), ("rx", ep.rx_bytes)]
                    .map(|(d, v)| (ep_labels(ep, d), counter(v)))
            }),
        )?;
        let backend_labels = |b: &BackendCount| {
            labels(&[
                ("service", &b.service),
                ("vip", &b.vip),
                ("backend", &b.backend),
            ])
        };
        family(
            e,
            "shoal_service_packets",
            "Packets this node's balancer sent to each backend of each service (VIP and routing mesh).",
            None,
            self.backends
                .iter()
                .map(|b| (backend_labels(b), counter(b.packets))),
        )?;
        family(
            e,
            "shoal_service",
            "Bytes this node's balancer sent to each backend of each service.",
            Some(&Unit::Bytes),
            self.backends
                .iter()
                .map(|b| (backend_labels(b), counter(b.bytes))),
        )?;
        family(
            e,
            "shoal_conntrack_entries",
            "Entries in each connection-tracking table.",
            None,
            self.conntrack
                .iter()
                .map(|(t, n, _)| (labels(&[("table", t)]), gauge(*n as i64))),
        )?;
        family(
            e,
            "shoal_conntrack_capacity_entries",
            "Size of each connection-tracking table (LRU: the oldest entries go when full).",
            None,
            self.conntrack
                .iter()
                .map(|(t, _, c)| (labels(&[("table", t)]), gauge(*c as i64))),
        )?;
        family(
            e,
            "shoal_maglev_table_slots",
            "Slots of each service's Maglev table on this node.",
            None,
            self.maglev
                .iter()
                .map(|(s, m, _)| (labels(&[("vip", s)]), gauge(*m as i64))),
        )?;
        family(
            e,
            "shoal_service_backends",
            "Healthy backends in each service's Maglev table on this node.",
            None,
            self.maglev
                .iter()
                .map(|(s, _, n)| (labels(&[("vip", s)]), gauge(*n as i64))),
        )?;
        family(
            e,
            "shoal_gossip_members",
            "Nodes this node's gossip knows, by state (alive, dead).",
            None,
            self.gossip_members
                .iter()
                .map(|(s, n)| (labels(&[("state", s)]), gauge(*n as i64))),
        )?;
        family(
            e,
            "shoal_gossip_heartbeat_age_max",
            "Age of the stalest live peer's last heartbeat: how far the gossip view may lag.",
            Some(&Unit::Seconds),
            [(labels(&[]), ConstGauge::new(self.gossip_max_age_s))],
        )?;
        family(
            e,
            "shoal_gossip_propagation",
            "Time from another node creating an endpoint to this node knowing it (gossip convergence; compares node clocks).",
            Some(&Unit::Seconds),
            [(labels(&[]), ConstHistogram::of(&self.gossip_propagation))],
        )?;
        family(
            e,
            "shoal_programming_pass",
            "How long each programming pass took: gossip merged with the local table, remote endpoints, DNS, balancers and the mesh reprogrammed.",
            Some(&Unit::Seconds),
            [(labels(&[]), ConstHistogram::of(&self.programming_passes))],
        )?;
        family(
            e,
            "shoal_control_handshakes_refused",
            "Control-port (2377) TLS handshakes a manager refused, by reason: expired, revoked (a removed node), unknown_ca, bad_certificate, malformed (not TLS), timeout.",
            None,
            self.control_refused
                .iter()
                .map(|(r, n)| (labels(&[("reason", r)]), counter(*n))),
        )?;
        family(
            e,
            "shoal_gossip_refused",
            "Gossip refused, by reason: datagrams (no_key, unknown_key, open_failed, replay, malformed, foreign_cluster, malformed_packets) and entries (duplicate_ip, outside_subnet, ...).",
            None,
            self.gossip_refused
                .iter()
                .map(|(r, n)| (labels(&[("reason", r)]), counter(*n))),
        )?;
        let t = &self.gossip_traffic;
        family(
            e,
            "shoal_gossip_datagrams",
            "Gossip datagrams on the wire (sealed), by direction.",
            None,
            [
                ("sent", t.sent_datagrams),
                ("received", t.received_datagrams),
            ]
            .map(|(d, n)| (labels(&[("direction", d)]), counter(n))),
        )?;
        family(
            e,
            "shoal_gossip",
            "Gossip bytes on the wire (sealed sizes), by direction.",
            Some(&Unit::Bytes),
            [("sent", t.sent_bytes), ("received", t.received_bytes)]
                .map(|(d, n)| (labels(&[("direction", d)]), counter(n))),
        )?;
        let k = &self.gossip_keys;
        family(
            e,
            "shoal_gossip_key_id",
            "Gossip key ids: the one this node seals with and the newest it holds (absent without keys).",
            None,
            [("sealing", k.sealing), ("newest", k.ring.first().copied())]
                .into_iter()
                .filter_map(|(u, id)| {
                    Some((labels(&[("key", u), ("source", &k.source)]), gauge(id? as i64)))
                }),
        )?;
        family(
            e,
            "shoal_ipsec_packets",
            "Packets through this node's IPsec SAs with each peer node, by direction (encrypted networks).",
            None,
            self.ipsec.iter().flat_map(|p| {
                let peer = p.peer.to_string();
                [("out", p.out_packets), ("in", p.in_packets)].map(|(d, n)| {
                    (labels(&[("peer", &peer), ("direction", d)]), counter(n))
                })
            }),
        )?;
        family(
            e,
            "shoal_ipsec_errors",
            "Packets this node's IPsec SAs with each peer node refused (replays, failed integrity checks).",
            None,
            self.ipsec
                .iter()
                .map(|p| (labels(&[("peer", &p.peer.to_string())]), counter(p.errors))),
        )?;
        family(
            e,
            "shoal_ipsec_key_id",
            "The ring key id this node's outbound IPsec SA with each peer uses.",
            None,
            self.ipsec.iter().filter_map(|p| {
                Some((
                    labels(&[("peer", &p.peer.to_string())]),
                    gauge(p.out_key? as i64),
                ))
            }),
        )?;
        if let Some(r) = &self.raft {
            family(
                e,
                "shoal_raft_term",
                "Current Raft term of this manager.",
                None,
                [(labels(&[]), gauge(r.term as i64))],
            )?;
            family(
                e,
                "shoal_raft_is_leader",
                "1 while this manager is the Raft leader.",
                None,
                [(labels(&[]), gauge(r.is_leader as i64))],
            )?;
            family(
                e,
                "shoal_raft_commit_lag_entries",
                "Log entries this manager holds but has not applied yet.",
                None,
                [(labels(&[]), gauge(r.commit_lag as i64))],
            )?;
            family(
                e,
                "shoal_raft_leader_changes",
                "Leader changes this manager has seen since it started.",
                None,
                [(labels(&[]), counter(r.leader_changes))],
            )?;
        }
        let d = &self.dns;
        family(
            e,
            "shoal_dns_queries",
            "Queries the embedded DNS server answered, by result.",
            None,
            [
                ("local", d.local_answers),
                ("nodata", d.nodata),
                ("forwarded", d.forwarded),
                ("forward_failed", d.forward_failed),
                ("no_upstream", d.no_upstream),
                ("refused_overload", d.refused_overload),
                ("refused_class", d.refused_class),
                ("formerr", d.formerr),
                ("notimp", d.notimp),
                ("dropped", d.dropped),
            ]
            .map(|(r, v)| (labels(&[("result", r)]), counter(v))),
        )?;
        family(
            e,
            "shoal_dns_query_duration",
            "Time to answer a query, answered from the cluster's records (local) or by an upstream (forwarded).",
            Some(&Unit::Seconds),
            self.dns_latency
                .iter()
                .map(|(source, h)| (labels(&[("source", source)]), ConstHistogram::of(h))),
        )?;
        family(
            e,
            "shoal_tasks",
            "Tasks on this node by state.",
            None,
            self.tasks
                .iter()
                .map(|(s, n)| (labels(&[("state", s)]), gauge(*n as i64))),
        )?;
        Ok(())
    }
}

/// The text exposition of one scrape.
pub fn render(s: Snapshot) -> String {
    let mut reg = Registry::with_labels(
        [(
            std::borrow::Cow::Borrowed("node"),
            std::borrow::Cow::Owned(s.node.clone()),
        )]
        .into_iter(),
    );
    reg.register_collector(Box::new(s));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &reg).expect("writing to a String");
    out
}

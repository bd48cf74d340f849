//! The node's flow log, behind `shoal debug flows`: the datapath writes a
//! record per new service flow and per drop into its flow ring
//! (`ebpf/c/include/flows.h`); this loop drains it a few times a second,
//! names what it can (tasks, services, networks, as the node knows them at
//! that moment) and keeps the newest `--flow-log-size` records in memory.
//! Managers gather the logs of every node through the session asks
//! (`raft/desk.rs`, `swarm/flows.rs`).

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_dataplane::ebpf::{proto_label, DropReason, Flow, FL_DROP, FL_MESH, FL_VIP};
use shoal_dataplane::flows::FlowRing;
use shoal_dataplane::monitor::MonoClock;
use shoal_dataplane::overlay::key_ip;
use tracing::warn;

use super::Agent;
use crate::wire::{FlowAnswer, FlowAsk, FlowQuery, FlowRecord};

/// Most flows one node sends for one ask (the newest).
pub const ANSWER_MAX: usize = 2000;
const DRAIN_EVERY: Duration = Duration::from_millis(250);

/// The bounded log: oldest records go first.
pub struct FlowLog {
    cap: usize,
    inner: Mutex<LogInner>,
}

#[derive(Default)]
struct LogInner {
    records: VecDeque<FlowRecord>,
    evicted: u64,
    /// Answers to send with the next heartbeat.
    out: Vec<FlowAnswer>,
}

impl FlowLog {
    /// `cap` records at most; 0 keeps none (and the datapath writes none).
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            inner: Mutex::new(LogInner::default()),
        }
    }

    pub fn is_on(&self) -> bool {
        self.cap > 0
    }

    pub fn push(&self, recs: impl IntoIterator<Item = FlowRecord>) {
        if !self.is_on() {
            return;
        }
        let mut g = self.inner.lock().expect("flow log lock");
        for r in recs {
            if g.records.len() >= self.cap {
                g.records.pop_front();
                g.evicted += 1;
            }
            g.records.push_back(r);
        }
    }

    /// The newest matching records (up to `q.limit`, or ANSWER_MAX),
    /// oldest first, and how many records the log has let go.
    pub fn query(&self, q: &FlowQuery) -> (Vec<FlowRecord>, u64) {
        let limit = match q.limit {
            0 => ANSWER_MAX,
            n => n.min(ANSWER_MAX),
        };
        let g = self.inner.lock().expect("flow log lock");
        let mut out: Vec<FlowRecord> = g
            .records
            .iter()
            .rev()
            .filter(|r| q.since_ms.is_none_or(|s| r.time_ms >= s))
            .filter(|r| {
                q.service
                    .as_ref()
                    .is_none_or(|s| r.service.as_deref() == Some(s.as_str()))
            })
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        (out, g.evicted)
    }

    /// Answers the asks of a heartbeat reply; they leave with the next
    /// heartbeat.
    pub fn answer_asks(&self, node: &str, asks: &[FlowAsk]) {
        let answers: Vec<FlowAnswer> = asks
            .iter()
            .map(|a| {
                let (flows, evicted) = self.query(&a.query);
                FlowAnswer {
                    id: a.id,
                    node: node.to_string(),
                    flows,
                    evicted,
                    off: !self.is_on(),
                }
            })
            .collect();
        self.inner
            .lock()
            .expect("flow log lock")
            .out
            .extend(answers);
    }

    pub fn take_answers(&self) -> Vec<FlowAnswer> {
        std::mem::take(&mut self.inner.lock().expect("flow log lock").out)
    }
}

/// What the node knows that names a flow's addresses.
#[derive(Default)]
struct Names {
    /// (VNI, task address) -> (task, service, network).
    tasks: HashMap<(u32, Ipv4Addr), (String, String, String)>,
    /// (VNI, VIP) -> (service, network).
    vips: HashMap<(u32, Ipv4Addr), (String, String)>,
    /// (protocol, published port) -> service.
    published: HashMap<(u8, u16), String>,
    /// Local endpoint address -> VNI (a drop at an endpoint has no VNI).
    local: HashMap<Ipv4Addr, u32>,
}

impl Agent {
    async fn flow_names(&self) -> Names {
        let mut n = Names::default();
        for (vni, ip, r) in self.task_addresses().await {
            if let Some(vip) = r.vip {
                n.vips
                    .insert((vni, vip), (r.service.clone(), r.network.clone()));
            }
            n.tasks.insert((vni, ip), (r.task, r.service, r.network));
        }
        let inner = self.inner.lock().await;
        for e in &inner.state.endpoints {
            n.local.entry(e.ip).or_insert(e.vni);
        }
        if let Some(m) = &inner.mesh {
            for p in &m.ports {
                n.published.insert(
                    (super::mesh::proto(p.protocol), p.published),
                    p.service.clone(),
                );
            }
        }
        n
    }

    /// Drains the datapath's flow ring into the log until the agent stops.
    pub async fn flows_loop(self: Arc<Self>, pins: std::path::PathBuf) {
        let mut ring = match FlowRing::open(&pins) {
            Ok(r) => r,
            Err(e) => {
                warn!("flow log off: {e}");
                return;
            }
        };
        loop {
            // Set again each time: a monitor that ends restores the switch
            // as it found it.
            if let Err(e) = ring.switch(self.flows.is_on()) {
                warn!("flow log switch: {e}");
            }
            let raw = ring.drain();
            if !raw.is_empty() && self.flows.is_on() {
                let names = self.flow_names().await;
                let clock = MonoClock::now();
                let node = self.info.node.clone();
                self.flows
                    .push(raw.iter().map(|f| record(f, &names, &node, &clock)));
            }
            tokio::time::sleep(DRAIN_EVERY).await;
        }
    }
}

fn record(f: &Flow, n: &Names, node: &str, clock: &MonoClock) -> FlowRecord {
    let (client, addr, backend) = (key_ip(f.saddr), key_ip(f.daddr), key_ip(f.backend));
    let port = |p: u16| u16::from_be(p);
    let vni = match f.vni {
        0 => n.local.get(&client).copied().unwrap_or(0),
        v => v,
    };
    let task = |ip: Ipv4Addr| n.tasks.get(&(vni, ip));
    let backend_task = (f.backend != 0).then(|| task(backend)).flatten();
    let service = match f.kind {
        FL_MESH => backend_task
            .map(|t| t.1.clone())
            .or_else(|| n.published.get(&(f.proto, port(f.dport))).cloned()),
        _ => n
            .vips
            .get(&(vni, addr))
            .map(|v| v.0.clone())
            .or_else(|| backend_task.map(|t| t.1.clone()))
            .or_else(|| task(addr).map(|t| t.1.clone())),
    };
    let network = n
        .vips
        .get(&(vni, addr))
        .map(|v| v.1.clone())
        .or_else(|| backend_task.or_else(|| task(client)).map(|t| t.2.clone()));
    let with_port = |ip: Ipv4Addr, p: u16| match f.proto {
        6 | 17 => format!("{ip}:{}", port(p)),
        _ => ip.to_string(),
    };
    FlowRecord {
        time_ms: clock.wall_ms(f.ts_ns),
        node: node.to_string(),
        kind: match f.kind {
            FL_VIP => "vip",
            FL_MESH => "mesh",
            FL_DROP => "drop",
            _ => "unknown",
        }
        .into(),
        verdict: if f.kind == FL_DROP {
            "dropped"
        } else {
            "forwarded"
        }
        .into(),
        reason: (f.kind == FL_DROP).then(|| {
            DropReason::ALL
                .get(f.reason as usize)
                .map_or_else(|| f.reason.to_string(), |r| r.label().to_string())
        }),
        proto: proto_label(f.proto),
        client: with_port(client, f.sport),
        client_task: task(client).map(|t| t.0.clone()),
        address: with_port(addr, f.dport),
        service,
        network,
        backend: (f.backend != 0).then(|| with_port(backend, f.bport)),
        backend_task: backend_task.map(|t| t.0.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(t: u64, svc: &str) -> FlowRecord {
        FlowRecord {
            time_ms: t,
            service: Some(svc.into()),
            ..Default::default()
        }
    }

    #[test]
    fn the_log_keeps_the_newest_and_counts_what_it_let_go() {
        let log = FlowLog::new(3);
        log.push((1..=5).map(|t| rec(t, if t % 2 == 0 { "web" } else { "db" })));
        let (all, evicted) = log.query(&FlowQuery::default());
        assert_eq!(all.iter().map(|r| r.time_ms).collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!(evicted, 2);
        let web = FlowQuery {
            service: Some("web".into()),
            ..Default::default()
        };
        assert_eq!(log.query(&web).0.len(), 1);
        let since = FlowQuery {
            since_ms: Some(5),
            ..Default::default()
        };
        assert_eq!(log.query(&since).0.len(), 1);
        let last = FlowQuery {
            limit: 2,
            ..Default::default()
        };
        assert_eq!(
            log.query(&last)
                .0
                .iter()
                .map(|r| r.time_ms)
                .collect::<Vec<_>>(),
            [4, 5]
        );
    }

    #[test]
    fn an_off_log_keeps_nothing_and_says_so() {
        let log = FlowLog::new(0);
        log.push([rec(1, "web")]);
        let (kept, evicted) = log.query(&FlowQuery::default());
        assert!(kept.is_empty());
        assert_eq!(evicted, 0, "nothing was kept, so nothing let go");
        log.answer_asks("n1", &[FlowAsk::default()]);
        let a = log.take_answers();
        assert!(a[0].off);
        assert!(log.take_answers().is_empty());
    }

    #[test]
    fn records_name_the_tasks_the_service_and_the_reason() {
        let mut n = Names::default();
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let k = |s: &str| u32::from_ne_bytes(ip(s).octets());
        n.vips
            .insert((4096, ip("10.0.1.2")), ("web".into(), "appnet".into()));
        n.tasks.insert(
            (4096, ip("10.0.1.7")),
            ("web.2".into(), "web".into(), "appnet".into()),
        );
        n.tasks.insert(
            (4096, ip("10.0.1.5")),
            ("client.1".into(), "client".into(), "appnet".into()),
        );
        n.local.insert(ip("10.0.1.5"), 4096);
        let clock = MonoClock::now();
        let f = Flow {
            ts_ns: 0,
            vni: 4096,
            kind: FL_VIP,
            saddr: k("10.0.1.5"),
            daddr: k("10.0.1.2"),
            backend: k("10.0.1.7"),
            sport: 40000u16.to_be(),
            dport: 80u16.to_be(),
            bport: 80u16.to_be(),
            proto: 6,
            ..Default::default()
        };
        let r = record(&f, &n, "n1", &clock);
        assert!(r.time_ms <= crate::clock::now_ms());
        assert_eq!(r.client, "10.0.1.5:40000");
        assert_eq!(r.client_task.as_deref(), Some("client.1"));
        assert_eq!(r.address, "10.0.1.2:80");
        assert_eq!(r.service.as_deref(), Some("web"));
        assert_eq!(r.backend.as_deref(), Some("10.0.1.7:80"));
        assert_eq!(r.backend_task.as_deref(), Some("web.2"));
        assert_eq!(r.verdict, "forwarded");
        // A drop at the endpoint (no VNI in the packet): named by the
        // client's local endpoint.
        let d = Flow {
            vni: 0,
            kind: FL_DROP,
            reason: DropReason::NoBackend as u16,
            backend: 0,
            ..f
        };
        let r = record(&d, &n, "n1", &clock);
        assert_eq!(r.verdict, "dropped");
        assert_eq!(r.reason.as_deref(), Some("no_backend"));
        assert_eq!(r.service.as_deref(), Some("web"));
        assert_eq!(r.backend, None);
    }
}

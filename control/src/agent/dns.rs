//! The node's embedded DNS (`shoal_dns`): the records every local task
//! sees, built from the gossip table (never from Raft: gossip spreads what
//! runs), and the sockets at 127.0.0.11:53 inside each task's namespace.
//!
//! The records are rebuilt into an immutable snapshot whenever the table
//! changes and swapped in atomically (arc-swap), so a query reads without a
//! lock. Names per network (lowercase):
//! - `SERVICE` and each alias: the VIP (vip mode), or the healthy tasks'
//!   IPs (dnsrr);
//! - `tasks.SERVICE`, `tasks.ALIAS`: the healthy tasks' IPs;
//! - the task's name `SERVICE.SLOT.ID` and its hostname (12 id chars): its IP;
//! - an attached container's name: its IP.
//!
//! A client (a task) sees the names of its own networks, first network
//! first. PTR: a task's IP -> `TASKNAME.NETWORK`, a VIP -> the service.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use shoal_dataplane::netns::NetNs;
use shoal_dns::{DnsServer, Records, Serving};

use crate::wire::DnsReport;
use crate::wire::SvcRecord;

/// The address every task's resolver is at (Docker's).
pub const RESOLVER: &str = "127.0.0.11:53";

/// Where the server really listens in a task's namespace: port 53 is the
/// task's own (a DNS server may run as a service); the program on the
/// task's loopback moves 53 to this port and back (shoal_dataplane::resolver).
const LISTEN: (std::net::Ipv4Addr, u16) = (
    std::net::Ipv4Addr::new(127, 0, 0, 11),
    shoal_dataplane::resolver::RESOLVER_PORT,
);

#[derive(Default)]
struct Snapshot {
    /// Task id -> its networks (VNIs), in attachment order.
    clients: HashMap<String, Vec<u32>>,
    names: HashMap<u32, HashMap<String, Vec<Ipv4Addr>>>,
    reverse: HashMap<u32, HashMap<Ipv4Addr, String>>,
}

#[derive(Default)]
pub struct View {
    snap: ArcSwap<Snapshot>,
}

impl Records for View {
    fn addrs(&self, client: &str, name: &str) -> Option<Vec<Ipv4Addr>> {
        let s = self.snap.load();
        s.clients
            .get(client)?
            .iter()
            .find_map(|vni| s.names.get(vni)?.get(name).cloned())
    }

    fn name_of(&self, client: &str, ip: Ipv4Addr) -> Option<String> {
        let s = self.snap.load();
        s.clients
            .get(client)?
            .iter()
            .find_map(|vni| s.reverse.get(vni)?.get(&ip).cloned())
    }
}

/// One running task's record on one network: (VNI, task IP, record).
pub type Rec<'a> = (u32, Ipv4Addr, &'a SvcRecord);

impl View {
    /// Rebuilds from every task record the node knows (its own and its
    /// peers'), and the local tasks' networks.
    pub fn rebuild<'a>(
        &self,
        recs: impl Iterator<Item = Rec<'a>>,
        containers: impl Iterator<Item = (u32, Ipv4Addr, &'a str)>,
        local: impl Iterator<Item = (String, u32)>,
    ) {
        let mut s = Snapshot::default();
        for (task, vni) in local {
            s.clients.entry(task).or_default().push(vni);
        }
        // Attached containers answer to their names, as on Docker's
        // attachable networks.
        for (vni, ip, name) in containers.filter(|c| !c.2.is_empty()) {
            s.names
                .entry(vni)
                .or_default()
                .entry(name.to_ascii_lowercase())
                .or_default()
                .push(ip);
            s.reverse
                .entry(vni)
                .or_default()
                .insert(ip, name.to_string());
        }
        for (vni, ip, r) in recs {
            let names = s.names.entry(vni).or_default();
            let healthy = r.health.serves();
            let mut put = |n: String, ip: Ipv4Addr| names.entry(n).or_default().push(ip);
            put(r.task.to_ascii_lowercase(), ip);
            put(
                r.task_id[..r.task_id.len().min(12)].to_ascii_lowercase(),
                ip,
            );
            let service_names =
                std::iter::once(r.service.as_str()).chain(r.aliases.iter().map(String::as_str));
            for n in service_names {
                let n = n.to_ascii_lowercase();
                match r.vip {
                    // The VIP stands while the service does, healthy or not.
                    Some(vip) => put(n.clone(), vip),
                    None if healthy => put(n.clone(), ip),
                    None => {}
                }
                if healthy {
                    put(format!("tasks.{n}"), ip);
                }
            }
            let rev = s.reverse.entry(vni).or_default();
            rev.insert(ip, format!("{}.{}", r.task, r.network));
            if let Some(vip) = r.vip {
                rev.insert(vip, r.service.clone());
            }
        }
        // Each address once per name (answers are shuffled, so order is
        // free): deduplicated here, not by a scan per insert, which made a
        // name with N addresses (tasks.NAME of a big service) cost N².
        for v in s.names.values_mut().flat_map(|n| n.values_mut()) {
            v.sort_unstable();
            v.dedup();
        }
        self.snap.store(Arc::new(s));
    }

    /// The names `client` sees, sorted, for `shoal debug dns --task`.
    pub fn names_for(&self, client: &str) -> Vec<(String, Vec<Ipv4Addr>)> {
        let s = self.snap.load();
        let mut out: Vec<(String, Vec<Ipv4Addr>)> = vec![];
        for vni in s.clients.get(client).into_iter().flatten() {
            for (n, v) in s.names.get(vni).into_iter().flatten() {
                if !out.iter().any(|(m, _)| m == n) {
                    let mut v = v.clone();
                    v.sort();
                    out.push((n.clone(), v));
                }
            }
        }
        out.sort();
        out
    }
}

pub struct NodeDns {
    pub server: Arc<DnsServer>,
    pub view: Arc<View>,
    ttl: u32,
    /// Per task: its server and the loopback program in its namespace.
    serving: Mutex<HashMap<String, (Serving, shoal_dataplane::resolver::PortMove)>>,
    /// Per Docker container: the server its sandbox's own resolver
    /// forwards to (`DOCKER_UPSTREAM`).
    docker: Mutex<HashMap<String, Serving>>,
}

/// Where Docker containers reach the embedded DNS: Docker's resolver owns
/// 127.0.0.11:53 in its sandboxes (an iptables DNAT ahead of any tc
/// program) and forwards the names it does not know to the container's
/// `--dns` servers from inside the sandbox, so `docker run --dns
/// 127.0.0.12` sends them here.
pub const DOCKER_UPSTREAM: (std::net::Ipv4Addr, u16) = (std::net::Ipv4Addr::new(127, 0, 0, 12), 53);

impl NodeDns {
    pub fn new(cfg: shoal_dns::Config) -> Self {
        let view = Arc::new(View::default());
        let ttl = cfg.ttl;
        let server = DnsServer::new(view.clone(), cfg);
        Self {
            server,
            view,
            ttl,
            serving: Mutex::new(HashMap::new()),
            docker: Mutex::new(HashMap::new()),
        }
    }

    /// Opens the resolver (UDP and TCP) inside the task's namespace and
    /// serves it: tasks ask 127.0.0.11:53, which the loopback program
    /// moves to LISTEN. Again for a task already served: a no-op.
    pub fn attach(&self, task_id: &str, netns: &Path) -> Result<()> {
        if self.serving.lock().expect("dns lock").contains_key(task_id) {
            return Ok(());
        }
        let ns = NetNs::from_file(
            task_id,
            std::fs::File::open(netns).with_context(|| format!("{}", netns.display()))?,
        );
        let (udp, tcp, moved) = ns.run(|| -> Result<_> {
            let udp = std::net::UdpSocket::bind(LISTEN)?;
            // Room for bursts (4 MiB, beyond rmem_max: the daemon is root).
            let _ = nix::sys::socket::setsockopt(
                &udp,
                nix::sys::socket::sockopt::RcvBufForce,
                &(4 << 20),
            );
            let tcp = std::net::TcpListener::bind(LISTEN)?;
            Ok((udp, tcp, shoal_dataplane::resolver::attach_here()?))
        })??;
        let s = self.server.serve(task_id, udp, tcp)?;
        self.serving
            .lock()
            .expect("dns lock")
            .insert(task_id.to_string(), (s, moved));
        Ok(())
    }

    pub fn detach(&self, task_id: &str) {
        self.serving.lock().expect("dns lock").remove(task_id);
        self.docker.lock().expect("dns lock").remove(task_id);
    }

    /// Serves a Docker sandbox at `DOCKER_UPSTREAM` (again: a no-op).
    pub fn attach_docker(&self, client: &str, netns: &Path) -> Result<()> {
        if self.docker.lock().expect("dns lock").contains_key(client) {
            return Ok(());
        }
        let ns = NetNs::from_file(
            client,
            std::fs::File::open(netns).with_context(|| format!("{}", netns.display()))?,
        );
        let (udp, tcp) = ns.run(|| -> Result<_> {
            Ok((
                std::net::UdpSocket::bind(DOCKER_UPSTREAM)?,
                std::net::TcpListener::bind(DOCKER_UPSTREAM)?,
            ))
        })??;
        let s = self.server.serve(client, udp, tcp)?;
        self.docker
            .lock()
            .expect("dns lock")
            .insert(client.to_string(), s);
        Ok(())
    }

    pub fn report(&self, task: Option<&str>) -> DnsReport {
        let mut serving: Vec<String> = self
            .serving
            .lock()
            .expect("dns lock")
            .keys()
            .cloned()
            .collect();
        serving.sort();
        DnsReport {
            resolver: RESOLVER.into(),
            ttl: self.ttl,
            serving,
            upstreams: self.server.upstreams(),
            stats: self.server.stats(),
            names: task.map(|t| self.view.names_for(t)).unwrap_or_default(),
        }
    }
}

/// The host's resolvers (`nameserver` lines of resolv.conf), IPv4 and
/// IPv6, port 53.
pub fn host_upstreams(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::TaskHealth;

    fn rec(service: &str, task: &str, vip: Option<Ipv4Addr>, health: TaskHealth) -> SvcRecord {
        SvcRecord {
            service_id: format!("{service}-id"),
            service: service.into(),
            task_id: format!("{task}0123456789abcdef"),
            task: format!("{service}.1.{task}0123456789abcdef"),
            slot: 1,
            network: "appnet".into(),
            vip,
            aliases: if service == "web" {
                vec!["Front".into()]
            } else {
                vec![]
            },
            health,
        }
    }

    #[test]
    fn names_are_scoped_to_the_clients_networks_and_follow_health() {
        let vip = Ipv4Addr::new(10, 0, 1, 2);
        let web = rec("web", "aaa", Some(vip), TaskHealth::Healthy);
        let sick = rec("web", "bbb", Some(vip), TaskHealth::Unhealthy);
        let rr = rec("db", "ccc", None, TaskHealth::None);
        let other = rec("secret", "ddd", None, TaskHealth::None);
        let v = View::default();
        v.rebuild(
            [
                (4096, Ipv4Addr::new(10, 0, 1, 5), &web),
                (4096, Ipv4Addr::new(10, 0, 1, 6), &sick),
                (4096, Ipv4Addr::new(10, 0, 1, 7), &rr),
                (4097, Ipv4Addr::new(10, 0, 2, 5), &other),
            ]
            .into_iter(),
            [
                (4096, Ipv4Addr::new(10, 0, 1, 9), "Box1"),
                (4097, Ipv4Addr::new(10, 0, 2, 9), "box2"),
            ]
            .into_iter(),
            [
                ("client".to_string(), 4096),
                ("container:c1".to_string(), 4096),
            ]
            .into_iter(),
        );
        // Containers: by name on their own network, to tasks and containers.
        for c in ["client", "container:c1"] {
            assert_eq!(v.addrs(c, "box1"), Some(vec![Ipv4Addr::new(10, 0, 1, 9)]));
            assert_eq!(v.addrs(c, "box2"), None);
            assert_eq!(v.addrs(c, "web"), Some(vec![vip]));
        }
        assert_eq!(v.addrs("client", "web"), Some(vec![vip]));
        assert_eq!(v.addrs("client", "front"), Some(vec![vip]));
        assert_eq!(
            v.addrs("client", "tasks.web"),
            Some(vec![Ipv4Addr::new(10, 0, 1, 5)])
        );
        assert_eq!(
            v.addrs("client", "db"),
            Some(vec![Ipv4Addr::new(10, 0, 1, 7)])
        );
        assert_eq!(
            v.addrs("client", "web.1.bbb0123456789abcdef"),
            Some(vec![Ipv4Addr::new(10, 0, 1, 6)])
        );
        assert_eq!(
            v.addrs("client", "aaa012345678"),
            Some(vec![Ipv4Addr::new(10, 0, 1, 5)])
        );
        // Another network's names and unknown clients: nothing.
        assert_eq!(v.addrs("client", "secret"), None);
        assert_eq!(v.addrs("stranger", "web"), None);
        assert_eq!(v.name_of("client", vip).as_deref(), Some("web"));
        assert_eq!(
            v.name_of("client", Ipv4Addr::new(10, 0, 1, 7)).as_deref(),
            Some("db.1.ccc0123456789abcdef.appnet")
        );
        assert!(v
            .names_for("client")
            .iter()
            .any(|(n, _)| n == "tasks.front"));
    }

    #[test]
    fn upstreams_come_from_resolv_conf() {
        let u = host_upstreams(
            "# x\nnameserver 198.18.0.53\nsearch lab\nnameserver ::1\nnameserver junk\n",
        );
        assert_eq!(
            u,
            vec![
                "198.18.0.53:53".parse().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
    }
}

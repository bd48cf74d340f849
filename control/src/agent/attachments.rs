//! Containers on attachable swarm networks, on this node: the local API's
//! `/v1/attachments`, which the CNI plugin (`crate::cni`) and the Docker
//! driver call. An attachment is a local endpoint like a task's (same veth,
//! programs, gossip record) in a namespace the runtime made, with its
//! address from the managers (`swarm/attach.rs`) and the embedded DNS at
//! 127.0.0.11 inside it. What a runtime forgets to remove (a namespace
//! gone without a DEL) is swept here, and an address the managers hold
//! for a container this node no longer has is given back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tracing::{info, warn};

use shoal_dataplane::netns::NetNs;

use super::Agent;
use crate::wire::{
    AttachCreate, AttachRequest, AttachView, Attachment, ContainerRef, DetachRequest, Endpoint,
    EndpointCreate, NetworkCreate, EP_IFNAME,
};

/// How long the managers may hold an attachment this node does not have
/// before it is given back (an ADD in flight is younger than this).
const ORPHAN_GRACE: Duration = Duration::from_secs(20);

/// What the sweep remembers between rounds.
#[derive(Default)]
pub struct Sweep {
    /// Attachments the managers hold for this node that it does not
    /// have: since when.
    missing: std::sync::Mutex<HashMap<String, Instant>>,
    /// Attachment ids Docker's IPAM holds (`crate::docker_driver`): here
    /// even while no container uses them.
    docker_leases: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

/// The DNS client key of a container (one resolver per namespace, for all
/// of its interfaces).
pub fn dns_client(container_id: &str) -> String {
    format!("container:{container_id}")
}

/// The local endpoint's name: stable and short (endpoint names are at most
/// 64 characters, container ids often are 64 already).
fn endpoint_name(container_id: &str, ifname: &str) -> String {
    let short: String = container_id.chars().take(12).collect();
    format!("c{short}-{ifname}")
}

/// The inode of the namespace a path names (following /proc's links).
fn netns_ino(path: &str) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(path)?.ino())
}

fn valid_ifname(s: &str) -> Result<()> {
    if s.is_empty()
        || s.len() > 15
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        crate::fail!(
            Invalid,
            "invalid interface name {s:?}: use 1-15 letters, digits, '-', '_' or '.'"
        );
    }
    Ok(())
}

impl Agent {
    fn attach_view(&self, ep: &Endpoint, gateway: std::net::Ipv4Addr, mtu: u32) -> AttachView {
        let c = ep.container.clone().unwrap_or_default();
        AttachView {
            container_id: c.id,
            ifname: ep.ifname.clone(),
            name: c.name,
            network: ep.network.clone(),
            ip: ep.ip,
            prefix_len: ep.prefix_len,
            gateway,
            mac: ep.mac.clone(),
            mtu,
            netns: ep.netns.clone(),
            endpoint: ep.name.clone(),
            host_if: ep.host_if.clone(),
        }
    }

    /// This node's attached containers.
    pub async fn attachments(&self) -> Vec<AttachView> {
        let inner = self.inner.lock().await;
        inner
            .state
            .endpoints
            .iter()
            .filter(|e| e.container.is_some())
            .filter_map(|e| {
                let net = inner.state.networks.iter().find(|n| n.name == e.network)?;
                Some(self.attach_view(e, net.gateway, self.endpoint_mtu(net)))
            })
            .collect()
    }

    async fn attachment(&self, container_id: &str, ifname: &str) -> Option<AttachView> {
        self.attachments()
            .await
            .into_iter()
            .find(|a| a.container_id == container_id && a.ifname == ifname)
    }

    /// Attaches a container's namespace: the address from the managers,
    /// then the interface; if any step fails, nothing is left (neither the
    /// interface nor the address).
    pub async fn attach(self: &Arc<Self>, req: AttachCreate) -> Result<AttachView> {
        let ifname = req.ifname.clone().unwrap_or_else(|| EP_IFNAME.to_string());
        valid_ifname(&ifname)?;
        let netns_ino = netns_ino(&req.netns).map_err(|e| {
            crate::wire_err!(NotFound, "cannot open network namespace {}: {e}", req.netns)
        })?;
        // ADD again (a runtime retrying): the same answer, if it is the
        // same namespace and network.
        if let Some(a) = self.attachment(&req.container_id, &ifname).await {
            let same_net = a.network == req.network;
            if a.netns == req.netns && same_net && req.ip.is_none_or(|ip| ip == a.ip) {
                return Ok(a);
            }
            crate::fail!(
                Conflict,
                "container {} already has {ifname} on network {} ({})",
                req.container_id,
                a.network,
                a.ip
            );
        }
        let ask = AttachRequest {
            network: req.network.clone(),
            container_id: req.container_id.clone(),
            ifname: ifname.clone(),
            name: req.name.clone(),
            ip: req.ip,
        };
        // Where an attach spends its time, logged with it.
        let t0 = Instant::now();
        let reply = self.ask_attach(&ask).await?;
        let managers_ms = t0.elapsed().as_secs_f64() * 1e3;
        let made = self
            .plumb_attachment(&req, &ifname, &reply, netns_ino)
            .await;
        match made {
            Ok(view) => {
                let total_ms = t0.elapsed().as_secs_f64() * 1e3;
                info!(container = %req.container_id, name = %req.name, ip = %view.ip, network = %view.network,
                    managers_ms = format!("{managers_ms:.1}"), total_ms = format!("{total_ms:.1}"), "container attached");
                Ok(view)
            }
            Err(e) => {
                let undo = DetachRequest {
                    container_id: req.container_id.clone(),
                    ifname: Some(ifname),
                };
                if let Err(u) = self.ask_detach(&undo).await {
                    warn!(container = %req.container_id, "giving the address back: {u:#}");
                }
                Err(e)
            }
        }
    }

    async fn plumb_attachment(
        self: &Arc<Self>,
        req: &AttachCreate,
        ifname: &str,
        reply: &crate::wire::AttachReply,
        netns_ino: u64,
    ) -> Result<AttachView> {
        let n = &reply.network;
        self.join_network(NetworkCreate {
            name: n.spec.name.clone(),
            vni: n.vni,
            subnet: n.subnet.to_string(),
            gateway: Some(n.gateway),
            encrypted: n.spec.encrypted,
        })
        .await
        .with_context(|| format!("joining network {}", n.spec.name))?;
        // The resolver in the namespace (on its loopback, which a runtime
        // brings up with CNI's loopback plugin, perhaps not yet) while the
        // interface is made: each costs a TCX link, and they do not wait
        // on each other.
        let resolver = {
            let me = self.clone();
            let (id, netns) = (req.container_id.clone(), req.netns.clone());
            tokio::task::spawn_blocking(move || -> Result<()> {
                let ns = NetNs::from_file(&id, std::fs::File::open(&netns)?);
                ns.run(shoal_dataplane::netlink::set_lo_up_blocking)??;
                me.dns
                    .attach(&dns_client(&id), std::path::Path::new(&netns))
            })
        };
        let ep = self
            .create_endpoint(EndpointCreate {
                network: n.spec.name.clone(),
                ip: format!("{}/{}", reply.attachment.addr, n.subnet.prefix_len()),
                netns: Some(req.netns.clone()),
                name: Some(endpoint_name(&req.container_id, ifname)),
                ifname: Some(ifname.to_string()),
                default_route: Some(req.default_route.unwrap_or(true)),
                container: Some(ContainerRef {
                    id: req.container_id.clone(),
                    name: req.name.clone(),
                    lb_addr: reply.lb_addr,
                    netns_ino: Some(netns_ino),
                }),
                ..Default::default()
            })
            .await;
        let served = resolver
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r)
            .context("the container's resolver at 127.0.0.11");
        let ep = match (ep, served) {
            (Ok(ep), Ok(())) => ep,
            (ep, served) => {
                if let Ok(ep) = &ep {
                    let _ = self.remove_endpoint(&ep.name).await;
                }
                // Its other interfaces keep the resolver they share.
                let others = self
                    .attachments()
                    .await
                    .iter()
                    .any(|a| a.container_id == req.container_id);
                if !others {
                    self.dns.detach(&dns_client(&req.container_id));
                }
                self.leave_unused_networks(std::slice::from_ref(&n.spec.name))
                    .await;
                return Err(match (ep, served) {
                    (Err(e), _) | (_, Err(e)) => e,
                    (Ok(_), Ok(())) => unreachable!("handled above"),
                });
            }
        };
        self.changed.notify_one();
        let net = self
            .networks()
            .await
            .into_iter()
            .find(|x| x.name == ep.network)
            .context("the network went away")?;
        Ok(self.attach_view(&ep, net.gateway, self.endpoint_mtu(&net)))
    }

    /// Detaches a container (one interface, or all of them). Idempotent:
    /// what is not here is not an error, and the managers are told anyway
    /// (an earlier attempt may have failed half way).
    pub async fn detach(
        &self,
        container_id: &str,
        ifname: Option<&str>,
    ) -> Result<Vec<AttachView>> {
        let gone: Vec<AttachView> = self
            .attachments()
            .await
            .into_iter()
            .filter(|a| a.container_id == container_id && ifname.is_none_or(|i| i == a.ifname))
            .collect();
        for a in &gone {
            if let Err(e) = self.remove_endpoint(&a.endpoint).await {
                warn!(container = %container_id, "removing {}: {e:#}", a.endpoint);
            }
        }
        let left = self
            .attachments()
            .await
            .iter()
            .any(|a| a.container_id == container_id);
        if !left {
            self.dns.detach(&dns_client(container_id));
        }
        let nets: Vec<String> = gone.iter().map(|a| a.network.clone()).collect();
        self.leave_unused_networks(&nets).await;
        self.changed.notify_one();
        self.ask_detach(&DetachRequest {
            container_id: container_id.into(),
            ifname: ifname.map(str::to_string),
        })
        .await?;
        for a in &gone {
            info!(container = %container_id, ip = %a.ip, network = %a.network, "container detached");
        }
        Ok(gone)
    }

    /// Networks of `names` that no endpoint of this node uses any more are
    /// left (the ingress network stays: the node is a mesh entry anyway).
    pub(crate) async fn leave_unused_networks(&self, names: &[String]) {
        let in_use: std::collections::BTreeSet<String> = self
            .endpoints()
            .await
            .into_iter()
            .filter(|e| !crate::agent::lb::ipvs::is_lb_endpoint(e))
            .map(|e| e.network)
            .collect();
        let ingress = self.ingress_name().await;
        for n in names {
            if !in_use.contains(n) {
                self.remove_lb_endpoint(n).await;
                if Some(n) != ingress.as_ref() {
                    let _ = self.remove_network(n).await;
                }
            }
        }
    }

    /// After a restart: the resolver in each attached container again (the
    /// endpoints themselves were restored with the local table).
    pub async fn restore_attachments(&self) {
        let docker: Vec<String> = self
            .endpoints()
            .await
            .into_iter()
            .filter(|e| e.external)
            .map(|e| e.name)
            .collect();
        for a in self.attachments().await {
            let path = std::path::Path::new(&a.netns);
            let client = dns_client(&a.container_id);
            let served = match docker.contains(&a.endpoint) {
                true => self.dns.attach_docker(&client, path),
                false => self.dns.attach(&client, path),
            };
            if let Err(e) = served {
                warn!(container = %a.container_id, "the container's resolver: {e:#}");
            }
        }
    }

    /// Containers whose namespace is gone without a DEL: its path no
    /// longer opens (podman's /run/netns, a dead process's /proc/PID/ns/net)
    /// or is another namespace, or the veth went with it. (The namespace
    /// itself may live on only through the resolver's sockets in it, which
    /// the detach closes.) Detached here, everywhere.
    pub async fn sweep_vanished(&self) {
        let eps = self.endpoints().await;
        let inodes: HashMap<String, Option<u64>> = eps
            .iter()
            .filter_map(|e| Some((e.name.clone(), e.container.as_ref()?.netns_ino)))
            .collect();
        // Docker's endpoints end with its Leave, not with their namespace.
        let docker: Vec<&str> = eps
            .iter()
            .filter(|e| e.external)
            .map(|e| e.name.as_str())
            .collect();
        for a in self.attachments().await {
            if docker.contains(&a.endpoint.as_str()) {
                continue;
            }
            let moved = match inodes.get(&a.endpoint).copied().flatten() {
                Some(ino) => netns_ino(&a.netns).ok() != Some(ino),
                None => false,
            };
            let gone = moved || matches!(self.nl.link_index(&a.host_if).await, Ok(None));
            if gone {
                info!(container = %a.container_id, "the container's namespace is gone: detaching it");
                if let Err(e) = self.detach(&a.container_id, Some(&a.ifname)).await {
                    warn!(container = %a.container_id, "detaching: {e:#}");
                }
            }
        }
    }

    /// The managers' attachments for this node (from the session): those
    /// this node has not had for `ORPHAN_GRACE` are given back (a daemon
    /// that lost a container while it was down, an ADD that died half way).
    pub async fn release_orphans(&self, held: Vec<Attachment>) {
        let here: Vec<(String, String)> = self
            .attachments()
            .await
            .into_iter()
            .map(|a| (a.container_id, a.ifname))
            .collect();
        let leased = self.sweep.docker_leases.lock().expect("sweep lock").clone();
        let now = Instant::now();
        let due: Vec<Attachment> = {
            let mut missing = self.sweep.missing.lock().expect("sweep lock");
            missing.retain(|id, _| held.iter().any(|a| &a.id == id));
            held.into_iter()
                .filter(|a| !here.contains(&(a.container_id.clone(), a.ifname.clone())))
                .filter(|a| !leased.contains(&a.container_id))
                .filter(|a| now - *missing.entry(a.id.clone()).or_insert(now) >= ORPHAN_GRACE)
                .collect()
        };
        for a in due {
            info!(container = %a.container_id, ip = %a.addr, "the managers hold an address for a container this node does not have: giving it back");
            let req = DetachRequest {
                container_id: a.container_id.clone(),
                ifname: Some(a.ifname.clone()),
            };
            if let Err(e) = self.ask_detach(&req).await {
                warn!(container = %a.container_id, "giving the address back: {e:#}");
            }
        }
    }
}

impl Agent {
    /// The attachment ids Docker's IPAM holds now.
    pub fn set_docker_leases(&self, ids: std::collections::BTreeSet<String>) {
        *self.sweep.docker_leases.lock().expect("sweep lock") = ids;
    }

    /// Serves the resolver in a Docker sandbox once Docker has made it
    /// (Join answers before it exists), where Docker's own resolver
    /// forwards to it (`dns::DOCKER_UPSTREAM`); gives up after 30 s.
    pub async fn serve_dns_when_ready(&self, id: &str, sandbox: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !std::path::Path::new(sandbox).exists() {
            if Instant::now() > deadline {
                warn!(sandbox, "Docker never made the sandbox: no resolver in it");
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Err(e) = self
            .dns
            .attach_docker(&dns_client(id), std::path::Path::new(sandbox))
        {
            warn!(sandbox, "the container's resolver: {e:#}");
        }
    }
}

/// Sweeps vanished containers every second.
pub async fn sweep_loop(agent: Arc<Agent>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        agent.sweep_vanished().await;
    }
}

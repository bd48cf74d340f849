//! The IPVS balancer, arranged as Docker arranges it since 18.x: on each
//! network this node has tasks on, one load-balancing namespace (an
//! endpoint named `lb-NETWORK`, at the node's balancer address from Raft).
//! In it the service VIPs are local addresses; nftables marks packets to a
//! VIP with the VIP itself as fwmark, an IPVS fwmark virtual service (every
//! port and protocol of the VIP) NATs them to a task, and nftables SNATs
//! them to the balancer address so the replies come back through it. The
//! overlay carries packets to and from this namespace like any endpoint's:
//! on this node each VIP is a local endpoint entry pointing at it.
//!
//! IPVS and its connection table outlive the agent: a restart adopts the
//! virtual services it finds and keeps every flow.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use shoal_dataplane::ebpf::{EpValue, EP_F_LOCAL};
use shoal_dataplane::ipvs::Ipvs;
use shoal_dataplane::netlink::{self, parse_mac, Netlink};
use shoal_dataplane::netns::NetNs;
use tracing::{info, warn};

use super::{Ctx, Desired};
use crate::wire::IpvsNsView;
use crate::wire::{Endpoint, EndpointCreate};

/// The balancing endpoint of a network.
pub fn endpoint_name(network: &str) -> String {
    format!("lb-{network}")
}

pub fn is_lb_endpoint(e: &Endpoint) -> bool {
    e.svc.is_none() && e.name == endpoint_name(&e.network)
}

/// IPVS's scheduler for every service (Docker's).
const SCHED: &str = "rr";

/// One network's balancing namespace as programmed.
struct LbNs {
    ep: String,
    ns: NetNs,
    ipvs: Ipvs,
    nl: Netlink,
    lo: u32,
    lb_addr: Ipv4Addr,
    /// VIP -> backend -> weight, as IPVS holds them (0: draining).
    vips: BTreeMap<Ipv4Addr, Weights>,
    /// The VIP set the nftables rules were last written for (None: never).
    ruled: Option<BTreeSet<Ipv4Addr>>,
}

/// A virtual service's real servers and their weights.
type Weights = BTreeMap<Ipv4Addr, u32>;

#[derive(Default)]
pub struct IpvsLb {
    nets: BTreeMap<u32, LbNs>,
}

/// The fwmark of a VIP's virtual service: the VIP itself (unique per
/// namespace, stable across restarts, nothing to allocate).
fn fwmark(vip: Ipv4Addr) -> u32 {
    u32::from(vip)
}

/// A service's real servers: the serving backends at weight 1, the
/// draining ones at 0 (no new connection; the open ones finish).
fn weights(serving: &BTreeSet<Ipv4Addr>, draining: Option<&BTreeSet<Ipv4Addr>>) -> Weights {
    let quiesced = draining.into_iter().flatten().map(|b| (*b, 0));
    quiesced.chain(serving.iter().map(|b| (*b, 1))).collect()
}

impl IpvsLb {
    /// Where the kernel has IPVS at all (checked in a scratch namespace so
    /// the node's own IPVS table stays untouched).
    pub fn probe() -> Result<()> {
        let name = format!("shoal-ipvs-probe-{}", std::process::id());
        let ns = NetNs::create(&name)?;
        let r = ns.run(Ipvs::open);
        let _ = NetNs::delete(&name);
        r??;
        Ok(())
    }

    /// Every namespace's services as IPVS holds them, for `debug lb`.
    pub fn view(&mut self) -> Vec<IpvsNsView> {
        self.nets
            .iter_mut()
            .map(|(vni, n)| IpvsNsView {
                vni: *vni,
                endpoint: n.ep.clone(),
                lb_addr: n.lb_addr,
                services: n.ipvs.services().unwrap_or_default(),
            })
            .collect()
    }

    pub(super) async fn apply(&mut self, want: &Desired, ctx: Ctx<'_>) {
        let lb_eps: BTreeMap<u32, &Endpoint> = ctx
            .endpoints
            .iter()
            .filter(|e| is_lb_endpoint(e))
            .map(|e| (e.vni, e))
            .collect();
        // Networks left: their VIP entries go (the endpoint and namespace
        // were removed by the agent).
        let gone: Vec<u32> = self
            .nets
            .keys()
            .filter(|v| !lb_eps.contains_key(v))
            .copied()
            .collect();
        for vni in gone {
            if let Some(n) = self.nets.remove(&vni) {
                for vip in n.vips.keys() {
                    let _ = ctx.maps.remove_endpoint(vni, *vip);
                }
                info!(vni, "balancing namespace dropped");
            }
        }
        for (vni, ep) in lb_eps {
            if let std::collections::btree_map::Entry::Vacant(slot) = self.nets.entry(vni) {
                match LbNs::open(ep).await {
                    Ok(n) => {
                        slot.insert(n);
                    }
                    Err(e) => {
                        warn!(vni, "balancing namespace {}: {e:#}", ep.netns);
                        continue;
                    }
                }
            }
            let n = self.nets.get_mut(&vni).expect("just inserted");
            // Adopting, what is programmed stays as it is (serving or
            // quiesced) on top of what gossip says so far.
            let programmed = |weighted: bool| -> Desired {
                let of = |b: &Weights| {
                    b.iter()
                        .filter(|(_, w)| (**w > 0) == weighted)
                        .map(|(a, _)| *a)
                        .collect()
                };
                n.vips.iter().map(|(v, b)| ((vni, *v), of(b))).collect()
            };
            let want = super::settle(want, &programmed(true), ctx.adopting);
            let draining = super::settle(ctx.draining, &programmed(false), ctx.adopting);
            let mine: BTreeMap<Ipv4Addr, Weights> = want
                .iter()
                .filter(|((v, _), _)| *v == vni)
                .map(|(k, serving)| (k.1, weights(serving, draining.get(k))))
                .collect();
            if let Err(e) = n.program(vni, ep, &mine, ctx.maps).await {
                warn!(vni, "IPVS: {e:#}");
            }
        }
    }
}

impl LbNs {
    /// Prepares a balancing namespace (idempotent: a restarted agent finds
    /// it set up) and adopts the virtual services already in it.
    async fn open(ep: &Endpoint) -> Result<Self> {
        let f =
            std::fs::File::open(&ep.netns).with_context(|| format!("namespace {}", ep.netns))?;
        let ns = NetNs::from_file(&ep.netns, f);
        ns.run(|| -> Result<()> {
            netlink::set_lo_up_blocking()?;
            // Replies to clients are forwarded (conntrack undoes the SNAT,
            // IPVS the DNAT); conntrack=1 lets nftables NAT IPVS traffic;
            // the expire_* knobs drop connections to a removed backend at
            // once instead of after 900 s (moby#31208, moby#36878).
            for (k, v) in [
                ("net.ipv4.ip_forward", "1"),
                ("net.ipv4.conf.all.rp_filter", "0"),
                ("net.ipv4.conf.default.rp_filter", "0"),
                ("net.ipv4.vs.conntrack", "1"),
                ("net.ipv4.vs.expire_nodest_conn", "1"),
                ("net.ipv4.vs.expire_quiescent_template", "1"),
            ] {
                netlink::sysctl(k, v)?;
            }
            Ok(())
        })??;
        let mut ipvs = Ipvs::open_in(&ns)?;
        let nl = Netlink::connect_in(&ns)?;
        let lo = nl.require_index("lo").await?;
        let mut vips: BTreeMap<Ipv4Addr, Weights> = BTreeMap::new();
        for s in ipvs.services()? {
            vips.insert(
                Ipv4Addr::from(s.fwmark),
                s.dests.iter().map(|d| (d.addr, d.weight)).collect(),
            );
        }
        info!(endpoint = %ep.name, adopted = vips.len(), "balancing namespace ready");
        Ok(Self {
            ep: ep.name.clone(),
            ns,
            ipvs,
            nl,
            lo,
            lb_addr: ep.ip,
            vips,
            ruled: None,
        })
    }

    async fn program(
        &mut self,
        vni: u32,
        ep: &Endpoint,
        want: &BTreeMap<Ipv4Addr, Weights>,
        maps: &mut shoal_dataplane::overlay::Maps,
    ) -> Result<()> {
        // New VIPs: address, virtual service, then the overlay entry that
        // sends this node's traffic for them here.
        let host_ifindex = self
            .host_ifindex(ep)
            .await
            .context("balancing endpoint's veth")?;
        let mac = parse_mac(&ep.mac)?;
        for (vip, backends) in want {
            let fw = fwmark(*vip);
            let have = self.vips.get(vip).cloned();
            if have.is_none() {
                self.nl.add_addr(self.lo, IpAddr::V4(*vip), 32).await?;
                match self.ipvs.add_fwmark_service(fwmark(*vip), SCHED) {
                    // Already there (adopted from a previous run): fine.
                    Err(shoal_dataplane::Error::Io(_, e))
                        if e.raw_os_error() == Some(libc::EEXIST) => {}
                    r => r?,
                }
            }
            let have = have.unwrap_or_default();
            for (b, w) in backends {
                match have.get(b) {
                    None => self.ipvs.add_dest(fw, *b, *w)?,
                    Some(h) if h != w => self.ipvs.set_dest_weight(fw, *b, *w)?,
                    Some(_) => {}
                }
            }
            for b in have.keys().filter(|b| !backends.contains_key(b)) {
                self.ipvs.del_dest(fw, *b)?;
            }
            if self.vips.get(vip) != Some(backends) {
                let serving = backends.values().filter(|w| **w > 0).count();
                let draining = backends.len() - serving;
                info!(vni, %vip, backends = serving, draining, "service balanced by IPVS");
            }
            self.vips.insert(*vip, backends.clone());
            maps.upsert_endpoint(
                vni,
                *vip,
                EpValue {
                    ifindex: host_ifindex,
                    vtep: 0,
                    mac,
                    flags: EP_F_LOCAL,
                    // The host side holds the VIP: no endpoint's traffic.
                    slot: 0,
                },
            )?;
        }
        let set: BTreeSet<Ipv4Addr> = want.keys().copied().collect();
        if self.ruled.as_ref() != Some(&set) {
            self.write_rules(&set)?;
            self.ruled = Some(set);
        }
        let gone: Vec<Ipv4Addr> = self
            .vips
            .keys()
            .filter(|v| !want.contains_key(v))
            .copied()
            .collect();
        for vip in gone {
            let _ = maps.remove_endpoint(vni, vip);
            let _ = self.ipvs.del_fwmark_service(fwmark(vip));
            let _ = self.nl.del_addr(self.lo, IpAddr::V4(vip)).await;
            self.vips.remove(&vip);
            info!(vni, %vip, "service no longer balanced here");
        }
        Ok(())
    }

    async fn host_ifindex(&self, ep: &Endpoint) -> Result<u32> {
        let nl = Netlink::connect()?;
        Ok(nl.require_index(&ep.host_if).await?)
    }

    /// Replaces the namespace's nftables table in one transaction (no
    /// moment without rules). Written as nft's own language and fed to
    /// `nft -f -`: nftables has no maintained native Rust binding, and the
    /// `nftables` crate drives the same binary with JSON.
    fn write_rules(&self, vips: &BTreeSet<Ipv4Addr>) -> Result<()> {
        let rules = nft_rules(vips, self.lb_addr);
        let ns_fd = self.ns.raw_fd();
        let mut cmd = Command::new("nft");
        cmd.args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: setns is async-signal-safe; the fd stays open in the
        // child until exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(ns_fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .context("running nft (is nftables installed?)")?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(rules.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "nft refused the balancer's rules in {}: {}",
                self.ep,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

/// The balancing namespace's ruleset: mark VIP packets for IPVS, SNAT what
/// IPVS sends on to the balancer address.
fn nft_rules(vips: &BTreeSet<Ipv4Addr>, lb_addr: Ipv4Addr) -> String {
    let elements = if vips.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = vips
            .iter()
            .map(|v| format!("{v} : {:#x}", fwmark(*v)))
            .collect();
        format!("elements = {{ {} }}", list.join(", "))
    };
    format!(
        "table ip shoal_lb {{}}
delete table ip shoal_lb
table ip shoal_lb {{
  map vips {{
    type ipv4_addr : mark
    {elements}
  }}
  chain pre {{
    type filter hook prerouting priority mangle; policy accept;
    meta mark set ip daddr map @vips
  }}
  chain post {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname \"eth0\" ip saddr != {lb_addr} snat to {lb_addr}
  }}
}}
"
    )
}

/// The networks this node should have a balancing endpoint on: those of
/// its tasks, with the balancer address Raft gave the node there.
pub type Wanted = BTreeMap<String, (Ipv4Addr, u8)>;

impl super::super::Agent {
    /// Creates balancing endpoints (IPVS mode) on the networks of the
    /// node's tasks and removes those of networks it left. Runs outside
    /// the agent's lock (it takes it per endpoint). `ingress`: the ingress
    /// network, which never has one (its VIPs are eBPF's, the mesh's, and
    /// its node address is the ingress sandbox's).
    pub async fn sync_lb_endpoints(&self, mut wanted: Wanted, ingress: Option<&str>) {
        if let Some(name) = ingress {
            wanted.remove(name);
        }
        let all = self.endpoints().await;
        let have: Vec<&Endpoint> = all.iter().filter(|e| is_lb_endpoint(e)).collect();
        // Networks some other endpoint of this node is on. Until a restarted
        // agent hears its assignments, `wanted` is empty: a balancing
        // endpoint stays as long as its network's task endpoints do.
        let joined: BTreeSet<&str> = all
            .iter()
            .filter(|e| !is_lb_endpoint(e))
            .map(|e| e.network.as_str())
            .collect();
        let defined: BTreeSet<String> = self.networks().await.into_iter().map(|n| n.name).collect();
        for (net, (addr, prefix)) in &wanted {
            if !defined.contains(net) || have.iter().any(|e| &e.network == net) {
                continue;
            }
            let ns_name = format!("{}lb-{net}", self.task_netns_prefix);
            if let Err(e) = NetNs::open_or_create(&ns_name) {
                warn!(network = %net, "balancing namespace: {e:#}");
                continue;
            }
            let r = self
                .create_endpoint(EndpointCreate {
                    network: net.clone(),
                    ip: format!("{addr}/{prefix}"),
                    mac: None,
                    netns: Some(NetNs::path_of(&ns_name).to_string_lossy().into_owned()),
                    name: Some(endpoint_name(net)),
                    ifname: None,
                    svc: None,
                    default_route: None,
                    ..Default::default()
                })
                .await;
            if let Err(e) = r {
                warn!(network = %net, "balancing endpoint: {e:#}");
                let _ = NetNs::delete(&ns_name);
            }
        }
        for e in have.iter().filter(|e| {
            Some(e.network.as_str()) == ingress
                || (!wanted.contains_key(&e.network) && !joined.contains(e.network.as_str()))
        }) {
            self.remove_lb_endpoint(&e.network).await;
        }
    }

    /// Removes a network's balancing endpoint and its namespace (with the
    /// namespace go its IPVS table and nftables rules).
    pub async fn remove_lb_endpoint(&self, network: &str) {
        let name = endpoint_name(network);
        if let Ok(ep) = self.remove_endpoint(&name).await {
            if let Some(ns) = std::path::Path::new(&ep.netns)
                .file_name()
                .and_then(|f| f.to_str())
            {
                let _ = NetNs::delete(ns);
            }
            info!(network, "balancing endpoint removed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_mark_each_vip_with_itself_and_snat_to_the_balancer() {
        let vips = BTreeSet::from([Ipv4Addr::new(10, 0, 1, 2), Ipv4Addr::new(10, 0, 1, 9)]);
        let r = nft_rules(&vips, Ipv4Addr::new(10, 0, 1, 7));
        assert!(r.contains("10.0.1.2 : 0xa000102, 10.0.1.9 : 0xa000109"));
        assert!(r.contains("ip saddr != 10.0.1.7 snat to 10.0.1.7"));
        // An empty set is still valid nft (no `elements = {}`).
        assert!(!nft_rules(&BTreeSet::new(), Ipv4Addr::new(10, 0, 1, 7)).contains("elements"));
    }

    #[test]
    fn draining_backends_are_quiesced_and_serving_wins() {
        let a = |d| Ipv4Addr::new(10, 0, 1, d);
        let w = weights(
            &BTreeSet::from([a(5), a(6)]),
            Some(&BTreeSet::from([a(6), a(7)])),
        );
        assert_eq!(w, Weights::from([(a(5), 1), (a(6), 1), (a(7), 0)]));
        assert_eq!(
            weights(&BTreeSet::from([a(5)]), None),
            Weights::from([(a(5), 1)])
        );
    }
}

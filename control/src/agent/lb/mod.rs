//! VIP load balancing on this node. What to balance comes from the gossip
//! table (what runs): each service VIP on a network this node has joined,
//! with its healthy tasks as backends (`desired`). Two balancers program
//! it, behind one trait: the eBPF one (`ebpf.rs`, the default: Maglev in
//! the tc program of every endpoint) and IPVS (`ipvs.rs`, Docker's scheme:
//! a balancing namespace per network with fwmark virtual services).

pub mod ebpf;
pub mod ipvs;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use shoal_dataplane::overlay::Maps;

use super::dns::Rec;
use crate::wire::Endpoint;
use crate::wire::{LbMode, LbReport, TaskHealth};

pub type Desired = BTreeMap<(u32, Ipv4Addr), BTreeSet<Ipv4Addr>>;

/// Services and their healthy backends, for the networks in `joined`.
pub fn desired<'a>(recs: impl Iterator<Item = Rec<'a>>, joined: &BTreeSet<u32>) -> Desired {
    let mut d = Desired::new();
    for (vni, ip, r) in recs {
        let Some(vip) = r.vip else { continue };
        if !joined.contains(&vni) {
            continue;
        }
        let backends = d.entry((vni, vip)).or_default();
        if r.health.serves() {
            backends.insert(ip);
        }
    }
    d
}

/// Backends draining before their SIGTERM (gossiped as stopping), per
/// service: out of every balancer's picks already, but IPVS keeps them as
/// weight-0 real servers until their records go, so the connections it
/// has on them finish (deleting one drops them; the eBPF balancer's flow
/// table keeps them by itself).
pub fn draining<'a>(recs: impl Iterator<Item = Rec<'a>>, joined: &BTreeSet<u32>) -> Desired {
    let mut d = Desired::new();
    for (vni, ip, r) in recs {
        if let (Some(vip), TaskHealth::Stopping) = (r.vip, r.health) {
            if joined.contains(&vni) {
                d.entry((vni, vip)).or_default().insert(ip);
            }
        }
    }
    d
}

impl Lb {
    pub fn report(&mut self) -> LbReport {
        match self {
            Lb::Ebpf(_) => LbReport {
                mode: LbMode::Ebpf,
                ipvs: vec![],
                local: vec![],
            },
            Lb::Ipvs { ipvs, .. } => LbReport {
                mode: LbMode::Ipvs,
                ipvs: ipvs.view(),
                local: vec![],
            },
        }
    }
}

/// What a balancer may touch besides its own state.
pub struct Ctx<'a> {
    pub maps: &'a mut Maps,
    /// The node's endpoints (IPVS: its balancing endpoints among them).
    pub endpoints: &'a [Endpoint],
    /// `draining` of the same records (IPVS quiesces them).
    pub draining: &'a Desired,
    /// A restarted agent relearning gossip: keep what is programmed and
    /// only add (removing a service there would cut its flows; IPVS would
    /// reset them).
    pub adopting: bool,
    /// The ingress network: its VIPs are the routing mesh's, balanced in
    /// eBPF whatever the balancer (the mesh's entry picks a backend by
    /// their Maglev tables; IPVS has no way to keep the client's address).
    pub ingress_vni: Option<u32>,
}

/// `want`, or while adopting, `want` plus everything `programmed` has.
pub fn settle(want: &Desired, programmed: &Desired, adopting: bool) -> Desired {
    if !adopting {
        return want.clone();
    }
    let mut out = programmed.clone();
    for (k, b) in want {
        out.entry(*k).or_default().extend(b.iter().copied());
    }
    out
}

/// A way of balancing VIPs, as netavark has firewall drivers.
pub(crate) trait Balancer {
    /// Makes the balanced services and backends equal to `want`.
    async fn apply(&mut self, want: &Desired, ctx: Ctx<'_>);
}

/// One per node, made once: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Lb {
    Ebpf(ebpf::LbProgrammer),
    /// IPVS for the VIPs of every network but ingress, whose VIPs `mesh`
    /// balances (Ctx::ingress_vni).
    Ipvs {
        ipvs: ipvs::IpvsLb,
        mesh: ebpf::LbProgrammer,
    },
}

impl Balancer for Lb {
    async fn apply(&mut self, want: &Desired, ctx: Ctx<'_>) {
        match self {
            Lb::Ebpf(b) => b.apply(want, ctx).await,
            Lb::Ipvs { ipvs, mesh } => {
                let (ingress, rest): (Desired, Desired) = want
                    .clone()
                    .into_iter()
                    .partition(|((vni, _), _)| Some(*vni) == ctx.ingress_vni);
                let Ctx {
                    maps,
                    endpoints,
                    draining,
                    adopting,
                    ingress_vni,
                } = ctx;
                let mesh_ctx = Ctx {
                    maps: &mut *maps,
                    endpoints,
                    draining,
                    adopting,
                    ingress_vni,
                };
                mesh.apply(&ingress, mesh_ctx).await;
                let ipvs_ctx = Ctx {
                    maps,
                    endpoints,
                    draining,
                    adopting,
                    ingress_vni,
                };
                ipvs.apply(&rest, ipvs_ctx).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::SvcRecord;

    fn rec(vip: Option<Ipv4Addr>, health: TaskHealth) -> SvcRecord {
        SvcRecord {
            service_id: "s".into(),
            service: "web".into(),
            task_id: "t".into(),
            task: "web.1.t".into(),
            slot: 1,
            network: "appnet".into(),
            vip,
            aliases: vec![],
            health,
        }
    }

    #[test]
    fn healthy_tasks_of_joined_networks_only() {
        let vip = Ipv4Addr::new(10, 0, 1, 2);
        let (ok, sick, rr) = (
            rec(Some(vip), TaskHealth::Healthy),
            rec(Some(vip), TaskHealth::Starting),
            rec(None, TaskHealth::None),
        );
        let recs = [
            (4096, Ipv4Addr::new(10, 0, 1, 5), &ok),
            (4096, Ipv4Addr::new(10, 0, 1, 6), &sick),
            (4096, Ipv4Addr::new(10, 0, 1, 7), &rr),
            (4097, Ipv4Addr::new(10, 0, 2, 5), &ok),
        ];
        let d = desired(recs.into_iter(), &BTreeSet::from([4096]));
        assert_eq!(d.len(), 1);
        assert_eq!(
            d[&(4096, vip)],
            BTreeSet::from([Ipv4Addr::new(10, 0, 1, 5)])
        );
    }

    #[test]
    fn stopping_tasks_drain_and_serve_nothing() {
        let vip = Ipv4Addr::new(10, 0, 1, 2);
        let (ok, stopping) = (
            rec(Some(vip), TaskHealth::Healthy),
            rec(Some(vip), TaskHealth::Stopping),
        );
        let recs = [
            (4096, Ipv4Addr::new(10, 0, 1, 5), &ok),
            (4096, Ipv4Addr::new(10, 0, 1, 6), &stopping),
            (4097, Ipv4Addr::new(10, 0, 2, 6), &stopping),
        ];
        let joined = BTreeSet::from([4096]);
        let serving = desired(recs.into_iter(), &joined);
        let drain = draining(recs.into_iter(), &joined);
        assert_eq!(
            serving[&(4096, vip)],
            BTreeSet::from([Ipv4Addr::new(10, 0, 1, 5)])
        );
        assert_eq!(drain.len(), 1);
        assert_eq!(
            drain[&(4096, vip)],
            BTreeSet::from([Ipv4Addr::new(10, 0, 1, 6)])
        );
    }
}

//! What follows from the local table and gossip: the loop that re-merges
//! them and reprograms remote endpoints (`programmer.rs`), DNS, the
//! balancers and the routing mesh, then acknowledges what it applied; and
//! the merged table as `shoal debug gossip` shows it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use tracing::{info, warn};

use super::lb::Balancer;
use super::store::State;
use super::{Agent, Inner};
use crate::gossip::table::{self, LocalView};
use crate::heavy::heavy;
use crate::wire::GossipView;

impl Agent {
    /// Re-merges gossip with the local table and reprograms the difference.
    /// Returns the peers whose entries it programmed.
    pub async fn resync(&self) -> Result<BTreeSet<String>> {
        let t0 = Instant::now();
        let ingress = self.ingress_name().await;
        if self.lb_mode == crate::wire::LbMode::Ipvs {
            let attached = self.endpoints().await;
            self.sync_lb_endpoints(self.lb_wanted(&attached), ingress.as_deref())
                .await;
        }
        let host_published = self.host_published(ingress.as_deref());
        let sandbox = self.sync_ingress_sandbox().await;
        let peers = self.gossip.peers().await;
        let mut inner = self.inner.lock().await;
        let local = LocalView {
            networks: inner.state.networks.clone(),
            endpoints: inner
                .state
                .endpoints
                .iter()
                .map(|e| (e.vni, e.ip))
                .collect(),
            also_joined: inner
                .mesh
                .iter()
                .filter_map(|m| m.ingress.as_ref())
                .map(|n| n.vni)
                .collect(),
        };
        // The table's whole size, every pass: off the async workers, so
        // gossip, DNS and the API keep answering meanwhile.
        let (merged, joined, acks, want, draining) = heavy(|| {
            let merged = table::merge(&local, &peers);
            // The networks this node balances: its endpoints' and the ingress
            // network's (every node is an entry of the routing mesh, whether
            // or not it runs a task). Acknowledged after programming: the
            // peers stopping a task on one of them.
            let joined: std::collections::BTreeSet<u32> = local
                .endpoints
                .iter()
                .map(|(v, _)| *v)
                .chain(local.also_joined.iter().copied())
                .collect();
            let mut acks: BTreeMap<u32, BTreeMap<String, u64>> = BTreeMap::new();
            for p in &peers {
                for vni in p.stopping_vnis().intersection(&joined) {
                    if let Some(v) = p.ep_versions.get(vni) {
                        acks.entry(*vni).or_default().insert(p.node.clone(), *v);
                    }
                }
            }
            self.rebuild_dns(&inner.state, &merged);
            let want = super::lb::desired(task_records(&inner.state, &merged), &joined);
            let draining = super::lb::draining(task_records(&inner.state, &merged), &joined);
            (merged, joined, acks, want, draining)
        });
        let Inner {
            mesh,
            mesh_maps,
            mesh_ifaces,
            overlay,
            relays,
            state,
            ..
        } = &mut *inner;
        if let Some(m) = mesh.as_ref() {
            let mut published = super::mesh::ports(m);
            published.extend(host_published.iter().cloned());
            super::mesh::program(mesh_maps, &published);
            super::mesh::program_addrs(
                mesh_maps,
                overlay,
                mesh_ifaces,
                &self.info.underlay_dev,
                self.info.vtep,
            );
            let local = super::mesh::local_ports(m, sandbox.as_deref(), &host_published, |a| {
                state
                    .endpoints
                    .iter()
                    .find(|e| e.ip == a)
                    .map(|e| e.netns.clone())
            });
            relays.sync(&local);
        }
        let Inner {
            maps,
            programmer,
            lb,
            state,
            mesh,
            ..
        } = &mut *inner;
        lb.apply(
            &want,
            super::lb::Ctx {
                maps,
                endpoints: &state.endpoints,
                draining: &draining,
                adopting: programmer.adopting(),
                ingress_vni: mesh
                    .as_ref()
                    .and_then(|m| m.ingress.as_ref())
                    .map(|n| n.vni),
            },
        )
        .await;
        heavy(|| programmer.apply(maps, merged))?;
        drop(inner);
        // Gossip on exactly the networks this node balances.
        self.gossip.set_networks(&joined).await;
        // Encrypted networks: SAs with every live peer.
        let vteps = peers.iter().map(|p| p.gossip_ip).collect();
        if let Err(e) = self.sync_ipsec(vteps).await {
            warn!("IPsec: {e:#}");
        }
        // Programmed: say how far into those peers' endpoint changes this
        // node's balancers (and DNS) now are; a node draining a task waits
        // for it.
        let present: BTreeSet<String> = peers.iter().map(|p| p.node.clone()).collect();
        self.gossip.set_applied(&present, &acks).await;
        let took = t0.elapsed();
        let entries = {
            let mut inner = self.inner.lock().await;
            inner.programmer.passes.observe(took.as_secs_f64());
            inner.programmer.last.entries.len()
        };
        if took > SLOW_PASS {
            warn!(
                took_ms = took.as_millis() as u64,
                entries, "slow programming pass"
            );
        }
        Ok(present)
    }

    /// The DNS records: every accepted task record of the table and this
    /// node's own; the local tasks' networks in attachment order.
    fn rebuild_dns(&self, st: &State, merged: &table::Merged) {
        let mut local: Vec<(&str, String, u32)> = st
            .endpoints
            .iter()
            .filter_map(|e| Some((e.name.as_str(), e.svc.as_ref()?.task_id.clone(), e.vni)))
            .collect();
        // Endpoint names end in the attachment index (t<id>-0, -1, ...).
        local.sort();
        // A container's default-route interface's network first.
        let mut containers: Vec<(bool, String, u32)> = st
            .endpoints
            .iter()
            .filter_map(|e| {
                let c = e.container.as_ref()?;
                let first = e.default_route != Some(false);
                Some((!first, super::attachments::dns_client(&c.id), e.vni))
            })
            .collect();
        containers.sort();
        let names = merged
            .entries
            .iter()
            .filter(|e| e.refused.is_none())
            .filter_map(|e| Some((e.vni, e.ip, e.container.as_deref()?)))
            .chain(
                st.endpoints
                    .iter()
                    .filter_map(|e| Some((e.vni, e.ip, e.container.as_ref()?.name.as_str()))),
            );
        self.dns.view.rebuild(
            task_records(st, merged),
            names,
            local
                .into_iter()
                .map(|(_, t, v)| (t, v))
                .chain(containers.into_iter().map(|(_, c, v)| (c, v))),
        );
    }

    /// Every task address the node knows (gossip and its own): (VNI,
    /// address, service record).
    pub async fn task_addresses(&self) -> Vec<(u32, std::net::Ipv4Addr, crate::wire::SvcRecord)> {
        let inner = self.inner.lock().await;
        task_records(&inner.state, &inner.programmer.last)
            .map(|(vni, ip, r)| (vni, ip, r.clone()))
            .collect()
    }

    /// Refused gossip by reason: entries (merge rules) and datagrams.
    pub async fn gossip_view_refused(&self) -> Vec<(String, u64)> {
        let inner = self.inner.lock().await;
        refused(&inner.programmer, &self.gossip)
            .into_iter()
            .collect()
    }

    pub async fn gossip_view(&self) -> GossipView {
        let members = self.gossip.members().await;
        let networks = self.gossip.networks().await;
        let inner = self.inner.lock().await;
        let mut table = inner.programmer.last.entries.clone();
        for e in &mut table {
            e.programmed = inner.programmer.is_programmed(e.vni, e.ip) && e.refused.is_none();
        }
        let refused = refused(&inner.programmer, &self.gossip);
        GossipView {
            members,
            table,
            refused,
            keys: self.gossip.keys.current().view(),
            traffic: self.gossip.counters.traffic(),
            networks,
        }
    }
}

fn refused(p: &super::Programmer, g: &crate::gossip::Gossip) -> BTreeMap<String, u64> {
    let mut refused: BTreeMap<String, u64> = p
        .refused_total
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    for (k, v) in g.wire_refused() {
        refused.insert(k.to_string(), v);
    }
    refused
}

/// Every task record this node knows: its peers' accepted ones and its own.
fn task_records<'a>(
    st: &'a State,
    merged: &'a table::Merged,
) -> impl Iterator<Item = super::dns::Rec<'a>> {
    merged
        .entries
        .iter()
        .filter(|e| e.refused.is_none())
        .filter_map(|e| Some((e.vni, e.ip, e.svc.as_ref()?)))
        .chain(
            st.endpoints
                .iter()
                .filter_map(|e| Some((e.vni, e.ip, e.svc.as_ref()?))),
        )
}

/// Reprograms on every gossip change, local change, and once a second (the
/// adoption grace of a restarted agent ends on a timer; a costly pass with
/// nothing changed is repeated only every `IDLE_PASS`).
pub async fn sync_loop(agent: Arc<Agent>) {
    let mut changes = agent.gossip.changes();
    let mut live = BTreeSet::new();
    let mut used = BTreeSet::new();
    loop {
        // Who the failure detector counts live, and whose entries this node
        // programs, logged as they change: an operator's first question
        // when names or backends vanish. (They differ for a moment after
        // this node stalled or heard from no peer: `Gossip::peers`.)
        let now = agent.gossip.live_names();
        // A convicted peer's entries are held until its silence reaches
        // the hold: look again soon, not at the next 1 s tick (which made
        // their removal up to a second late).
        let mut holding = false;
        match agent.resync().await {
            Ok(programmed) => {
                holding = programmed.iter().any(|p| !now.contains(p));
                for gone in live.difference(&now) {
                    if programmed.contains(gone) {
                        warn!(peer = %gone, "peer convicted by the failure detector, but its entries are kept (until 2.5 s of silence; 10 s if it said it restarts; longer if this node just stalled or hears from no peer at all)");
                    }
                }
                for gone in used.difference(&programmed) {
                    warn!(peer = %gone, "peer no longer live (convicted by the failure detector, or left): its entries are gone");
                }
                for back in programmed.difference(&used) {
                    info!(peer = %back, "peer live");
                }
                used = programmed;
            }
            Err(e) => warn!("reprogramming remote endpoints failed: {e:#}"),
        }
        live = now;
        let last_pass = Instant::now();
        loop {
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = agent.changed.notified() => {}
                _ = tokio::time::sleep(if holding { HOLD_RECHECK } else { Duration::from_secs(1) }) => {
                    if !holding && idle_tick_skipped(&agent, last_pass).await {
                        continue;
                    }
                }
            }
            break;
        }
    }
}

/// Whether the 1 s tick may pass without a programming pass: only with a
/// big table (a pass over `COSTLY_PASS`: 0.56 s at 96,287 endpoints, 0.64
/// cores spent redoing it every second with nothing changed), only while
/// nothing else is pending (no adoption grace running out, no stall), and
/// for at most `IDLE_PASS`. Gossip and local changes trigger a pass at
/// once either way; small tables keep the plain 1 s tick.
async fn idle_tick_skipped(agent: &Agent, last_pass: Instant) -> bool {
    let inner = agent.inner.lock().await;
    let p = &inner.programmer;
    let last = p.passes.last_seconds;
    last > COSTLY_PASS.as_secs_f64()
        && !p.adopting()
        && !agent.gossip.stalled()
        && last_pass.elapsed() < IDLE_PASS
}

/// A pass costing more than this is not repeated on the idle tick.
const COSTLY_PASS: Duration = Duration::from_millis(50);
/// The longest a costly pass goes unrepeated with nothing changed.
const IDLE_PASS: Duration = Duration::from_secs(5);

/// A programming pass slower than this is logged: names, backends and
/// remote endpoints lag by as much.
const SLOW_PASS: Duration = Duration::from_secs(1);

/// How often a held peer's silence is looked at again: a gossip round.
const HOLD_RECHECK: Duration = Duration::from_millis(200);

//! The drain before a stopping task's SIGTERM. The task is first taken
//! out of DNS and the balancers (its records gossiped as "stopping"); it
//! gets SIGTERM once every other live node balancing its networks says, in
//! its applied record on that network's table (`gossip::netdb`), that it
//! has applied that record, so no node still sends it new connections when
//! it closes its port. A fixed wait
//! (Docker's way, and ours before) is too long on a quiet cluster and too
//! short on a loaded one: a rolling update lost requests on a busy
//! 2-core machine with 1 s, and once with 2 s.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tracing::{info, warn};

use super::{process, Local};
use crate::gossip::PeerAck;
use crate::wire::TaskState;

/// The shortest drain: connections a node balanced to the task just
/// before applying the stop are still being set up.
pub const MIN: Duration = Duration::from_millis(500);
/// The longest: a node that has not applied the stop by then (wedged, or
/// cut off while still counted live) is not waited for any longer.
pub const MAX: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct Drain {
    pub since: Instant,
    /// The gossip version of the "stopping" records on each of the task's
    /// networks (empty: the task had none to publish); None until they are
    /// published.
    pub version: Option<BTreeMap<u32, u64>>,
}

/// How a drain ended.
#[derive(Debug, PartialEq, Eq)]
pub struct Ended {
    pub waited: Duration,
    /// The nodes waited for that had applied the stop.
    pub acked: Vec<String>,
    /// Those that had not (the drain timed out).
    pub pending: Vec<String>,
}

impl Drain {
    pub fn new(now: Instant) -> Self {
        Self {
            since: now,
            version: None,
        }
    }

    /// Whether the drain is over at `now`, given the peers waited for
    /// (`Gossip::acks`: the live ones and those convicted a moment ago).
    /// A peer is waited for on each of the task's networks it is on (every
    /// node is on the ingress network: each is a mesh entry); a node on
    /// none of them holds none of the task's records, so it cannot send to
    /// it.
    pub fn over(&self, now: Instant, peers: &[PeerAck]) -> Option<Ended> {
        let waited = now.saturating_duration_since(self.since);
        if waited < MIN {
            return None;
        }
        let (acked, pending): (Vec<&PeerAck>, Vec<&PeerAck>) = match &self.version {
            Some(versions) => peers
                .iter()
                .filter(|p| versions.keys().any(|v| p.vnis.contains(v)))
                .partition(|p| {
                    versions.iter().all(|(vni, v)| {
                        !p.vnis.contains(vni) || p.applied.get(vni).is_some_and(|a| a >= v)
                    })
                }),
            // Its records not published yet (or not at all, in time).
            None if waited < MAX => return None,
            None => {
                return Some(Ended {
                    waited,
                    acked: vec![],
                    pending: vec!["(this node's records: not published)".into()],
                })
            }
        };
        let names = |ps: Vec<&PeerAck>| ps.into_iter().map(|p| p.node.clone()).collect();
        (pending.is_empty() || waited >= MAX).then(|| Ended {
            waited,
            acked: names(acked),
            pending: names(pending),
        })
    }
}

/// Starts a task's stop: the drain, then SIGTERM (`signal_term`), then
/// SIGKILL at the deadline (the tasks loop sends it).
pub(super) fn begin_stop(l: &mut Local) {
    if l.stop_deadline.is_some() || l.state.is_terminal() {
        return;
    }
    if l.child.is_none() && l.adopted.is_none() && !l.busy {
        // Not started and never will be: nothing to signal.
        l.state = TaskState::Shutdown;
        return;
    }
    // Out of DNS and the balancers first (the tasks loop gossips
    // "stopping"), SIGTERM once every node has applied that (the deadline
    // moves to SIGTERM + grace then), SIGKILL after the grace period.
    let now = Instant::now();
    l.drain = Some(Drain::new(now));
    l.stop_deadline = Some(now + MAX + Duration::from_millis(l.a.stop_grace_ms));
}

/// SIGTERM once the drain is over (and the process exists: a task still
/// starting gets it when it has started); `peers`: the peers waited for and what
/// they have applied of this node's endpoint keys.
pub(super) fn signal_term(l: &mut Local, now: Instant, peers: &[PeerAck]) {
    let Some(ended) = l.drain.as_ref().and_then(|d| d.over(now, peers)) else {
        return;
    };
    match (&l.child, l.adopted) {
        (Some(c), _) => process::signal(c.id(), Signal::SIGTERM),
        (None, Some(pid)) => process::signal(pid, Signal::SIGTERM),
        (None, None) if l.busy => return,
        (None, None) => {}
    }
    let waited_ms = ended.waited.as_millis() as u64;
    if ended.pending.is_empty() {
        info!(task = %l.a.task.name(), waited_ms, acked = ?ended.acked,
            "drained: every node has let it go; SIGTERM");
    } else {
        warn!(task = %l.a.task.name(), waited_ms, pending = ?ended.pending,
            "drain timed out on nodes that had not applied the stop; SIGTERM");
    }
    l.drain = None;
    l.stop_deadline = Some(now + Duration::from_millis(l.a.stop_grace_ms));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (node, what it applied per network, the networks it is on).
    type Peer<'a> = (&'a str, &'a [(u32, u64)], &'a [u32]);

    fn peers(v: &[Peer]) -> Vec<PeerAck> {
        v.iter()
            .map(|(n, a, vnis)| PeerAck {
                node: n.to_string(),
                applied: a.iter().copied().collect(),
                vnis: vnis.iter().copied().collect(),
            })
            .collect()
    }

    fn at(vni: u32, v: u64) -> Option<BTreeMap<u32, u64>> {
        Some([(vni, v)].into())
    }

    #[test]
    fn a_drain_ends_when_every_node_balancing_its_networks_has_applied_the_stop() {
        let t0 = Instant::now();
        let mut d = Drain::new(t0);
        let ms = |ms| t0 + Duration::from_millis(ms);
        let all = peers(&[("n2", &[(4097, 7)], &[4097]), ("n3", &[(4097, 9)], &[4097])]);
        // Not published yet, or too early: wait.
        assert_eq!(d.over(ms(600), &all), None);
        d.version = at(4097, 8);
        assert_eq!(d.over(ms(100), &all), None);
        // n2 has applied up to 7 only; a node that says nothing has not.
        assert_eq!(d.over(ms(600), &all), None);
        let silent = peers(&[("n2", &[(4097, 8)], &[4097]), ("n3", &[], &[4097])]);
        assert_eq!(d.over(ms(600), &silent), None);
        // What a node applied on another network says nothing of this one.
        let elsewhere = peers(&[
            ("n2", &[(4097, 8)], &[4097]),
            ("n3", &[(4098, 9)], &[4097, 4098]),
        ]);
        assert_eq!(d.over(ms(600), &elsewhere), None);
        let done = peers(&[("n2", &[(4097, 8)], &[4097]), ("n3", &[(4097, 9)], &[4097])]);
        assert_eq!(
            d.over(ms(600), &done),
            Some(Ended {
                waited: Duration::from_millis(600),
                acked: vec!["n2".into(), "n3".into()],
                pending: vec![]
            })
        );
        // Alone in the cluster: the shortest drain.
        assert!(d.over(ms(500), &[]).is_some());
    }

    #[test]
    fn only_nodes_on_the_task_s_networks_are_waited_for_on_each() {
        let t0 = Instant::now() - MIN;
        let mut d = Drain::new(t0);
        d.version = Some([(4097, 8), (4000, 3)].into());
        // n3 is on neither of the task's networks: it cannot send to it.
        let p = peers(&[("n2", &[(4097, 8)], &[4097]), ("n3", &[], &[4098])]);
        assert!(d.over(Instant::now(), &p).is_some());
        // The ingress network (4000): n3 is on it, so it is waited for there.
        let p = peers(&[("n2", &[(4097, 8)], &[4097]), ("n3", &[(4000, 2)], &[4000])]);
        assert_eq!(d.over(Instant::now(), &p), None);
        let p = peers(&[("n2", &[(4097, 8)], &[4097]), ("n3", &[(4000, 3)], &[4000])]);
        assert!(d.over(Instant::now(), &p).is_some());
    }

    #[test]
    fn a_drain_gives_up_on_nodes_that_never_apply_and_needs_nothing_without_records() {
        let t0 = Instant::now();
        let mut d = Drain::new(t0);
        d.version = at(4097, 8);
        let late = peers(&[("n2", &[(4097, 3)], &[4097]), ("n3", &[(4097, 8)], &[4097])]);
        assert_eq!(d.over(t0 + MAX - Duration::from_millis(1), &late), None);
        assert_eq!(
            d.over(t0 + MAX, &late).map(|e| e.pending),
            Some(vec!["n2".to_string()])
        );
        d.version = Some(BTreeMap::new());
        assert!(d.over(t0 + MIN, &late).is_some());
    }
}

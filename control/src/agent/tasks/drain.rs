//! The drain before a stopping task's SIGTERM. The task is first taken
//! out of DNS and the balancers (its records gossiped as "stopping"); it
//! gets SIGTERM once every other live node says, in its `lb_applied`
//! gossip key, that its balancers have applied that record, so no node
//! still sends it new connections when it closes its port. A fixed wait
//! (Docker's way, and ours before) is too long on a quiet cluster and too
//! short on a loaded one: a rolling update lost requests on a busy
//! 2-core machine with 1 s, and once with 2 s.

use std::time::{Duration, Instant};

/// The shortest drain: connections a node balanced to the task just
/// before applying the stop are still being set up.
pub const MIN: Duration = Duration::from_millis(500);
/// The longest: a node that has not applied the stop by then (wedged, or
/// cut off while still counted live) is not waited for any longer.
pub const MAX: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct Drain {
    pub since: Instant,
    /// The gossip version of the "stopping" records (0: the task had none
    /// to publish); None until they are published.
    pub version: Option<u64>,
}

/// How a drain ended.
#[derive(Debug, PartialEq, Eq)]
pub struct Ended {
    pub waited: Duration,
    /// Live nodes that had not applied the stop (the drain timed out).
    pub pending: Vec<String>,
}

impl Drain {
    pub fn new(now: Instant) -> Self {
        Self {
            since: now,
            version: None,
        }
    }

    /// Whether the drain is over at `now`, given what each live peer has
    /// applied of this node's endpoint keys (None: it says nothing).
    pub fn over(&self, now: Instant, applied: &[(String, Option<u64>)]) -> Option<Ended> {
        let waited = now.saturating_duration_since(self.since);
        if waited < MIN {
            return None;
        }
        let pending: Vec<String> = match self.version {
            Some(0) => vec![],
            Some(v) => applied
                .iter()
                .filter(|(_, a)| a.is_none_or(|a| a < v))
                .map(|(n, _)| n.clone())
                .collect(),
            None => vec!["(this node: not published yet)".into()],
        };
        (pending.is_empty() || waited >= MAX).then_some(Ended { waited, pending })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(v: &[(&str, Option<u64>)]) -> Vec<(String, Option<u64>)> {
        v.iter().map(|(n, a)| (n.to_string(), *a)).collect()
    }

    #[test]
    fn a_drain_ends_when_every_live_node_has_applied_the_stop() {
        let t0 = Instant::now();
        let mut d = Drain::new(t0);
        let at = |ms| t0 + Duration::from_millis(ms);
        let all = peers(&[("n2", Some(7)), ("n3", Some(9))]);
        // Not published yet, or too early: wait.
        assert_eq!(d.over(at(600), &all), None);
        d.version = Some(8);
        assert_eq!(d.over(at(100), &all), None);
        // n2 has applied up to 7 only; a node that says nothing has not.
        assert_eq!(d.over(at(600), &all), None);
        assert_eq!(
            d.over(at(600), &peers(&[("n2", Some(8)), ("n3", None)])),
            None
        );
        assert_eq!(
            d.over(at(600), &peers(&[("n2", Some(8)), ("n3", Some(9))])),
            Some(Ended {
                waited: Duration::from_millis(600),
                pending: vec![]
            })
        );
        // Alone in the cluster: the shortest drain.
        assert!(d.over(at(500), &[]).is_some());
    }

    #[test]
    fn a_drain_gives_up_on_nodes_that_never_apply_and_needs_nothing_without_records() {
        let t0 = Instant::now();
        let mut d = Drain::new(t0);
        d.version = Some(8);
        let late = peers(&[("n2", Some(3)), ("n3", Some(8))]);
        assert_eq!(d.over(t0 + MAX - Duration::from_millis(1), &late), None);
        assert_eq!(
            d.over(t0 + MAX, &late).map(|e| e.pending),
            Some(vec!["n2".to_string()])
        );
        d.version = Some(0);
        assert!(d.over(t0 + MIN, &late).is_some());
    }
}

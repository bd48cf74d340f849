//! Node liveness, kept by the leader: every node heartbeats its session
//! (`/swarm/session`, forwarded to the leader) every `HEARTBEAT`; the
//! leader marks a node `down` in the replicated state when it has not heard
//! from it for `DOWN_AFTER`, and `ready` again when it returns. A new leader
//! gives every node not down a fresh `DOWN_AFTER` before judging it; a
//! down one stays down until it heartbeats.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use openraft::Raft;
use tracing::{info, warn};

use super::state::ClusterState;
use super::TypeConfig;
use crate::wire::{Command, NodeState};

/// How often a node reports to the managers.
pub const HEARTBEAT: Duration = Duration::from_millis(500);
/// Silence after which the leader marks a node down.
pub const DOWN_AFTER: Duration = Duration::from_secs(3);
/// How long a node that said it restarts (its daemon's last heartbeat
/// before a quiet exit: `systemctl restart`, an upgrade) may stay silent
/// before it is called down: its tasks keep running meanwhile, and are not
/// moved for a restart.
pub const RESTART_GRACE: Duration = Duration::from_secs(10);
/// A watch tick this late means the leader itself was frozen (a starved
/// VM, SIGSTOP): the silence it would judge is partly its own.
const STALLED: Duration = Duration::from_secs(1);
/// How often the leader looks for silent nodes: a small part of
/// DOWN_AFTER, so a dead node is called down close to it.
const WATCH_TICK: Duration = Duration::from_millis(100);

/// Last heartbeat per node id (leader memory; not replicated).
#[derive(Default)]
pub struct Liveness {
    seen: Mutex<HashMap<String, Instant>>,
    /// Nodes that said goodbye (`swarm leave`): a heartbeat of theirs still
    /// in flight must not bring them back (a node that joins again gets a
    /// new id).
    left: Mutex<HashSet<String>>,
}

impl Liveness {
    pub fn seen(&self, node_id: &str) {
        if self.left.lock().expect("liveness lock").contains(node_id) {
            return;
        }
        // Never earlier than a restart's grace: an ordinary heartbeat of
        // the exiting daemon may land after the one saying it restarts.
        let now = Instant::now();
        let mut seen = self.seen.lock().expect("liveness lock");
        let t = seen.entry(node_id.to_string()).or_insert(now);
        *t = (*t).max(now);
    }

    /// A node that said it restarts: silent for up to `RESTART_GRACE`
    /// before it is called down.
    pub fn restarting(&self, node_id: &str) {
        if self.left.lock().expect("liveness lock").contains(node_id) {
            return;
        }
        // Counted as heard from until DOWN_AFTER before the grace ends.
        let until = Instant::now() + RESTART_GRACE.saturating_sub(DOWN_AFTER);
        self.seen
            .lock()
            .expect("liveness lock")
            .insert(node_id.to_string(), until);
    }

    /// A node that said goodbye: no grace period, and no coming back.
    pub fn forget(&self, node_id: &str) {
        self.left
            .lock()
            .expect("liveness lock")
            .insert(node_id.to_string());
        self.seen.lock().expect("liveness lock").remove(node_id);
    }

    fn last(&self, node_id: &str) -> Option<Instant> {
        self.seen
            .lock()
            .expect("liveness lock")
            .get(node_id)
            .copied()
    }
}

/// Where the leader's judging of silence starts: its first tick as
/// leader, or the tick after it was itself frozen (a watch tick more than
/// `STALLED` late). Heartbeats that arrived meanwhile may still wait in its
/// sockets, so every node gets a fresh DOWN_AFTER, as from a new leader,
/// rather than being convicted for the leader's own silence.
struct Grace {
    since: Option<Instant>,
    last_tick: Instant,
}

impl Grace {
    fn new(now: Instant) -> Self {
        Self {
            since: None,
            last_tick: now,
        }
    }

    /// The start of judging at this tick, or `None` while not leading.
    fn tick(&mut self, now: Instant, leading: bool) -> Option<Instant> {
        let gap = now.duration_since(self.last_tick);
        self.last_tick = now;
        if !leading {
            self.since = None;
            return None;
        }
        if gap > STALLED && self.since.is_some() {
            warn!(
                stalled_ms = gap.as_millis() as u64,
                "liveness watch was frozen; judging nodes afresh"
            );
            self.since = Some(now);
        }
        Some(*self.since.get_or_insert(now))
    }
}

/// The leader's watch: flips node states on the log as heartbeats stop and
/// resume. Runs on every manager, acts only while leading.
pub async fn watch(
    raft: Raft<TypeConfig>,
    state: Arc<RwLock<ClusterState>>,
    mem: Arc<super::leader::LeaderMemory>,
    self_id: String,
) {
    let mut grace = Grace::new(Instant::now());
    loop {
        tokio::time::sleep(WATCH_TICK).await;
        let now = Instant::now();
        let m = raft.metrics().borrow().clone();
        let Some(since) = grace.tick(now, super::leads_as_voter(&m)) else {
            continue;
        };
        let nodes: Vec<_> = state
            .read()
            .expect("state lock")
            .nodes
            .values()
            .map(|n| (n.id.clone(), n.hostname.clone(), n.state))
            .collect();
        for (id, hostname, current) in nodes {
            // A new leader gives a node it has not heard from yet a fresh
            // DOWN_AFTER, unless it is down already: it does not come
            // back up without a heartbeat (one that left never does).
            let seen = if id == self_id {
                Some(now)
            } else {
                let last = mem.live.last(&id);
                match current {
                    NodeState::Down => last,
                    _ => Some(last.map_or(since, |t| t.max(since))),
                }
            };
            let want = if seen.is_some_and(|t| now.duration_since(t) < DOWN_AFTER) {
                NodeState::Ready
            } else {
                NodeState::Down
            };
            if want == current {
                continue;
            }
            let cmd = Command::NodeSetState {
                id: id.clone(),
                state: want,
            };
            match tokio::time::timeout(Duration::from_secs(2), raft.client_write(cmd)).await {
                Ok(Ok(_)) => {
                    info!(node = %hostname, state = ?want, "node liveness changed");
                    mem.nodes_changed.notify_one();
                }
                Ok(Err(e)) => warn!(node = %hostname, "cannot record liveness: {e}"),
                Err(_) => warn!(node = %hostname, "liveness write timed out"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarting_node_keeps_its_grace_through_a_late_ordinary_heartbeat() {
        let live = Liveness::default();
        live.restarting("n2");
        // The exiting daemon's session tick, after its last word.
        live.seen("n2");
        let t = live.last("n2").unwrap();
        let ahead = t.saturating_duration_since(Instant::now());
        assert!(
            ahead > RESTART_GRACE - DOWN_AFTER - Duration::from_secs(1),
            "{ahead:?}"
        );
        // A node that left stays gone.
        live.forget("n3");
        live.seen("n3");
        assert!(live.last("n3").is_none());
    }

    #[test]
    fn a_frozen_leader_judges_afresh_and_a_new_one_from_its_first_tick() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut g = Grace::new(t0);
        assert_eq!(g.tick(t0 + ms(250), false), None);
        // Leading from this tick on; on-time ticks keep the start.
        assert_eq!(g.tick(t0 + ms(500), true), Some(t0 + ms(500)));
        assert_eq!(g.tick(t0 + ms(750), true), Some(t0 + ms(500)));
        assert_eq!(g.tick(t0 + ms(1700), true), Some(t0 + ms(500)));
        // Frozen for 5 s: judging starts again after the thaw.
        assert_eq!(g.tick(t0 + ms(6700), true), Some(t0 + ms(6700)));
        assert_eq!(g.tick(t0 + ms(6950), true), Some(t0 + ms(6700)));
        // Leadership lost and won again: a fresh start too.
        assert_eq!(g.tick(t0 + ms(7200), false), None);
        assert_eq!(g.tick(t0 + ms(7450), true), Some(t0 + ms(7450)));
    }
}

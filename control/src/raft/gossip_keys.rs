//! Gossip keys on the managers: the ring lives in the replicated state
//! (`ClusterInfo::gossip_keys`, newest first, `GOSSIP_RING` kept); the
//! leader rotates it on a schedule and at once when a node is removed or
//! leaves, and tells each node in its session reply which keys to accept
//! and which one to seal with.
//!
//! No rotation partitions the cluster: each heartbeat reports the newest
//! key id the node holds and the one it seals with (kept in leader memory,
//! not Raft: a new leader rebuilds it from the next heartbeats). Nodes are
//! told to seal with the newest key every live (ready) node already holds,
//! and are sent only the keys some live node may still seal with, so once
//! every live node seals with a new key the old ones are gone everywhere.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use openraft::Raft;
use tracing::{info, warn};

use super::leader::LeaderMemory;
use super::state::ClusterState;
use super::TypeConfig;
use crate::wire::{Command, CommandResult, GossipKey, KeyBytes, KeyReport, NodeState};

/// How often the leader looks at the ring.
const TICK: Duration = Duration::from_millis(250);
/// How long a computed plan serves heartbeats before it is recomputed.
const PLAN_TTL: Duration = Duration::from_millis(100);

/// A fresh key: 32 bytes of the OS's random source (through ring, as
/// rustls draws its own).
pub fn new_key(id: u32) -> GossipKey {
    use ring::rand::SecureRandom;
    let mut key = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut key)
        .expect("the OS random source");
    GossipKey {
        id,
        key: KeyBytes(key),
        created_ms: crate::clock::now_ms(),
    }
}

/// What the leader knows of one node's keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// No heartbeat to this leader yet.
    Unreported,
    /// It holds no swarm key (just joined): it takes whatever it is sent.
    NoKeys,
    Holds(KeyReport),
}

/// Which keys nodes accept, and which one they seal with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPlan {
    pub send: u32,
    /// Newest first.
    pub keep: Vec<u32>,
}

/// The decision, pure: `ring` is the key ids, newest first; `nodes` each
/// node's liveness (ready or not) and what it reported. Nodes that are
/// not live hold nothing back. While a live node has not reported, nothing
/// moves forward and nothing is dropped.
pub fn plan(ring: &[u32], nodes: impl IntoIterator<Item = (bool, Seen)>) -> Option<KeyPlan> {
    let (&newest, &oldest) = (ring.first()?, ring.last()?);
    let clamp = |id: u32| {
        // The newest ring key at or below `id` (the oldest if none).
        ring.iter().copied().find(|k| *k <= id).unwrap_or(oldest)
    };
    let mut holders = vec![];
    let mut unreported = false;
    for (live, seen) in nodes {
        match (live, seen) {
            (false, _) | (true, Seen::NoKeys) => {}
            (true, Seen::Unreported) => unreported = true,
            (true, Seen::Holds(r)) => holders.push(r),
        }
    }
    let min_sealing = holders.iter().map(|r| r.sealing).min();
    if unreported {
        let send = min_sealing.map_or(newest, clamp);
        return Some(KeyPlan {
            send,
            keep: ring.to_vec(),
        });
    }
    let send = holders.iter().map(|r| r.newest).min().map_or(newest, clamp);
    let floor = min_sealing.map_or(send, |s| s.min(send));
    Some(KeyPlan {
        send,
        keep: ring.iter().copied().filter(|k| *k >= floor).collect(),
    })
}

/// The leader's memory of nodes' keys.
#[derive(Default)]
pub struct KeyMemory {
    reports: Mutex<HashMap<String, Option<KeyReport>>>,
    rotate_now: AtomicBool,
    /// The send key of the last plan (0: none yet).
    last_send: AtomicU32,
    cache: Mutex<Option<(Instant, Vec<u32>, KeyPlan)>>,
}

impl KeyMemory {
    pub fn report(&self, node_id: &str, r: Option<KeyReport>) {
        self.reports
            .lock()
            .expect("key reports")
            .insert(node_id.to_string(), r);
    }

    /// A node left the swarm: a new key, now.
    pub fn rotate_now(&self) {
        self.rotate_now.store(true, Ordering::Relaxed);
    }

    /// The keys to send a node and the one it seals with.
    pub fn for_session(&self, st: &ClusterState) -> (Vec<GossipKey>, Option<u32>) {
        let Some(c) = &st.cluster else {
            return (vec![], None);
        };
        let ring: Vec<u32> = c.gossip_keys.iter().map(|k| k.id).collect();
        let mut cache = self.cache.lock().expect("key plan");
        let fresh = cache
            .as_ref()
            .filter(|(at, r, _)| at.elapsed() < PLAN_TTL && *r == ring)
            .map(|(_, _, p)| p.clone());
        let p = match fresh {
            Some(p) => p,
            None => {
                let mut reports = self.reports.lock().expect("key reports");
                // Removed nodes' reports go with them.
                reports.retain(|id, _| st.nodes.contains_key(id));
                let nodes = st.nodes.values().map(|n| {
                    let seen = match reports.get(&n.id) {
                        None => Seen::Unreported,
                        Some(None) => Seen::NoKeys,
                        Some(Some(r)) => Seen::Holds(*r),
                    };
                    (n.state == NodeState::Ready, seen)
                });
                let Some(p) = plan(&ring, nodes) else {
                    return (vec![], None);
                };
                *cache = Some((Instant::now(), ring, p.clone()));
                p
            }
        };
        self.last_send.store(p.send, Ordering::Relaxed);
        let keys = c
            .gossip_keys
            .iter()
            .filter(|k| p.keep.contains(&k.id))
            .cloned()
            .collect();
        (keys, Some(p.send))
    }
}

/// The leader's rotations: every `gossip_key_rotation_ms` (once the last
/// rotation reached every live node, or after twice the period), and at
/// once when a node is removed or leaves. Runs on every manager, acts only
/// while leading.
pub async fn watch(
    raft: Raft<TypeConfig>,
    state: Arc<RwLock<ClusterState>>,
    mem: Arc<LeaderMemory>,
) {
    let mut known: Option<BTreeSet<String>> = None;
    loop {
        tokio::time::sleep(TICK).await;
        let m = raft.metrics().borrow().clone();
        if !super::leads_as_voter(&m) {
            known = None;
            continue;
        }
        let (cluster, ids) = {
            let st = state.read().expect("state lock");
            let ids: BTreeSet<String> = st.nodes.keys().cloned().collect();
            (st.cluster.clone(), ids)
        };
        let Some(c) = cluster else { continue };
        let removed = known
            .as_ref()
            .is_some_and(|k| k.iter().any(|id| !ids.contains(id)));
        known = Some(ids);
        let left = mem.keys.rotate_now.swap(false, Ordering::Relaxed);
        let now = crate::clock::now_ms();
        let why = match c.gossip_keys.first() {
            None => Some("no key yet"),
            _ if removed => Some("a node was removed"),
            _ if left => Some("a node left"),
            Some(k) => {
                let age = now.saturating_sub(k.created_ms);
                let spread = mem.keys.last_send.load(Ordering::Relaxed) == k.id;
                let due = age >= c.gossip_key_rotation_ms
                    && (spread || age >= 2 * c.gossip_key_rotation_ms);
                due.then_some("scheduled")
            }
        };
        let Some(why) = why else { continue };
        let id = c.gossip_keys.first().map_or(1, |k| k.id + 1);
        let cmd = Command::GossipKeyRotate { key: new_key(id) };
        match tokio::time::timeout(Duration::from_secs(2), raft.client_write(cmd)).await {
            Ok(Ok(r)) if !matches!(r.data, CommandResult::Error(_)) => {
                info!(key_id = id, why, "gossip key rotated")
            }
            r => {
                if left {
                    mem.keys.rotate_now();
                }
                warn!(key_id = id, why, "gossip key rotation not committed: {r:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holds(newest: u32, sealing: u32) -> (bool, Seen) {
        (true, Seen::Holds(KeyReport { newest, sealing }))
    }

    fn p(send: u32, keep: &[u32]) -> Option<KeyPlan> {
        Some(KeyPlan {
            send,
            keep: keep.to_vec(),
        })
    }

    #[test]
    fn a_new_key_is_used_only_once_every_live_node_holds_it() {
        // Not every live node holds key 2 yet: keep sealing with 1.
        assert_eq!(plan(&[2, 1], [holds(2, 1), holds(1, 1)]), p(1, &[2, 1]));
        // All hold it: switch; 1 stays while anyone seals with it.
        assert_eq!(plan(&[2, 1], [holds(2, 1), holds(2, 1)]), p(2, &[2, 1]));
        assert_eq!(plan(&[2, 1], [holds(2, 2), holds(2, 1)]), p(2, &[2, 1]));
        // All switched: 1 is dropped everywhere.
        assert_eq!(plan(&[2, 1], [holds(2, 2), holds(2, 2)]), p(2, &[2]));
    }

    #[test]
    fn a_down_node_does_not_hold_a_rotation_back() {
        let down = (
            false,
            Seen::Holds(KeyReport {
                newest: 1,
                sealing: 1,
            }),
        );
        assert_eq!(
            plan(&[2, 1], [holds(2, 1), holds(2, 1), down]),
            p(2, &[2, 1])
        );
        assert_eq!(plan(&[2, 1], [holds(2, 2), holds(2, 2), down]), p(2, &[2]));
        // Nor does an unreported one that is down.
        assert_eq!(
            plan(&[2, 1], [holds(2, 2), (false, Seen::Unreported)]),
            p(2, &[2])
        );
    }

    #[test]
    fn a_node_without_keys_takes_the_ring_and_holds_nothing_back() {
        assert_eq!(
            plan(&[2, 1], [holds(2, 2), (true, Seen::NoKeys)]),
            p(2, &[2])
        );
        assert_eq!(plan(&[1], [(true, Seen::NoKeys)]), p(1, &[1]));
        assert_eq!(plan(&[], [holds(1, 1)]), None);
    }

    #[test]
    fn a_new_leader_moves_nothing_until_every_live_node_reported() {
        // Mid-switch when the old leader died: nothing is dropped, and
        // nodes keep sealing with what every one of them holds.
        assert_eq!(
            plan(
                &[2, 1],
                [holds(2, 2), holds(2, 1), (true, Seen::Unreported)]
            ),
            p(1, &[2, 1])
        );
        assert_eq!(plan(&[2, 1], [(true, Seen::Unreported)]), p(2, &[2, 1]));
    }

    #[test]
    fn the_replicated_ring_keeps_three_newest_first_and_ids_only_grow() {
        use crate::wire::{ClusterInfo, Command, CommandResult};
        let mut st = ClusterState {
            cluster: Some(ClusterInfo::for_tests(vec![new_key(1)])),
            ..Default::default()
        };
        for id in 2..=5 {
            let (r, ch) = st.apply(id as u64, Command::GossipKeyRotate { key: new_key(id) });
            assert_eq!((r, ch.len()), (CommandResult::Ok, 1));
        }
        let ids = |st: &ClusterState| -> Vec<u32> {
            st.cluster
                .as_ref()
                .unwrap()
                .gossip_keys
                .iter()
                .map(|k| k.id)
                .collect()
        };
        assert_eq!(ids(&st), [5, 4, 3]);
        // A second leader's late rotation to the same id changes nothing.
        let (r, ch) = st.apply(9, Command::GossipKeyRotate { key: new_key(5) });
        assert!(matches!(r, CommandResult::Error(_)) && ch.is_empty());
        assert_eq!(ids(&st), [5, 4, 3]);
        // Every key is different, and none shows in Debug output.
        let keys = &st.cluster.as_ref().unwrap().gossip_keys;
        assert!(keys[0].key != keys[1].key && keys[1].key != keys[2].key);
        assert!(!format!("{st:?}").contains(&format!("{:?}", keys[0].key.0)));
    }

    #[test]
    fn keys_older_than_the_ring_clamp_to_its_oldest() {
        // Three rotations in a row (three removals): ring 4,3,2; a node
        // still at 1 is moved to the oldest key it will be sent.
        assert_eq!(
            plan(&[4, 3, 2], [holds(1, 1), holds(4, 1)]),
            p(2, &[4, 3, 2])
        );
        assert_eq!(plan(&[4, 3, 2], [holds(3, 3), holds(4, 3)]), p(3, &[4, 3]));
    }
}

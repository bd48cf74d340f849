//! Endpoint gossip scoped per network: one chitchat instance per network
//! this node is on, among the nodes on it, as Docker's NetworkDB gossips a
//! network's table only among the nodes with endpoints there.
//!
//! Cluster membership (the node's VTEP, liveness, "leaving",
//! "restarting") stays in the membership instance, cluster-wide and small.
//! There a node also says which networks it is on, one key per network:
//! `net:VNI` -> the generation of its instance for that network. A node on
//! a network reads another node's entries on it only from the instance
//! generation that node lists, and only while membership keeps the node:
//! leaving a network (one key deleted) or dying (convicted, or "leaving")
//! takes its entries out of every network at once, everywhere.
//!
//! An instance's generation is new for every join, so a node that leaves
//! and comes back starts its versions afresh under a new identity (chitchat
//! keeps a node's versions per generation, and nobody would take a
//! restarted count from an old one). A node joining a network asks the
//! nodes that membership lists on it for their state (`prod`), so it has
//! the network's table within a round or two instead of waiting to be
//! picked at random.
//!
//! Why several chitchat instances and not a scoped replication written
//! here: chitchat's scuttlebutt (digests, deltas, versions, tombstones,
//! its wire format) is the part worth not writing twice, and an instance
//! per network is exactly scoped replication; what is written here is
//! only which instances run and whose state counts (docs/gossip.md).

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::sealed::{Hub, SealedTransport};

/// Membership key saying a node is on a network: `net:VNI` -> the
/// generation of its instance for that network.
pub const NET_PREFIX: &str = "net:";

pub fn net_key(vni: u32) -> String {
    format!("{NET_PREFIX}{vni}")
}

/// (VNI, instance generation) of a `net:` key.
pub fn parse_net_key(k: &str, v: &str) -> Option<(u32, u64)> {
    let vni: u32 = k.strip_prefix(NET_PREFIX)?.parse().ok()?;
    if vni == 0 || vni > 0xff_ffff {
        return None;
    }
    Some((vni, v.parse().ok()?))
}

/// How long the state of a node gone from a network (left it, restarted,
/// died) is kept in that network's instance: membership decides whose
/// state counts, so this only bounds memory. Long enough that chitchat
/// does not take it back from a peer that still has it.
const GONE_GRACE: Duration = Duration::from_secs(300);

/// What every network instance of the node shares.
#[derive(Clone)]
pub(super) struct Template {
    pub node: String,
    pub advertise: SocketAddr,
    pub listen: SocketAddr,
    pub cluster_id: String,
    pub interval: Duration,
    pub phi_threshold: f64,
    pub hub: Arc<Hub>,
    /// Bumped on every change of any instance (the agent reprograms).
    pub changes: Arc<watch::Sender<u64>>,
}

/// This node's instance for one network.
pub(super) struct Net {
    pub handle: ChitchatHandle,
    pub generation: u64,
    /// (node, generation) asked for its state already.
    prodded: HashSet<(String, u64)>,
    watch: JoinHandle<()>,
}

impl Drop for Net {
    fn drop(&mut self) {
        self.watch.abort();
        let _ = self.handle.initiate_shutdown();
    }
}

/// A generation no earlier instance of this node used: microseconds since
/// the epoch, and never the same twice in one process.
fn next_generation() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = crate::clock::now_ms() * 1000;
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let g = now.max(last + 1);
        match LAST.compare_exchange(last, g, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return g,
            Err(l) => last = l,
        }
    }
}

impl Template {
    /// Starts this node's instance for `vni`, publishing `kv`, gossiping
    /// first with `seeds` (nodes membership lists on the network).
    pub async fn spawn(
        &self,
        vni: u32,
        seeds: &[SocketAddr],
        kv: Vec<(String, String)>,
    ) -> Result<Net> {
        let generation = next_generation();
        let config = ChitchatConfig {
            chitchat_id: ChitchatId::new(self.node.clone(), generation, self.advertise),
            cluster_id: format!("{}/net/{vni}", self.cluster_id),
            gossip_interval: self.interval,
            listen_addr: self.listen,
            seed_nodes: seeds.iter().map(|s| s.to_string()).collect(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: self.phi_threshold,
                initial_interval: self.interval,
                dead_node_grace_period: GONE_GRACE,
                // Liveness here only steers whom chitchat gossips with
                // (membership decides whose entries count): a short window
                // keeps 2,384 members' at 128 bytes each.
                sampling_window_size: 16,
                ..Default::default()
            },
            // Deletions (a withdrawn endpoint) must reach every node on the
            // network before their tombstones go.
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: chitchat::ProtocolVersion::V1,
        };
        let transport = SealedTransport {
            hub: self.hub.clone(),
            channel: vni,
            cluster_id: config.cluster_id.clone(),
        };
        let handle = spawn_chitchat(config, kv, &transport).await?;
        let mut w = handle.with_chitchat(|c| c.live_nodes_watcher()).await;
        let changes = self.changes.clone();
        let chitchat = handle.chitchat();
        let watch = tokio::spawn(async move {
            // chitchat's watcher also fires when a member's liveness here
            // flaps, which says nothing (membership decides who counts):
            // only a change of some state's version is passed on, so a
            // big table is not reprogrammed for nothing.
            let mut seen = 0u64;
            while w.changed().await.is_ok() {
                let now = versions(&*chitchat.lock().await);
                if now != seen {
                    seen = now;
                    changes.send_modify(|n| *n += 1);
                }
            }
        });
        Ok(Net {
            handle,
            generation,
            prodded: HashSet::new(),
            watch,
        })
    }
}

/// A fingerprint of every state's (node, generation, max version): it
/// moves when any key is set or deleted, not when liveness does.
fn versions(c: &chitchat::Chitchat) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for (id, st) in c.node_states() {
        (&*id.node_id, id.generation_id, st.max_version()).hash(&mut h);
    }
    h.finish()
}

impl Net {
    /// Asks each listed (node, generation, address) whose state this
    /// instance does not hold yet for it, once.
    pub async fn prod(&mut self, listed: &[(String, u64, SocketAddr)]) {
        let held: BTreeSet<(String, u64)> = self
            .handle
            .with_chitchat(|c| {
                c.node_states()
                    .keys()
                    .map(|id| (id.node_id.to_string(), id.generation_id))
                    .collect()
            })
            .await;
        for (node, generation, addr) in listed {
            let k = (node.clone(), *generation);
            if held.contains(&k) || !self.prodded.insert(k) {
                continue;
            }
            let _ = self.handle.gossip(*addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_keys_round_trip_and_refuse_nonsense() {
        assert_eq!(parse_net_key(&net_key(4097), "17"), Some((4097, 17)));
        for (k, v) in [
            ("net:0", "1"),
            ("net:16777216", "1"),
            ("net:x", "1"),
            ("net:4097", "-1"),
            ("vtep", "1"),
        ] {
            assert_eq!(parse_net_key(k, v), None, "{k}={v}");
        }
    }

    #[test]
    fn every_join_gets_a_new_generation() {
        let a = next_generation();
        let b = next_generation();
        assert!(b > a);
        assert!(a >= crate::clock::now_ms() * 1000 - 10_000_000);
    }
}

#[cfg(test)]
#[path = "networks_tests.rs"]
mod scoped_tests;

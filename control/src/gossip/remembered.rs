//! The members this node last gossiped with, kept on disk so a restarted
//! daemon finds the swarm with no `--join` seed.
//!
//! A swarm's only manager has none (its managers list is itself), and a
//! restart slower than the failure detector leaves its peers with nothing
//! to probe: SWIM addresses a member by process, so they keep probing the
//! old one, which the new process ignores, declare it down and forget it.
//! Nobody would ever ask the new one in. Serf keeps such a snapshot for
//! the same reason; here it is only addresses, written when the set of
//! live members changes (at most every `SAVE_EVERY`), never emptied by a
//! node that lost every peer (the last peers it had are the ones to ask).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::seq::IteratorRandom;
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

/// The file's shape.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct PeersFile {
    peers: BTreeSet<Ipv4Addr>,
}

/// The least time between two writes (a Swarm2000 cluster's members come
/// and go all the time; each write is about 17 bytes a member).
pub const SAVE_EVERY: Duration = Duration::from_secs(5);

/// How many remembered members a lone node asks at a time (all of a
/// 2,000-node swarm every second would be a flood).
pub const ASK_AT_ONCE: usize = 8;

pub struct Remembered {
    path: Option<PathBuf>,
    peers: BTreeSet<Ipv4Addr>,
    saved_at: Option<Instant>,
    /// Membership's change count when the live members were last read
    /// (a 2,000-member set is not rebuilt every round for nothing).
    looked_at: Option<u64>,
}

impl Remembered {
    /// What `path` holds (nothing without a path, or for a file that is
    /// missing or not ours: this node then finds peers as before).
    pub fn load(path: Option<PathBuf>) -> Self {
        let peers = path.as_deref().map(read).unwrap_or_default();
        Remembered {
            path,
            peers,
            saved_at: None,
            looked_at: None,
        }
    }

    /// Up to `ASK_AT_ONCE` remembered members, drawn anew each call.
    pub fn sample(&self) -> Vec<Ipv4Addr> {
        self.peers
            .iter()
            .copied()
            .choose_multiple(&mut rand::rng(), ASK_AT_ONCE)
    }

    /// The bytes to write for the live members, if they should be written
    /// now: membership moved (`changes`), `SAVE_EVERY` since the last
    /// write, and `live()` is a new set, not empty.
    pub fn due(
        &mut self,
        changes: u64,
        live: impl FnOnce() -> BTreeSet<Ipv4Addr>,
        now: Instant,
    ) -> Option<(PathBuf, Vec<u8>)> {
        let path = self.path.clone()?;
        if self.looked_at == Some(changes)
            || self
                .saved_at
                .is_some_and(|at| now.duration_since(at) < SAVE_EVERY)
        {
            return None;
        }
        self.looked_at = Some(changes);
        let live = live();
        if live.is_empty() || live == self.peers {
            return None;
        }
        self.saved_at = Some(now);
        self.peers = live;
        let f = PeersFile {
            peers: self.peers.clone(),
        };
        Some((path, serde_json::to_vec(&f).expect("addresses serialise")))
    }
}

fn read(path: &Path) -> BTreeSet<Ipv4Addr> {
    match std::fs::read(path) {
        Ok(b) => match serde_json::from_slice::<PeersFile>(&b) {
            Ok(f) => f.peers,
            Err(e) => {
                warn!(path = %path.display(), "remembered gossip peers unreadable, ignored: {e}");
                BTreeSet::new()
            }
        },
        Err(e) => {
            debug!(path = %path.display(), "no remembered gossip peers: {e}");
            BTreeSet::new()
        }
    }
}

/// Writes `bytes` whole or not at all (a crash mid-write leaves the last
/// good list); a failure only costs the next restart its hint.
pub fn write(path: &Path, bytes: &[u8]) {
    if let Err(e) = crate::files::write_atomic(path, bytes) {
        warn!("cannot remember the gossip peers: {e:#}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ips: &[[u8; 4]]) -> BTreeSet<Ipv4Addr> {
        ips.iter().map(|&a| Ipv4Addr::from(a)).collect()
    }

    #[test]
    fn saves_changes_at_most_every_few_seconds_and_never_an_empty_list() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gossip-peers.json");
        let mut r = Remembered::load(Some(path.clone()));
        assert!(r.sample().is_empty(), "nothing on disk yet");
        let two = || set(&[[198, 18, 0, 2], [198, 18, 0, 3]]);
        let t0 = Instant::now();
        let (p, bytes) = r.due(1, two, t0).unwrap();
        write(&p, &bytes);
        // Too soon, membership unchanged, the same set, or nobody live:
        // nothing written.
        let soon = t0 + Duration::from_secs(1);
        assert!(r.due(2, || set(&[[198, 18, 0, 2]]), soon).is_none());
        let later = t0 + SAVE_EVERY;
        assert!(r.due(2, two, later).is_none());
        assert!(r.due(2, || set(&[[198, 18, 0, 4]]), later).is_none());
        assert!(r.due(3, BTreeSet::new, later).is_none());
        // A restart reads what was written.
        let again = Remembered::load(Some(path.clone()));
        assert_eq!(again.peers, two());
        let (_, bytes) = r.due(4, || set(&[[198, 18, 0, 4]]), later).unwrap();
        write(&path, &bytes);
        assert_eq!(
            Remembered::load(Some(path)).sample(),
            [Ipv4Addr::new(198, 18, 0, 4)]
        );
    }

    #[test]
    fn a_garbled_file_is_ignored_and_a_big_list_is_sampled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gossip-peers.json");
        std::fs::write(&path, b"{\"peers\": [\"not an address\"]}").unwrap();
        assert!(Remembered::load(Some(path.clone())).sample().is_empty());
        std::fs::write(&path, b"\xff\x00").unwrap();
        assert!(Remembered::load(Some(path.clone())).sample().is_empty());
        let many: BTreeSet<Ipv4Addr> = (0..2000u32)
            .map(|i| Ipv4Addr::from(0xC612_0000 + i))
            .collect();
        let mut r = Remembered::load(Some(path.clone()));
        let (_, bytes) = r.due(1, || many.clone(), Instant::now()).unwrap();
        write(&path, &bytes);
        let s = Remembered::load(Some(path)).sample();
        assert_eq!(s.len(), ASK_AT_ONCE);
        assert!(s.iter().all(|a| many.contains(a)));
        assert!(Remembered::load(None)
            .due(1, || many, Instant::now())
            .is_none());
    }
}

//! The gossip keys a node holds, and where they come from: the swarm's
//! managers (in session replies, kept on disk so a restarted node gossips
//! at once), else `--gossip-key-file` (one key, id 0), else nothing (the
//! node sends nothing and refuses everything) unless `--insecure-gossip`
//! (plaintext, as before sealing existed).
//!
//! The transport reads the current state on every datagram, so it is an
//! immutable snapshot swapped whole (arc-swap) when the keys change.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use super::seal::ClusterKey;
use crate::wire::{GossipKey, GossipKeysView, KeyReport};

/// Where the keys in use come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    None,
    Insecure,
    File,
    Swarm,
}

/// One snapshot of what the transport seals and opens with.
#[derive(Debug)]
pub struct KeyState {
    pub source: Source,
    /// Newest first; any of them opens a datagram.
    pub ring: Vec<ClusterKey>,
    /// The key id to seal with.
    pub sealing: Option<u32>,
}

impl KeyState {
    /// The key to seal with (None: plaintext if insecure, else nothing).
    pub fn seal_key(&self) -> Option<&ClusterKey> {
        self.ring
            .iter()
            .find(|k| Some(k.id) == self.sealing)
            .or(self.ring.first())
    }

    pub fn view(&self) -> GossipKeysView {
        GossipKeysView {
            source: match self.source {
                Source::None => "none",
                Source::Insecure => "insecure",
                Source::File => "file",
                Source::Swarm => "swarm",
            }
            .into(),
            ring: self.ring.iter().map(|k| k.id).collect(),
            sealing: self.seal_key().map(|k| k.id),
        }
    }
}

/// The swarm's keys as a node keeps them (DATA_DIR/gossip-keys.json, 0600).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmKeys {
    /// Newest first.
    pub keys: Vec<GossipKey>,
    pub send: Option<u32>,
}

impl SwarmKeys {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("gossip-keys.json")
    }

    /// What a previous run kept (None: nothing, or unreadable: the next
    /// session reply brings the keys again).
    pub fn load(data_dir: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(Self::path(data_dir)).ok()?;
        match serde_json::from_str(&text) {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::warn!("ignoring corrupt {}: {e}", Self::path(data_dir).display());
                None
            }
        }
    }

    pub fn save(&self, data_dir: &Path) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = Self::path(data_dir);
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec(self).expect("keys serialise"))?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    }

    pub fn remove(data_dir: &Path) {
        let _ = std::fs::remove_file(Self::path(data_dir));
    }
}

/// A bad `--gossip-key-file`.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read gossip key file {0}: {1}")]
    Read(String, std::io::Error),
    #[error("gossip key file {0}: want 32 bytes as 64 hex digits or base64")]
    Format(String),
}

/// A key file's key: 32 bytes as hex or base64 (whitespace around ignored).
pub fn parse_key(text: &str) -> Option<[u8; 32]> {
    use base64::Engine;
    let t = text.trim();
    if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        // Two hex digits per byte; no crate for 64 characters.
        let mut k = [0u8; 32];
        for (i, b) in k.iter_mut().enumerate() {
            *b = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).ok()?;
        }
        return Some(k);
    }
    base64::engine::general_purpose::STANDARD
        .decode(t)
        .ok()?
        .try_into()
        .ok()
}

pub fn read_key_file(path: &Path) -> Result<[u8; 32], KeyFileError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| KeyFileError::Read(name.clone(), e))?;
    parse_key(&text).ok_or(KeyFileError::Format(name))
}

/// A node's gossip keys: the current snapshot and what it is made from.
#[derive(Debug)]
pub struct GossipKeys {
    current: ArcSwap<KeyState>,
    insecure: bool,
    file: Option<[u8; 32]>,
    swarm: Mutex<Option<SwarmKeys>>,
}

impl GossipKeys {
    pub fn new(insecure: bool, file: Option<[u8; 32]>, swarm: Option<SwarmKeys>) -> Self {
        let k = Self {
            current: ArcSwap::from_pointee(KeyState {
                source: Source::None,
                ring: vec![],
                sealing: None,
            }),
            insecure,
            file,
            swarm: Mutex::new(swarm.filter(|s| !s.keys.is_empty())),
        };
        k.rebuild();
        k
    }

    pub fn current(&self) -> Arc<KeyState> {
        self.current.load_full()
    }

    fn rebuild(&self) {
        let swarm = self.swarm.lock().expect("keys lock");
        let st = match (&*swarm, &self.file) {
            (Some(s), _) => KeyState {
                source: Source::Swarm,
                ring: s
                    .keys
                    .iter()
                    .map(|k| ClusterKey::new(k.id, &k.key.0))
                    .collect(),
                sealing: s.send,
            },
            (None, Some(f)) => KeyState {
                source: Source::File,
                ring: vec![ClusterKey::new(0, f)],
                sealing: Some(0),
            },
            (None, None) => KeyState {
                source: if self.insecure {
                    Source::Insecure
                } else {
                    Source::None
                },
                ring: vec![],
                sealing: None,
            },
        };
        self.current.store(Arc::new(st));
    }

    /// Adopts the keys of a session reply; returns what to persist when
    /// they changed. An empty ring (a leader that has none) changes nothing.
    pub fn set_swarm(&self, keys: Vec<GossipKey>, send: Option<u32>) -> Option<SwarmKeys> {
        if keys.is_empty() {
            return None;
        }
        let new = SwarmKeys { keys, send };
        {
            let mut s = self.swarm.lock().expect("keys lock");
            if s.as_ref() == Some(&new) {
                return None;
            }
            *s = Some(new.clone());
        }
        self.rebuild();
        Some(new)
    }

    /// The swarm's keys as held (None: outside a swarm).
    pub fn swarm(&self) -> Option<SwarmKeys> {
        self.swarm.lock().expect("keys lock").clone()
    }

    /// Leaving the swarm: back to the key file, plaintext or nothing.
    pub fn clear_swarm(&self) {
        *self.swarm.lock().expect("keys lock") = None;
        self.rebuild();
    }

    /// What the heartbeat tells the leader (None: no swarm keys held).
    pub fn report(&self) -> Option<KeyReport> {
        let s = self.swarm.lock().expect("keys lock");
        let s = s.as_ref()?;
        let newest = s.keys.iter().map(|k| k.id).max()?;
        let sealing = s
            .send
            .filter(|id| s.keys.iter().any(|k| k.id == *id))
            .unwrap_or(s.keys[0].id);
        Some(KeyReport { newest, sealing })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::KeyBytes;

    fn gk(id: u32) -> GossipKey {
        GossipKey {
            id,
            key: KeyBytes([id as u8; 32]),
            created_ms: 0,
        }
    }

    #[test]
    fn key_files_take_hex_or_base64_of_32_bytes() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF\n";
        let k = parse_key(hex).unwrap();
        assert_eq!((k[0], k[1], k[31]), (0x00, 0x11, 0xff));
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert_eq!(parse_key(&format!("  {b64}\n")), Some([7u8; 32]));
        for bad in ["", "abc", &hex[..62], &"zz".repeat(32), "AAAA"] {
            assert_eq!(parse_key(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn swarm_keys_win_over_the_file_and_leaving_falls_back() {
        let k = GossipKeys::new(false, Some([1; 32]), None);
        assert_eq!(k.current().view().source, "file");
        assert_eq!(k.current().view().sealing, Some(0));
        assert_eq!(k.report(), None);
        let saved = k.set_swarm(vec![gk(3), gk(2)], Some(2));
        assert!(saved.is_some());
        assert!(k.set_swarm(vec![gk(3), gk(2)], Some(2)).is_none(), "same");
        let v = k.current().view();
        assert_eq!(
            (v.source.as_str(), v.ring, v.sealing),
            ("swarm", vec![3, 2], Some(2))
        );
        assert_eq!(
            k.report(),
            Some(KeyReport {
                newest: 3,
                sealing: 2
            })
        );
        assert!(k.set_swarm(vec![], Some(9)).is_none(), "empty ring ignored");
        k.clear_swarm();
        assert_eq!(k.current().view().source, "file");
        let none = GossipKeys::new(false, None, None);
        assert_eq!(none.current().view().source, "none");
        assert!(none.current().seal_key().is_none());
        let plain = GossipKeys::new(true, None, None);
        assert_eq!(plain.current().view().source, "insecure");
    }

    #[test]
    fn the_ring_survives_a_restart_on_disk_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let s = SwarmKeys {
            keys: vec![gk(2), gk(1)],
            send: Some(1),
        };
        s.save(dir.path()).unwrap();
        let mode = std::fs::metadata(SwarmKeys::path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(SwarmKeys::load(dir.path()), Some(s.clone()));
        let k = GossipKeys::new(false, None, SwarmKeys::load(dir.path()));
        assert_eq!(k.current().view().ring, vec![2, 1]);
        // The key itself is base64 in the file, not in any Debug output.
        assert!(!format!("{s:?}").contains("AgICAg"));
        SwarmKeys::remove(dir.path());
        assert_eq!(SwarmKeys::load(dir.path()), None);
    }
}

//! Sealed gossip datagrams: AES-256-GCM (ring) under a cluster gossip key.
//!
//! A sealed datagram is a clear header, then the gossip message (or a
//! fragment of it) encrypted, then the 16-byte tag; the header is the AAD, so none of it
//! can be changed either:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | magic and version, `0xC6` |
//! | 4 | key id (big endian) |
//! | 4 | channel: 0 for membership (SWIM), `u32::MAX` for the network tables (`netdb`) |
//! | 16 | sender id: random, chosen once per daemon process |
//! | 8 | counter: per sender, +1 per datagram; the nonce |
//! | 4 | message id (fragments of one message share it) |
//! | 1 + 1 | fragment index, fragment count |
//!
//! Nonces never repeat for a key: each sender seals with its own subkey,
//! HKDF-SHA256(cluster key, info = sender id), and the nonce is its
//! counter, which only grows within the process; a new process draws a new
//! sender id (2^-128 to meet an old one), so it gets a new subkey and may
//! start counting again. Receivers keep a 64-wide sliding window per
//! sender id (the last `MAX_SENDERS` senders, LRU), which refuses replays
//! and accepts reordering inside the window.
//!
//! A table delta can be up to 240 KB, more than UDP carries (65,507
//! bytes): a message that does not fit one datagram is split into
//! sealed fragments, which the receiver reassembles (at most
//! `MAX_PENDING` messages in flight, each for `REASSEMBLY_TTL`).

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lru::LruCache;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hkdf;

/// First byte of a sealed datagram (format version 2: version 1, 0xC5,
/// had no channel).
pub const MAGIC: u8 = 0xC6;
pub const HEADER_LEN: usize = 1 + 4 + 4 + 16 + 8 + 4 + 1 + 1;
pub const TAG_LEN: usize = 16;
/// What sealing adds to each datagram.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// The largest UDP payload over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;
pub const MAX_FRAGMENT_PLAINTEXT: usize = MAX_DATAGRAM - OVERHEAD;
/// The largest table message (`netdb::MAX_MESSAGE`) takes 4; more is
/// never sent.
pub const MAX_FRAGMENTS: u8 = 4;
pub const REPLAY_WINDOW: u64 = 64;
/// Senders whose replay window is kept (processes seen, LRU).
pub const MAX_SENDERS: usize = 4096;
/// Fragmented messages being reassembled at once.
pub const MAX_PENDING: usize = 32;
pub const REASSEMBLY_TTL: Duration = Duration::from_secs(2);
/// HKDF salt: binds the subkeys to this use of the cluster key.
const SALT: &[u8] = b"shoal gossip v1";

/// Why a datagram was refused (the counters' `reason` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// This node holds no key.
    NoKey,
    /// The key id is not in this node's ring.
    UnknownKey,
    /// Forged, corrupt or sealed under another key with the same id.
    OpenFailed,
    /// Counter seen already, or older than the window.
    Replay,
    /// Too short, bad magic, bad fragment fields.
    Malformed,
}

impl Refusal {
    pub const ALL: [Refusal; 5] = [
        Refusal::NoKey,
        Refusal::UnknownKey,
        Refusal::OpenFailed,
        Refusal::Replay,
        Refusal::Malformed,
    ];

    pub fn reason(self) -> &'static str {
        match self {
            Refusal::NoKey => "no_key",
            Refusal::UnknownKey => "unknown_key",
            Refusal::OpenFailed => "open_failed",
            Refusal::Replay => "replay",
            Refusal::Malformed => "malformed",
        }
    }
}

/// A cluster key with HKDF's extract step done once.
#[derive(Clone)]
pub struct ClusterKey {
    pub id: u32,
    prk: hkdf::Prk,
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterKey({})", self.id)
    }
}

impl ClusterKey {
    pub fn new(id: u32, secret: &[u8; 32]) -> Self {
        Self {
            id,
            prk: hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(secret),
        }
    }

    /// The sender's own key: a few microseconds, so not cached.
    fn subkey(&self, sender: &[u8; 16]) -> LessSafeKey {
        let info = [&sender[..]];
        let okm = self
            .prk
            .expand(&info, &AES_256_GCM)
            .expect("32 bytes is a valid HKDF-SHA256 length");
        LessSafeKey::new(UnboundKey::from(okm))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub key_id: u32,
    pub channel: u32,
    pub sender: [u8; 16],
    pub counter: u64,
    pub msg_id: u32,
    pub frag: u8,
    pub frags: u8,
}

impl Header {
    fn write(&self, out: &mut Vec<u8>) {
        out.push(MAGIC);
        out.extend_from_slice(&self.key_id.to_be_bytes());
        out.extend_from_slice(&self.channel.to_be_bytes());
        out.extend_from_slice(&self.sender);
        out.extend_from_slice(&self.counter.to_be_bytes());
        out.extend_from_slice(&self.msg_id.to_be_bytes());
        out.push(self.frag);
        out.push(self.frags);
    }

    /// The header of a sealed datagram, checked for what can be checked
    /// before opening it.
    pub fn parse(d: &[u8]) -> Result<Header, Refusal> {
        if d.len() < OVERHEAD || d[0] != MAGIC {
            return Err(Refusal::Malformed);
        }
        let h = Header {
            key_id: u32::from_be_bytes(d[1..5].try_into().expect("4 bytes")),
            channel: u32::from_be_bytes(d[5..9].try_into().expect("4 bytes")),
            sender: d[9..25].try_into().expect("16 bytes"),
            counter: u64::from_be_bytes(d[25..33].try_into().expect("8 bytes")),
            msg_id: u32::from_be_bytes(d[33..37].try_into().expect("4 bytes")),
            frag: d[37],
            frags: d[38],
        };
        if h.frags == 0 || h.frags > MAX_FRAGMENTS || h.frag >= h.frags || h.counter == 0 {
            return Err(Refusal::Malformed);
        }
        Ok(h)
    }
}

/// Bytes from the OS's random source (ring's, as rustls uses).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom;
    let mut b = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("the OS random source");
    b
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

#[derive(Debug, thiserror::Error)]
#[error("a gossip message of {0} bytes does not fit {MAX_FRAGMENTS} sealed datagrams")]
pub struct TooLarge(pub usize);

/// The sending side: one per daemon process.
pub struct Sealer {
    sender: [u8; 16],
    counter: AtomicU64,
    msg_id: AtomicU32,
}

impl Default for Sealer {
    fn default() -> Self {
        Self::new()
    }
}

impl Sealer {
    pub fn new() -> Self {
        let sender = random_bytes::<16>();
        Self {
            sender,
            counter: AtomicU64::new(1),
            msg_id: AtomicU32::new(0),
        }
    }

    #[cfg(test)]
    pub fn sender(&self) -> [u8; 16] {
        self.sender
    }

    /// Seals `plaintext` for `channel` as one datagram, or as fragments
    /// when it would not fit one.
    pub fn seal(
        &self,
        key: &ClusterKey,
        channel: u32,
        plaintext: &[u8],
    ) -> Result<Vec<Vec<u8>>, TooLarge> {
        let chunks: Vec<&[u8]> = if plaintext.is_empty() {
            vec![plaintext]
        } else {
            plaintext.chunks(MAX_FRAGMENT_PLAINTEXT).collect()
        };
        if chunks.len() > MAX_FRAGMENTS as usize {
            return Err(TooLarge(plaintext.len()));
        }
        let sk = key.subkey(&self.sender);
        let msg_id = self.msg_id.fetch_add(1, Ordering::Relaxed);
        let frags = chunks.len() as u8;
        let mut out = Vec::with_capacity(chunks.len());
        for (i, chunk) in chunks.into_iter().enumerate() {
            let h = Header {
                key_id: key.id,
                channel,
                sender: self.sender,
                counter: self.counter.fetch_add(1, Ordering::Relaxed),
                msg_id,
                frag: i as u8,
                frags,
            };
            let mut d = Vec::with_capacity(chunk.len() + OVERHEAD);
            h.write(&mut d);
            d.extend_from_slice(chunk);
            let (aad, body) = d.split_at_mut(HEADER_LEN);
            let tag = sk
                .seal_in_place_separate_tag(nonce(h.counter), Aad::from(&*aad), body)
                .expect("AES-GCM seals any datagram-sized input");
            d.extend_from_slice(tag.as_ref());
            out.push(d);
        }
        Ok(out)
    }
}

/// A sender's sliding window: the highest counter opened, and which of
/// the 63 below it were.
#[derive(Clone, Copy, Debug, Default)]
struct Window {
    top: u64,
    seen: u64,
}

impl Window {
    fn fresh(&self, c: u64) -> bool {
        if c > self.top {
            return true;
        }
        let d = self.top - c;
        d < REPLAY_WINDOW && self.seen & (1 << d) == 0
    }

    fn commit(&mut self, c: u64) {
        if c > self.top {
            let shift = c - self.top;
            self.seen = if shift >= REPLAY_WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.top = c;
        } else {
            self.seen |= 1 << (self.top - c);
        }
    }
}

struct Pending {
    first: Instant,
    channel: u32,
    parts: Vec<Option<Vec<u8>>>,
}

/// The receiving side: replay windows and reassembly. Owned by the one
/// task that reads the gossip socket.
pub struct Opener {
    windows: LruCache<[u8; 16], Window>,
    pending: HashMap<([u8; 16], u32), Pending>,
    /// Fragmented messages dropped incomplete (expired or evicted).
    pub expired: u64,
}

impl Default for Opener {
    fn default() -> Self {
        Self::new()
    }
}

impl Opener {
    pub fn new() -> Self {
        Self {
            windows: LruCache::new(NonZeroUsize::new(MAX_SENDERS).expect("non-zero")),
            pending: HashMap::new(),
            expired: 0,
        }
    }

    /// Opens a sealed datagram with a key of `ring`: the whole message and
    /// its channel, None while fragments are missing, or why it was refused.
    pub fn open(
        &mut self,
        ring: &[ClusterKey],
        d: &[u8],
        now: Instant,
    ) -> Result<Option<(u32, Vec<u8>)>, Refusal> {
        let h = Header::parse(d)?;
        if ring.is_empty() {
            return Err(Refusal::NoKey);
        }
        let key = ring
            .iter()
            .find(|k| k.id == h.key_id)
            .ok_or(Refusal::UnknownKey)?;
        // Checked before opening (cheap), committed only after (a forgery
        // must not move the window).
        if !self
            .windows
            .peek(&h.sender)
            .is_none_or(|w| w.fresh(h.counter))
        {
            return Err(Refusal::Replay);
        }
        let mut body = d[HEADER_LEN..].to_vec();
        let plain_len = key
            .subkey(&h.sender)
            .open_in_place(nonce(h.counter), Aad::from(&d[..HEADER_LEN]), &mut body)
            .map_err(|_| Refusal::OpenFailed)?
            .len();
        body.truncate(plain_len);
        self.windows
            .get_or_insert_mut(h.sender, Window::default)
            .commit(h.counter);
        if h.frags == 1 {
            return Ok(Some((h.channel, body)));
        }
        Ok(self.reassemble(h, body, now).map(|m| (h.channel, m)))
    }

    fn reassemble(&mut self, h: Header, part: Vec<u8>, now: Instant) -> Option<Vec<u8>> {
        let before = self.pending.len();
        self.pending
            .retain(|_, p| now.duration_since(p.first) < REASSEMBLY_TTL);
        self.expired += (before - self.pending.len()) as u64;
        let id = (h.sender, h.msg_id);
        if !self.pending.contains_key(&id) && self.pending.len() >= MAX_PENDING {
            if let Some(oldest) = self
                .pending
                .iter()
                .min_by_key(|(_, p)| p.first)
                .map(|(k, _)| *k)
            {
                self.pending.remove(&oldest);
                self.expired += 1;
            }
        }
        let p = self.pending.entry(id).or_insert_with(|| Pending {
            first: now,
            channel: h.channel,
            parts: vec![None; h.frags as usize],
        });
        if p.parts.len() != h.frags as usize || p.channel != h.channel {
            // Only a confused sender gets here (the header is sealed).
            self.pending.remove(&id);
            return None;
        }
        p.parts[h.frag as usize] = Some(part);
        if p.parts.iter().any(Option::is_none) {
            return None;
        }
        let p = self.pending.remove(&id)?;
        Some(p.parts.into_iter().flatten().flatten().collect())
    }

    /// Messages waiting for fragments.
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
#[path = "seal_tests.rs"]
mod tests;

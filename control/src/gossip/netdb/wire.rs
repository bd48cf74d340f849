//! The messages of the per-network table gossip, in postcard (varints, no
//! field names: a record costs its value plus about a dozen bytes).

use serde::{Deserialize, Serialize};

use super::origin::{Origin, WireRec};

/// The largest message accepted: four sealed datagrams.
pub const MAX_MESSAGE: usize = 4 * 65_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// New changes, pushed to a few random members each round and passed
    /// on by whoever had not seen them (infection-style dissemination).
    Rumors { vni: u32, updates: Vec<Update> },
    /// Anti-entropy, one random member per round: the sender's bucket
    /// hashes of (origin, watermark). Equal hashes end the exchange.
    Sync { vni: u32, buckets: Vec<u64> },
    /// The (origin, watermark) pairs of the buckets whose hashes differed.
    /// `reply`: this answers a digest, so send deltas and no digest back.
    Digest {
        vni: u32,
        reply: bool,
        nb: u16,
        buckets: Vec<u16>,
        entries: Vec<(Origin, u64)>,
    },
    /// What the receiver's digest showed it lacks.
    Delta { vni: u32, origins: Vec<OriginDelta> },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    pub origin: Origin,
    pub rec: WireRec,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginDelta {
    pub origin: Origin,
    /// The receiver was below the origin's collected tombstones: these are
    /// the whole live set, replacing what it held.
    pub reset: bool,
    pub gc_floor: u64,
    /// Once applied, the receiver has every change up to this version.
    pub upto: u64,
    pub recs: Vec<WireRec>,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("a table gossip message of {0} bytes exceeds {MAX_MESSAGE}")]
    TooLarge(usize),
    #[error("malformed table gossip message: {0}")]
    Malformed(#[from] postcard::Error),
}

impl Msg {
    pub fn vni(&self) -> u32 {
        match self {
            Msg::Rumors { vni, .. }
            | Msg::Sync { vni, .. }
            | Msg::Digest { vni, .. }
            | Msg::Delta { vni, .. } => *vni,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain owned data into a Vec cannot fail.
        postcard::to_allocvec(self).expect("postcard into a Vec")
    }

    pub fn decode(bytes: &[u8]) -> Result<Msg, WireError> {
        if bytes.len() > MAX_MESSAGE {
            return Err(WireError::TooLarge(bytes.len()));
        }
        Ok(postcard::from_bytes(bytes)?)
    }
}

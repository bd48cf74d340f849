//! The manager core: a Raft log (openraft 0.9, storage-v2) stored in redb,
//! whose state machine is the cluster's desired state (`state.rs`).
//!
//! - `state.rs`: the state and the pure `apply` (the records' and the
//!   commands' shapes are in `crate::wire`).
//! - `store.rs`: log and state machine in redb (openraft's conformance
//!   suite passes on it).
//! - `manager.rs`: one manager; `leader_op` is the door for every change.
//! - `rpc_client.rs` / `rpc_server.rs`: Raft RPCs, client and server, on
//!   the control port's mutual TLS (`crate::control_port`).
//! - `leader.rs`: what the leader does with each `LeaderOp`.
//! - `liveness.rs`: the leader marks silent nodes down.
//! - `gossip_keys.rs`: the gossip key ring, its rotation, and which keys
//!   each node is sent.
//! - `policy.rs`: who may call what on the control port.
//! - `networks.rs`, `services.rs`, `tasks.rs`, `updates.rs`: the
//!   what applying each kind of command does, and allocation.
//! - `attachments.rs`: containers (CNI, the Docker driver) on attachable
//!   networks, with addresses from the same allocator.
//! - `mesh.rs`: the routing mesh each node is sent, derived from the state.

pub mod attachments;
pub mod ca_rotation;
pub mod gossip_hint;
pub mod gossip_keys;
pub mod lb_addrs;
pub mod leader;
pub mod liveness;
pub mod manager;
pub mod mesh;
pub mod networks;
pub mod policy;
pub mod rpc_client;
pub mod rpc_server;
pub mod services;
pub mod state;
pub mod store;
pub mod tasks;
pub mod updates;

use std::io::Cursor;

use crate::wire::{Command, CommandResult, RaftId};

openraft::declare_raft_types!(
    /// Shoal's Raft types: commands in, results out, managers addressed by
    /// their control address (`IP:2377`).
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = RaftId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// Whether this manager leads and is still a voter (openraft 0.9 lets a
/// leader that removed itself linger): the leader's own loops run only then.
pub fn leads_as_voter(m: &openraft::RaftMetrics<RaftId, openraft::BasicNode>) -> bool {
    m.current_leader == Some(m.id)
        && m.membership_config
            .membership()
            .voter_ids()
            .any(|v| v == m.id)
}

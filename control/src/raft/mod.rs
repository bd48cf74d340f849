//! The manager core: a Raft log (openraft 0.9, storage-v2) stored in redb,
//! whose state machine is the cluster's desired state (`state.rs`).
//!
//! In progress (issue 4): the store and state machine pass openraft's
//! conformance suite; managers replicate, fail over and recover over plain
//! HTTP between them (`manager.rs`, `network.rs`). Mutual TLS on 2377, swarm
//! init/join and the node commands come next.

pub mod manager;
pub mod network;
pub mod state;
pub mod store;

use std::io::Cursor;

use state::{Command, CommandResult, RaftId};

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

//! The control-port routes a manager serves for its peers: Raft's own RPCs
//! and `/raft/leader`, where followers forward operations to the leader.
//! The control port's policy has already checked the caller's manager
//! certificate.

use std::sync::{Arc, RwLock};

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::post;
use axum::{Json, Router};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::Raft;

use super::leader::execute;
use super::leader::LeaderMemory;
use super::manager::OP_TIMEOUT;
use super::state::ClusterState;
use super::TypeConfig;
use crate::wire::RaftId;
use crate::wire::{LeaderOp, LeaderReply, OpError};

type R = Raft<TypeConfig>;

#[derive(Clone)]
struct Ctx {
    raft: R,
    state: Arc<RwLock<ClusterState>>,
    mem: Arc<LeaderMemory>,
}

/// The largest request body a manager takes from another: axum's default
/// (2 MB) refused the AppendEntries that carried a big batch of tasks, and
/// the follower could never catch up. Only managers, authenticated by
/// their certificates, reach these routes (the control port's policy).
pub const RAFT_BODY_LIMIT: usize = 64 << 20;

pub fn router(raft: R, state: Arc<RwLock<ClusterState>>, mem: Arc<LeaderMemory>) -> Router {
    Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/snapshot", post(snapshot))
        .route("/raft/leader", post(leader))
        .layer(DefaultBodyLimit::max(RAFT_BODY_LIMIT))
        .with_state(Ctx { raft, state, mem })
}

async fn append(
    State(c): State<Ctx>,
    Json(req): Json<AppendEntriesRequest<TypeConfig>>,
) -> Json<Result<AppendEntriesResponse<RaftId>, RaftError<RaftId>>> {
    Json(c.raft.append_entries(req).await)
}

async fn vote(
    State(c): State<Ctx>,
    Json(req): Json<VoteRequest<RaftId>>,
) -> Json<Result<VoteResponse<RaftId>, RaftError<RaftId>>> {
    Json(c.raft.vote(req).await)
}

async fn snapshot(
    State(c): State<Ctx>,
    Json(req): Json<InstallSnapshotRequest<TypeConfig>>,
) -> Json<Result<InstallSnapshotResponse<RaftId>, RaftError<RaftId, InstallSnapshotError>>> {
    Json(c.raft.install_snapshot(req).await)
}

/// A follower's forwarded operation; never forwarded again from here (a
/// manager that is not the leader answers `NotLeader` and the sender
/// retries), so there are no forwarding loops.
async fn leader(
    State(c): State<Ctx>,
    Json(op): Json<LeaderOp>,
) -> Json<Result<LeaderReply, OpError>> {
    // One borrow at a time: a second read of the metrics while the first
    // is held can panic.
    let (leader, me) = {
        let m = c.raft.metrics();
        let m = m.borrow();
        (m.current_leader, m.id)
    };
    if leader != Some(me) {
        return Json(Err(OpError::NotLeader));
    }
    Json(execute(&c.raft, &c.state, &c.mem, op, OP_TIMEOUT).await)
}

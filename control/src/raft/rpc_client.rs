//! Raft RPCs between managers: JSON over HTTP/1 on the control port's
//! mutual TLS (`POST /raft/append`, `/raft/vote`, `/raft/snapshot`).

use std::sync::Arc;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, BasicNode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::TypeConfig;
use crate::control_port::client::request;
use crate::control_port::live::LiveTls;
use crate::wire::RaftId;

/// Makes a client per target; cheap (openraft calls it often).
#[derive(Clone)]
pub struct Network {
    pub tls: Arc<LiveTls>,
}

/// One target. The TLS config is taken per request, not kept: openraft
/// keeps a replication stream's client for as long as it leads, and a
/// certificate renewed meanwhile (or a CA rotation) must reach it.
pub struct Conn {
    target: RaftId,
    addr: String,
    tls: Arc<LiveTls>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Conn;

    async fn new_client(&mut self, target: RaftId, node: &BasicNode) -> Conn {
        Conn {
            target,
            addr: node.addr.clone(),
            tls: self.tls.clone(),
        }
    }
}

impl Conn {
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        opt: RPCOption,
    ) -> Result<Resp, RPCError<RaftId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let (status, bytes) = request(
            &self.tls.client(),
            &self.addr,
            hyper::Method::POST,
            path,
            body,
            opt.hard_ttl(),
        )
        .await
        .map_err(|f| {
            if f.connect {
                RPCError::Unreachable(Unreachable::new(&f))
            } else {
                RPCError::Network(NetworkError::from(AnyError::error(f.msg)))
            }
        })?;
        if !status.is_success() {
            let msg = format!(
                "{}{path}: HTTP {status}: {}",
                self.addr,
                String::from_utf8_lossy(&bytes)
            );
            return Err(RPCError::Network(NetworkError::from(AnyError::error(msg))));
        }
        let res: Result<Resp, E> =
            serde_json::from_slice(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

type Err<E = openraft::error::Infallible> = RPCError<RaftId, BasicNode, RaftError<RaftId, E>>;

impl RaftNetwork<TypeConfig> for Conn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<RaftId>, Err> {
        self.call("/raft/append", &rpc, option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<RaftId>, Err<InstallSnapshotError>> {
        self.call("/raft/snapshot", &rpc, option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftId>,
        option: RPCOption,
    ) -> Result<VoteResponse<RaftId>, Err> {
        self.call("/raft/vote", &rpc, option).await
    }
}

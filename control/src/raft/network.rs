//! Raft RPCs between managers: JSON over HTTP/1 (`POST /raft/append`,
//! `/raft/vote`, `/raft/snapshot`). Plain TCP for now; the control port's
//! mutual TLS (issue 4) wraps this same transport.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
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

use super::state::RaftId;
use super::TypeConfig;

/// Makes a client per target; cheap (openraft calls it often).
#[derive(Clone, Default)]
pub struct Network;

pub struct Conn {
    target: RaftId,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Conn;

    async fn new_client(&mut self, target: RaftId, node: &BasicNode) -> Conn {
        Conn {
            target,
            addr: node.addr.clone(),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Failure {
    pub msg: String,
    connect: bool,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Failure {}

/// One request on a fresh connection, bounded by `ttl`. Any status is
/// returned with its body (the caller decodes errors).
pub(crate) async fn request(
    addr: &str,
    method: hyper::Method,
    path: &str,
    body: Vec<u8>,
    ttl: Duration,
) -> Result<(hyper::StatusCode, Bytes), Failure> {
    let work = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| Failure {
                msg: format!("cannot reach {addr}: {e}"),
                connect: true,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Failure {
                msg: format!("handshake {addr}: {e}"),
                connect: true,
            })?;
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "shoal-manager")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Failure {
                msg: e.to_string(),
                connect: false,
            })?;
        let resp = sender.send_request(req).await.map_err(|e| Failure {
            msg: e.to_string(),
            connect: false,
        })?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| Failure {
                msg: e.to_string(),
                connect: false,
            })?;
        Ok((status, body))
    };
    tokio::time::timeout(ttl, work).await.unwrap_or_else(|_| {
        Err(Failure {
            msg: format!("{addr}{path}: timed out"),
            connect: false,
        })
    })
}

/// A Raft RPC: any status but success is a transport failure.
async fn post(addr: &str, path: &str, body: Vec<u8>, ttl: Duration) -> Result<Bytes, Failure> {
    let (status, bytes) = request(addr, hyper::Method::POST, path, body, ttl).await?;
    if !status.is_success() {
        return Err(Failure {
            msg: format!("{addr}{path}: HTTP {status}"),
            connect: false,
        });
    }
    Ok(bytes)
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
        let bytes = post(&self.addr, path, body, opt.hard_ttl())
            .await
            .map_err(|f| {
                if f.connect {
                    RPCError::Unreachable(Unreachable::new(&f))
                } else {
                    RPCError::Network(NetworkError::from(AnyError::error(f.msg)))
                }
            })?;
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

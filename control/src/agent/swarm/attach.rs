//! Addresses for attached containers, from the managers: a node asks
//! `/swarm/attach` and `/swarm/detach` on a manager's control port (its own
//! manager directly), and the manager writes the attachment through the
//! Raft log (`raft/attachments.rs`). The node an attachment belongs to is
//! the caller's certificate's, so a node can neither take nor free another
//! node's addresses.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::{refusal, Agent};
use crate::control_port::client::call;
use crate::control_port::tls::PeerId;
use crate::raft::manager::Manager;
use crate::wire::{
    AttachReply, AttachRequest, Attachment, Command, CommandResult, DetachRequest, ErrorKind,
    NetworkRecord, WireError,
};

const CALL_TTL: Duration = Duration::from_secs(5);

/// The attachment, written on the leader wherever it is.
async fn attach_at(m: &Manager, node_id: &str, req: AttachRequest) -> Result<AttachReply> {
    let cmd = Command::AttachmentCreate {
        node_id: node_id.into(),
        req,
        now: crate::clock::now_ms(),
    };
    let a = match m.write(cmd).await? {
        CommandResult::Attachments(mut v) if !v.is_empty() => v.remove(0),
        CommandResult::Error(e) => return Err(e.into()),
        other => bail!("unexpected reply {other:?}"),
    };
    let st = m.state();
    let network = st
        .networks
        .get(&a.network_id)
        .cloned()
        .context("the attachment's network is gone")?;
    let lb_addr = st.lb_addr(&a.network_id, node_id);
    Ok(AttachReply {
        attachment: a,
        network,
        lb_addr,
    })
}

async fn detach_at(m: &Manager, node_id: &str, req: DetachRequest) -> Result<Vec<Attachment>> {
    let cmd = Command::AttachmentRemove {
        node_id: node_id.into(),
        req,
    };
    match m.write(cmd).await? {
        CommandResult::Attachments(v) => Ok(v),
        CommandResult::Error(e) => Err(e.into()),
        other => bail!("unexpected reply {other:?}"),
    }
}

/// A node's request, answered by this manager: `f` gets the manager, the
/// caller's node id (its certificate's) and the request.
async fn on_behalf<Req, Resp, F, Fut>(
    a: std::sync::Arc<Agent>,
    peer: PeerId,
    req: Option<Json<Req>>,
    f: F,
) -> Response
where
    Resp: serde::Serialize,
    F: FnOnce(std::sync::Arc<Manager>, String, Req) -> Fut,
    Fut: std::future::Future<Output = Result<Resp>>,
{
    let res = async {
        let Some(Json(req)) = req else {
            crate::fail!(Invalid, "a request body is required");
        };
        let (m, _) = a.manager().await?;
        f(m, peer.node_id, req).await
    }
    .await;
    match res {
        Ok(r) => Json(r).into_response(),
        Err(e) => refusal(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

pub(super) async fn attach_handler(
    State(a): State<std::sync::Arc<Agent>>,
    Extension(peer): Extension<PeerId>,
    req: Option<Json<AttachRequest>>,
) -> Response {
    on_behalf(a, peer, req, |m, node, req| async move {
        attach_at(&m, &node, req).await
    })
    .await
}

/// The network, if `node_id` could attach a container to it now (the
/// checks of an attachment, nothing written): CNI's STATUS, Docker's pool.
fn attachable_at(m: &Manager, node_id: &str, network: &str) -> Result<NetworkRecord> {
    let probe = AttachRequest {
        network: network.into(),
        container_id: "status".into(),
        ifname: "eth0".into(),
        ..Default::default()
    };
    let st = m.state();
    let a = st.allocate_attachment(node_id, &probe)?;
    st.networks
        .get(&a.network_id)
        .cloned()
        .context("the network is gone")
}

pub(super) async fn attachable_handler(
    State(a): State<std::sync::Arc<Agent>>,
    Extension(peer): Extension<PeerId>,
    req: Option<Json<AttachRequest>>,
) -> Response {
    on_behalf(a, peer, req, |m, node, req| async move {
        attachable_at(&m, &node, &req.network)
    })
    .await
}

pub(super) async fn detach_handler(
    State(a): State<std::sync::Arc<Agent>>,
    Extension(peer): Extension<PeerId>,
    req: Option<Json<DetachRequest>>,
) -> Response {
    on_behalf(a, peer, req, |m, node, req| async move {
        detach_at(&m, &node, req).await
    })
    .await
}

/// Whether trying another manager could help (no answer, or one that
/// could not reach the leader); a refusal of the request itself could not.
fn retry_elsewhere(e: &WireError) -> bool {
    matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Internal)
}

impl Agent {
    /// Asks the managers for an attachment's address.
    pub(crate) async fn ask_attach(&self, req: &AttachRequest) -> Result<AttachReply> {
        self.ask_managers(
            |m, node| {
                let req = req.clone();
                async move { attach_at(&m, &node, req).await }
            },
            "/swarm/attach",
            req,
        )
        .await
    }

    /// Tells the managers an attachment is gone (idempotent).
    pub(crate) async fn ask_detach(&self, req: &DetachRequest) -> Result<Vec<Attachment>> {
        self.ask_managers(
            |m, node| {
                let req = req.clone();
                async move { detach_at(&m, &node, req).await }
            },
            "/swarm/detach",
            req,
        )
        .await
    }

    /// The network, if a container could be attached to it here now.
    pub(crate) async fn ask_attachable(&self, network: &str) -> Result<NetworkRecord> {
        let req = AttachRequest {
            network: network.into(),
            ..Default::default()
        };
        self.ask_managers(
            |m, node| {
                let network = network.to_string();
                async move { attachable_at(&m, &node, &network) }
            },
            "/swarm/attachable",
            &req,
        )
        .await
    }

    /// This node's own manager if it is one, else the known managers over
    /// the control port, the last leader first.
    async fn ask_managers<Req, Resp, F, Fut>(&self, local: F, path: &str, req: &Req) -> Result<Resp>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        F: FnOnce(std::sync::Arc<Manager>, String) -> Fut,
        Fut: std::future::Future<Output = Result<Resp>>,
    {
        let (manager, tls, ms) = {
            let g = self.swarm.lock().await;
            let Some(s) = g.as_ref() else {
                crate::fail!(
                    Unavailable,
                    "this node is not in a swarm: attachable networks are swarm networks (`shoal swarm init` or `shoal swarm join` first)"
                );
            };
            (s.manager.clone(), s.tls.client(), s.membership.clone())
        };
        if let Some(m) = manager {
            return local(m, ms.node_id.clone()).await;
        }
        let mut last = WireError::unavailable("no managers known");
        for addr in &ms.managers {
            match call::<_, Resp>(&tls, addr, path, req, CALL_TTL).await {
                Ok(r) => return Ok(r),
                Err(f) => {
                    let e = f
                        .error
                        .unwrap_or_else(|| WireError::unavailable(format!("{addr}: {}", f.msg)));
                    if !retry_elsewhere(&e) {
                        return Err(e.into());
                    }
                    last = e;
                }
            }
        }
        Err(last.into())
    }
}

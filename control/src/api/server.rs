//! The daemon side of the local API (axum on a Unix socket, mode 0600).
//! Every error is a `WireError` (`{"error": "...", "kind": "..."}`, one
//! line) with the HTTP status of its kind; a malformed request changes
//! nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path as UrlPath, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use tokio::net::UnixListener;
use tokio::sync::Notify;

use super::respond::{body, err, reply};
use crate::agent::Agent;
use crate::wire::{
    EndpointCreate, NetworkCreate, NodeUpdate, Role, SwarmInit, SwarmJoin, SwarmLeave, SwarmUpdate,
    WireError,
};

pub fn bind(path: &Path) -> Result<UnixListener> {
    let l =
        UnixListener::bind(path).with_context(|| format!("bind API socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

pub async fn serve(listener: UnixListener, agent: Arc<Agent>, shutdown: Arc<Notify>) {
    let app = Router::new()
        .route("/v1/info", get(info))
        .route("/v1/local/networks", get(networks).post(create_network))
        .route("/v1/local/networks/{name}", delete(remove_network))
        .route("/v1/endpoints", get(endpoints).post(create_endpoint))
        .route("/v1/endpoints/{name}", delete(remove_endpoint))
        .route("/v1/gossip", get(gossip))
        .route("/v1/swarm/init", axum::routing::post(swarm_init))
        .route("/v1/swarm/join", axum::routing::post(swarm_join))
        .route("/v1/swarm/join-token/{role}", get(join_token))
        .route(
            "/v1/swarm/join-token/{role}/rotate",
            axum::routing::post(rotate_token),
        )
        .route("/v1/swarm/leave", axum::routing::post(swarm_leave))
        .route("/v1/swarm", get(swarm_inspect))
        .route("/v1/swarm/update", axum::routing::post(swarm_update))
        .route("/v1/swarm/ca", get(swarm_ca))
        .route("/v1/swarm/ca/rotate", axum::routing::post(swarm_ca_rotate))
        .route("/v1/debug/raft", get(raft_debug))
        .route("/v1/debug/dns", get(dns_debug))
        .route("/v1/debug/lb", get(lb_debug))
        .route("/v1/debug/ipsec", get(ipsec_debug))
        .route("/v1/nodes", get(nodes))
        .route("/v1/nodes/{key}/promote", axum::routing::post(node_promote))
        .route("/v1/nodes/{key}/demote", axum::routing::post(node_demote))
        .route("/v1/nodes/{key}", get(node_inspect).delete(node_rm))
        .route("/v1/nodes/{key}/update", axum::routing::post(node_update))
        .merge(super::orchestration::routes())
        .merge(super::attachments::routes())
        .fallback(|| async { err(WireError::not_found("no such API route")) })
        .with_state(agent);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.notified().await })
        .await
    {
        tracing::error!("local API server stopped: {e}");
    }
}

type Shared = State<Arc<Agent>>;

async fn info(State(a): Shared) -> Response {
    Json(a.info.clone()).into_response()
}

#[derive(serde::Deserialize)]
struct DnsAsk {
    task: Option<String>,
}

/// The node's DNS: counters, upstreams, and with `task` the names that
/// task sees (TASK: an id or its prefix, `SERVICE.SLOT.ID`, `SERVICE.SLOT`).
async fn dns_debug(State(a): Shared, Query(q): Query<DnsAsk>) -> Response {
    let task = match q.task {
        None => None,
        Some(k) => {
            let found = a.local_tasks().into_iter().find(|t| {
                t.id == k
                    || t.name == k
                    || t.short_name == k
                    || (k.len() >= 4 && t.id.starts_with(&k))
            });
            match found {
                Some(t) => Some(t.id),
                None => return err(WireError::not_found(format!("no task {k} on this node"))),
            }
        }
    };
    Json(a.dns.report(task.as_deref())).into_response()
}

async fn lb_debug(State(a): Shared) -> Response {
    let mut inner = a.inner.lock().await;
    let mut r = inner.lb.report();
    r.local = inner.relays.open();
    Json(r).into_response()
}

async fn ipsec_debug(State(a): Shared) -> Response {
    Json(a.ipsec_view().await).into_response()
}

async fn networks(State(a): Shared) -> Response {
    Json(a.networks().await).into_response()
}

async fn create_network(
    State(a): Shared,
    b: Result<Json<NetworkCreate>, JsonRejection>,
) -> Response {
    match body(b) {
        Ok(req) => reply(a.create_network(req).await),
        Err(e) => err(e),
    }
}

async fn remove_network(State(a): Shared, UrlPath(name): UrlPath<String>) -> Response {
    reply(a.remove_network(&name).await)
}

async fn endpoints(State(a): Shared) -> Response {
    Json(a.endpoints().await).into_response()
}

async fn create_endpoint(
    State(a): Shared,
    b: Result<Json<EndpointCreate>, JsonRejection>,
) -> Response {
    match body(b) {
        Ok(req) => reply(a.create_endpoint(req).await),
        Err(e) => err(e),
    }
}

async fn remove_endpoint(State(a): Shared, UrlPath(name): UrlPath<String>) -> Response {
    reply(a.remove_endpoint(&name).await)
}

async fn gossip(State(a): Shared) -> Response {
    Json(a.gossip_view().await).into_response()
}

async fn swarm_init(State(a): Shared, b: Result<Json<SwarmInit>, JsonRejection>) -> Response {
    match body(b) {
        Ok(req) => reply(a.swarm_init(req).await),
        Err(e) => err(e),
    }
}

fn role(s: &str) -> Result<Role, WireError> {
    match s {
        "worker" => Ok(Role::Worker),
        "manager" => Ok(Role::Manager),
        other => Err(WireError::invalid(format!(
            "unknown role {other:?} (worker or manager)"
        ))),
    }
}

async fn join_token(State(a): Shared, UrlPath(r): UrlPath<String>) -> Response {
    match role(&r) {
        Ok(r) => reply(a.join_token(r, false).await),
        Err(e) => err(e),
    }
}

async fn rotate_token(State(a): Shared, UrlPath(r): UrlPath<String>) -> Response {
    match role(&r) {
        Ok(r) => reply(a.join_token(r, true).await),
        Err(e) => err(e),
    }
}

async fn nodes(State(a): Shared) -> Response {
    reply(a.nodes().await)
}

async fn swarm_join(State(a): Shared, b: Result<Json<SwarmJoin>, JsonRejection>) -> Response {
    match body(b) {
        Ok(req) => reply(a.swarm_join(&req.token, &req.remote).await.map(|r| {
            crate::wire::SwarmJoinReply {
                node_id: r.node_id,
                role: r.role,
            }
        })),
        Err(e) => err(e),
    }
}

async fn node_inspect(State(a): Shared, UrlPath(key): UrlPath<String>) -> Response {
    reply(a.node_inspect(&key).await)
}

#[derive(serde::Deserialize)]
struct Force {
    #[serde(default)]
    force: bool,
}

async fn node_rm(
    State(a): Shared,
    UrlPath(key): UrlPath<String>,
    Query(f): Query<Force>,
) -> Response {
    reply(a.node_rm(&key, f.force).await)
}

async fn node_promote(State(a): Shared, UrlPath(key): UrlPath<String>) -> Response {
    reply(a.node_promote(&key).await)
}

async fn node_demote(State(a): Shared, UrlPath(key): UrlPath<String>) -> Response {
    reply(a.node_demote(&key).await)
}

async fn swarm_leave(State(a): Shared, b: Result<Json<SwarmLeave>, JsonRejection>) -> Response {
    match body(b) {
        Ok(req) => reply(a.swarm_leave(req.force).await),
        Err(e) => err(e),
    }
}

async fn swarm_inspect(State(a): Shared) -> Response {
    reply(a.swarm_inspect().await)
}

async fn swarm_update(State(a): Shared, b: Result<Json<SwarmUpdate>, JsonRejection>) -> Response {
    match body(b) {
        Ok(req) => reply(a.swarm_update(req).await),
        Err(e) => err(e),
    }
}

async fn swarm_ca(State(a): Shared) -> Response {
    reply(a.swarm_ca().await)
}

async fn swarm_ca_rotate(State(a): Shared) -> Response {
    reply(a.swarm_ca_rotate().await)
}

async fn raft_debug(State(a): Shared) -> Response {
    reply(a.raft_debug().await)
}

async fn node_update(
    State(a): Shared,
    UrlPath(key): UrlPath<String>,
    b: Result<Json<NodeUpdate>, JsonRejection>,
) -> Response {
    match body(b) {
        Ok(u) => reply(
            a.node_update(&key, u.availability, u.labels_add, u.labels_rm)
                .await,
        ),
        Err(e) => err(e),
    }
}

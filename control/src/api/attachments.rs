//! `/v1/attachments`: containers on attachable swarm networks
//! (`agent/attachments.rs`), for the CNI plugin and the Docker driver.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path as UrlPath, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};

use super::respond::{body, err, reply};
use crate::agent::Agent;
use crate::wire::AttachCreate;

type Shared = State<Arc<Agent>>;

pub fn routes() -> Router<Arc<Agent>> {
    Router::new()
        .route("/v1/attachments", get(list).post(attach))
        .route("/v1/attachments/{container}", delete(detach))
        .route("/v1/attachable/{network}", get(attachable))
}

/// Whether a container could be attached to `network` here now (the
/// managers' checks, nothing made): CNI's STATUS.
async fn attachable(State(a): Shared, UrlPath(network): UrlPath<String>) -> Response {
    reply(a.ask_attachable(&network).await)
}

async fn list(State(a): Shared) -> Response {
    Json(a.attachments().await).into_response()
}

async fn attach(State(a): Shared, b: Result<Json<AttachCreate>, JsonRejection>) -> Response {
    match body(b) {
        Ok(req) => reply(a.attach(req).await),
        Err(e) => err(e),
    }
}

#[derive(serde::Deserialize)]
struct DetachAsk {
    ifname: Option<String>,
}

/// Idempotent: a container that is not here detaches as an empty list.
async fn detach(
    State(a): Shared,
    UrlPath(container): UrlPath<String>,
    Query(q): Query<DetachAsk>,
) -> Response {
    reply(a.detach(&container, q.ifname.as_deref()).await)
}

//! Local API routes for the orchestrator's objects (served by managers):
//! `/v1/networks`, `/v1/services`, `/v1/tasks`, and `/v1/flows` (every
//! node's flow log).

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path as UrlPath, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::respond::{body, err, reply};
use crate::agent::Agent;
use crate::wire::NetworkSpec;
use crate::wire::ServiceSpec;

type Shared = State<Arc<Agent>>;

pub fn routes() -> Router<Arc<Agent>> {
    Router::new()
        .route("/v1/networks", get(network_ls).post(network_create))
        .route(
            "/v1/networks/{key}",
            get(network_inspect).delete(network_rm),
        )
        .route("/v1/services", get(service_ls).post(service_create))
        .route(
            "/v1/services/{key}",
            get(service_inspect).delete(service_rm),
        )
        .route("/v1/services/{key}/scale", post(service_scale))
        .route("/v1/services/{key}/spec", get(service_spec))
        .route("/v1/services/{key}/update", post(service_update))
        .route("/v1/services/{key}/logs", post(service_logs))
        .route("/v1/tasks", get(task_ls))
        .route("/v1/tasks/{key}", get(task_inspect))
        .route("/v1/local/tasks", get(local_tasks))
        .route("/v1/flows", post(cluster_flows))
}

async fn network_ls(State(a): Shared) -> Response {
    reply(a.network_list().await)
}

async fn network_create(State(a): Shared, b: Result<Json<NetworkSpec>, JsonRejection>) -> Response {
    match body(b) {
        Ok(spec) => reply(a.network_create(spec).await),
        Err(e) => err(e),
    }
}

async fn network_inspect(State(a): Shared, UrlPath(key): UrlPath<String>) -> Response {
    reply(a.network_inspect(&key).await)
}

async fn network_rm(State(a): Shared, UrlPath(key): UrlPath<String>) -> Response {
    reply(a.network_rm(&key).await)
}

async fn service_ls(State(a): Shared) -> Response {
    reply(a.service_list().await)
}

async fn service_create(State(a): Shared, b: Result<Json<ServiceSpec>, JsonRejection>) -> Response {
    match body(b) {
        Ok(spec) => reply(a.service_create(spec).await),
        Err(e) => err(e),
    }
}

async fn service_inspect(State(a): Shared, UrlPath(key): UrlPath<String>) -> Response {
    reply(a.service_inspect(&key).await)
}

async fn service_rm(State(a): Shared, UrlPath(key): UrlPath<String>) -> Response {
    reply(a.service_rm(&key).await)
}

#[derive(Deserialize)]
struct Scale {
    replicas: u64,
}

async fn service_scale(
    State(a): Shared,
    UrlPath(key): UrlPath<String>,
    b: Result<Json<Scale>, JsonRejection>,
) -> Response {
    match body(b) {
        Ok(s) => reply(a.service_scale(&key, s.replicas).await),
        Err(e) => err(e),
    }
}

async fn service_spec(State(a): Shared, UrlPath(key): UrlPath<String>) -> Response {
    reply(a.service_spec(&key).await)
}

async fn service_update(
    State(a): Shared,
    UrlPath(key): UrlPath<String>,
    b: Result<Json<crate::wire::SpecAt>, JsonRejection>,
) -> Response {
    match body(b) {
        Ok(u) => reply(a.service_update(&key, u).await),
        Err(e) => err(e),
    }
}

async fn service_logs(
    State(a): Shared,
    UrlPath(key): UrlPath<String>,
    b: Result<Json<crate::wire::LogsQuery>, JsonRejection>,
) -> Response {
    match body(b) {
        Ok(q) => reply(a.service_logs(&key, q).await),
        Err(e) => err(e),
    }
}

async fn cluster_flows(
    State(a): Shared,
    b: Result<Json<crate::wire::FlowQuery>, JsonRejection>,
) -> Response {
    match body(b) {
        Ok(q) => reply(a.cluster_flows(q).await),
        Err(e) => err(e),
    }
}

#[derive(Deserialize)]
struct TaskFilter {
    service: Option<String>,
}

async fn task_ls(State(a): Shared, Query(f): Query<TaskFilter>) -> Response {
    reply(a.service_tasks(f.service.as_deref()).await)
}

async fn local_tasks(State(a): Shared) -> Response {
    Json(a.local_tasks()).into_response()
}

async fn task_inspect(State(a): Shared, UrlPath(key): UrlPath<String>) -> Response {
    reply(a.task_inspect(&key).await)
}

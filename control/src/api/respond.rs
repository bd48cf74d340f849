//! How every handler of the local API answers: the value as JSON, or its
//! error with the HTTP status of the error's kind.

use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::wire::{ErrorKind, WireError};

/// An error answer: the status of its kind, the error as JSON.
pub fn err(e: WireError) -> Response {
    let status =
        StatusCode::from_u16(e.kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(e)).into_response()
}

/// A handler's result: the value, or its error with the kind found in the
/// error's chain (an untyped failure is the daemon's own: 500).
pub fn reply<T: serde::Serialize>(r: anyhow::Result<T>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => err(WireError::new(
            WireError::kind_of(e.as_ref()),
            format!("{e:#}"),
        )),
    }
}

/// A request body that is not the expected JSON gets a clear error.
pub fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, WireError> {
    b.map(|Json(v)| v).map_err(|e| {
        WireError::new(
            ErrorKind::Invalid,
            format!("bad request: {}", e.body_text()),
        )
    })
}

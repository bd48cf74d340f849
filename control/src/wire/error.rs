//! The error of every answer: a kind that decides what callers do (the
//! local API's HTTP status, a retry, Docker's exit code) and one line for
//! people. The kind is set where the failure is known (the state machine,
//! a lookup, the policy) and travels unchanged through Raft, the control
//! port and the local API to the CLI.

use serde::{Deserialize, Serialize};

/// What went wrong, as a caller decides on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request itself is wrong (bad JSON, a bad flag value, a spec
    /// that cannot be run): asking again the same way fails again.
    Invalid,
    /// What it names does not exist.
    NotFound,
    /// It clashes with what exists (a name taken, a network in use, an
    /// address held, a node that is not a manager where one is needed).
    Conflict,
    /// Not now: no leader, no quorum, a node not in a swarm yet, a
    /// manager out of reach. Asking again later may work.
    Unavailable,
    /// The caller may not do this (policy, certificate, role).
    Forbidden,
    /// The caller is no longer in the swarm (a removed node): it leaves.
    Gone,
    /// The daemon failed at something it should have managed (IO, kernel).
    #[default]
    Internal,
}

impl ErrorKind {
    /// The local API's HTTP status for this kind.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::Invalid => 400,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::Gone => 410,
            ErrorKind::Internal => 500,
            ErrorKind::Unavailable => 503,
        }
    }

    /// The kind an HTTP status stands for (answers of older daemons carry
    /// no kind).
    pub fn from_http_status(status: u16) -> Self {
        match status {
            400 | 422 => ErrorKind::Invalid,
            401 | 403 => ErrorKind::Forbidden,
            410 => ErrorKind::Gone,
            404 => ErrorKind::NotFound,
            409 => ErrorKind::Conflict,
            502..=504 => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        }
    }
}

/// An error answer: `{"error": "one line", "kind": "not_found"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct WireError {
    #[serde(default)]
    pub kind: ErrorKind,
    #[serde(rename = "error")]
    pub message: String,
}

impl WireError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        let message: String = message.into();
        // One line, whatever the cause wrote.
        let message = message.lines().map(str::trim).collect::<Vec<_>>().join(" ");
        Self { kind, message }
    }
    pub fn invalid(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, m)
    }
    pub fn conflict(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, m)
    }
    pub fn unavailable(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, m)
    }
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, m)
    }
    pub fn gone(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Gone, m)
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, m)
    }

    /// The kind of an error chain: the first `WireError` in it, else
    /// `Internal` (an untyped failure is the daemon's).
    pub fn kind_of(e: &(dyn std::error::Error + 'static)) -> ErrorKind {
        let mut cur = Some(e);
        while let Some(c) = cur {
            if let Some(w) = c.downcast_ref::<WireError>() {
                return w.kind;
            }
            cur = c.source();
        }
        ErrorKind::Internal
    }
}

/// A `WireError` of a kind, worded like `format!`:
/// `wire_err!(NotFound, "no such node: {key}")`.
#[macro_export]
macro_rules! wire_err {
    ($kind:ident, $($arg:tt)+) => {
        $crate::wire::WireError::new($crate::wire::ErrorKind::$kind, format!($($arg)+))
    };
}

/// `bail!` with a kind: returns `Err(wire_err!(...).into())`.
#[macro_export]
macro_rules! fail {
    ($kind:ident, $($arg:tt)+) => {
        return Err($crate::wire_err!($kind, $($arg)+).into())
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_shape_is_the_old_api_error_plus_a_kind() {
        let e = WireError::not_found("no such service: web");
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"error": "no such service: web", "kind": "not_found"})
        );
        // An answer without a kind (an older daemon) still reads.
        let old: WireError = serde_json::from_str(r#"{"error":"boom"}"#).unwrap();
        assert_eq!(
            (old.kind, old.message.as_str()),
            (ErrorKind::Internal, "boom")
        );
    }

    #[test]
    fn messages_are_one_line_and_kinds_map_to_statuses_and_back() {
        assert_eq!(WireError::invalid("a\n  b").message, "a b");
        for k in [
            ErrorKind::Invalid,
            ErrorKind::NotFound,
            ErrorKind::Conflict,
            ErrorKind::Unavailable,
            ErrorKind::Forbidden,
            ErrorKind::Gone,
            ErrorKind::Internal,
        ] {
            assert_eq!(ErrorKind::from_http_status(k.http_status()), k);
        }
    }
}

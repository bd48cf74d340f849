//! The manager control port (TCP 2377, like Docker's) with mutual TLS:
//! Raft RPCs between managers, writes forwarded to the leader, joins, and
//! node sessions (heartbeats, certificate renewal).
//!
//! Who may call what is decided before a request is read, by a policy the
//! server is given (the managers' is `crate::raft::policy`):
//! - `/swarm/ca`, `/swarm/join`: anyone who completed the TLS handshake; the
//!   join token in the body is the credential (a joining node has no
//!   certificate yet).
//! - `/raft/*`: a manager certificate of the cluster CA whose node is still
//!   a manager in the replicated state (a demoted or removed node loses
//!   manager rights at once, whatever its certificate says).
//! - `/swarm/session`, `/swarm/cert`: any node certificate of a node still in
//!   the swarm; a removed node gets 410 Gone and leaves.
//!
//! A certificate of another CA fails the handshake itself.

pub mod client;
pub mod live;
pub mod server;
pub mod tls;

use axum::http::StatusCode;

/// A request refused by the policy: its HTTP status, and the error the
/// caller reads (its kind follows the status).
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub msg: String,
}

impl Refusal {
    pub fn error(&self) -> crate::wire::WireError {
        crate::wire::WireError::new(
            crate::wire::ErrorKind::from_http_status(self.status.as_u16()),
            self.msg.clone(),
        )
    }
}

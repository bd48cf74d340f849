//! The managers' control-port policy: who may call what, read from the
//! replicated state before a request is read.
//! - `/swarm/ca`, `/swarm/join`: anyone who completed the TLS handshake; the
//!   join token in the body is the credential (a joining node has no
//!   certificate yet).
//! - `/raft/*`: a manager certificate of the cluster CA whose node is still
//!   a manager in the replicated state (a demoted or removed node loses
//!   manager rights at once, whatever its certificate says).
//! - `/swarm/session`, `/swarm/cert`: any node certificate of a node still in
//!   the swarm; a removed node gets 410 Gone and leaves.

use axum::http::StatusCode;

use super::state::ClusterState;
use crate::control_port::tls::PeerId;
use crate::control_port::Refusal;
use crate::wire::Role;

fn refuse(status: StatusCode, msg: String) -> Result<(), Refusal> {
    Err(Refusal { status, msg })
}

/// The authorisation policy (see the module docs).
pub fn authorize(state: &ClusterState, peer: Option<&PeerId>, path: &str) -> Result<(), Refusal> {
    if path == "/swarm/ca" || path == "/swarm/join" {
        return Ok(());
    }
    let Some(peer) = peer else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            format!("{path} needs a node certificate of the cluster CA"),
        );
    };
    // Checked at the handshake too; here for a connection opened before
    // the removal.
    if state
        .cluster
        .as_ref()
        .is_some_and(|c| c.revoked.contains_key(&peer.node_id))
    {
        return refuse(
            StatusCode::GONE,
            format!(
                "node {} was removed from the swarm (its certificate is revoked)",
                peer.node_id
            ),
        );
    }
    let record = state.nodes.get(&peer.node_id);
    if path.starts_with("/raft/") {
        if peer.role != Role::Manager {
            return refuse(
                StatusCode::FORBIDDEN,
                format!("{path} is for managers; node {} is a worker", peer.node_id),
            );
        }
        return match record {
            Some(n) if n.role == Role::Manager => Ok(()),
            Some(_) => refuse(
                StatusCode::FORBIDDEN,
                format!("node {} is no longer a manager", peer.node_id),
            ),
            // A manager that has not replicated the node table yet (a new
            // learner) can only trust the certificate.
            None if state.cluster.is_none() => Ok(()),
            None => refuse(
                StatusCode::GONE,
                format!("node {} was removed from the swarm", peer.node_id),
            ),
        };
    }
    if path.starts_with("/swarm/") {
        return match record {
            Some(_) => Ok(()),
            None => refuse(
                StatusCode::GONE,
                format!("node {} was removed from the swarm", peer.node_id),
            ),
        };
    }
    refuse(
        StatusCode::NOT_FOUND,
        format!("no such control route {path}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Availability, ClusterInfo, NodeRecord, NodeState};

    fn state() -> ClusterState {
        let mut st = ClusterState {
            cluster: Some(ClusterInfo::for_tests(vec![])),
            ..Default::default()
        };
        for (id, role) in [("m", Role::Manager), ("w", Role::Worker)] {
            st.nodes.insert(
                id.into(),
                NodeRecord {
                    ipsec: Default::default(),
                    cert_not_after_ms: None,
                    cert_issuer: None,
                    id: id.into(),
                    raft_id: None,
                    hostname: id.into(),
                    addr: "198.18.0.1".parse().unwrap(),
                    role,
                    availability: Availability::Active,
                    labels: Default::default(),
                    state: NodeState::Ready,
                    version: 0,
                },
            );
        }
        st
    }

    fn peer(id: &str, role: Role) -> PeerId {
        PeerId {
            node_id: id.into(),
            role,
            issuer: "CN=swarm-ca, O=c".into(),
        }
    }

    #[test]
    fn policy() {
        let st = state();
        let code = |p: Option<&PeerId>, path: &str| authorize(&st, p, path).err().map(|r| r.status);
        assert_eq!(code(None, "/swarm/join"), None);
        assert_eq!(code(None, "/raft/vote"), Some(StatusCode::UNAUTHORIZED));
        assert_eq!(code(None, "/swarm/session"), Some(StatusCode::UNAUTHORIZED));
        let m = peer("m", Role::Manager);
        assert_eq!(code(Some(&m), "/raft/append"), None);
        // A worker certificate, or a manager certificate of a demoted node.
        assert_eq!(
            code(Some(&peer("w", Role::Worker)), "/raft/append"),
            Some(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            code(Some(&peer("w", Role::Manager)), "/raft/append"),
            Some(StatusCode::FORBIDDEN)
        );
        assert_eq!(code(Some(&peer("w", Role::Worker)), "/swarm/session"), None);
        // Removed nodes are gone.
        assert_eq!(
            code(Some(&peer("x", Role::Worker)), "/swarm/session"),
            Some(StatusCode::GONE)
        );
        assert_eq!(
            code(Some(&peer("x", Role::Manager)), "/raft/vote"),
            Some(StatusCode::GONE)
        );
        // A fresh learner trusts a manager certificate until it has the table.
        let empty = ClusterState::default();
        assert!(authorize(&empty, Some(&peer("x", Role::Manager)), "/raft/append").is_ok());
        assert_eq!(code(Some(&m), "/nope"), Some(StatusCode::NOT_FOUND));
        // A revoked node is refused even if a record of it lingers.
        let mut st = state();
        let revoked = crate::wire::RevokedNode {
            hostname: "w".into(),
            at_ms: 1,
        };
        let c = st.cluster.as_mut().unwrap();
        c.revoked.insert("w".into(), revoked);
        let r = authorize(&st, Some(&peer("w", Role::Worker)), "/swarm/session").unwrap_err();
        assert_eq!(r.status, StatusCode::GONE);
        assert!(r.msg.contains("revoked"), "{}", r.msg);
    }
}

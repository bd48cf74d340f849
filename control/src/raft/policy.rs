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

/// `authorize`, for a manager whose applied state may lag its Raft log:
/// a manager certificate whose node the state still calls a worker is let
/// through to `/raft/*` while that node's address is in this manager's
/// Raft membership (`raft_member`), which takes effect as soon as it is in
/// the log. A manager promoted just before its leader died has the log
/// that made its peers voters but not yet the state that says so; refusing
/// their votes left the swarm without a leader for good. A demoted node
/// leaves the membership, and then it is refused again.
pub fn authorize_with_membership(
    state: &ClusterState,
    peer: Option<&PeerId>,
    path: &str,
    raft_member: impl Fn(std::net::Ipv4Addr) -> bool,
) -> Result<(), Refusal> {
    let verdict = authorize(state, peer, path);
    let lagging_manager = path.starts_with("/raft/")
        && verdict
            .as_ref()
            .is_err_and(|r| r.status == StatusCode::FORBIDDEN)
        && peer.is_some_and(|p| {
            p.role == Role::Manager
                && state
                    .nodes
                    .get(&p.node_id)
                    .is_some_and(|n| n.role != Role::Manager && raft_member(n.addr))
        });
    if lagging_manager {
        return Ok(());
    }
    verdict
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

    /// A manager certificate whose node this state still calls a worker
    /// reaches Raft only while its address is in the Raft membership; a
    /// revoked one never does, and nothing else changes.
    #[test]
    fn raft_membership_lets_a_lagging_manager_speak_raft() {
        let mut st = state();
        let member = |ip: std::net::Ipv4Addr| ip == std::net::Ipv4Addr::new(198, 18, 0, 1);
        let nobody = |_: std::net::Ipv4Addr| false;
        let w_as_manager = peer("w", Role::Manager);
        let code =
            |st: &ClusterState, p: &PeerId, path: &str, m: &dyn Fn(std::net::Ipv4Addr) -> bool| {
                authorize_with_membership(st, Some(p), path, m)
                    .err()
                    .map(|r| r.status)
            };
        assert_eq!(code(&st, &w_as_manager, "/raft/vote", &member), None);
        assert_eq!(
            code(&st, &w_as_manager, "/raft/vote", &nobody),
            Some(StatusCode::FORBIDDEN)
        );
        // Only Raft's routes, only manager certificates.
        assert_eq!(
            code(&st, &w_as_manager, "/nope", &member),
            Some(StatusCode::NOT_FOUND)
        );
        assert_eq!(
            code(&st, &peer("w", Role::Worker), "/raft/vote", &member),
            Some(StatusCode::FORBIDDEN)
        );
        // Revoked stays revoked.
        st.cluster.as_mut().unwrap().revoked.insert(
            "w".into(),
            crate::wire::RevokedNode {
                hostname: "w".into(),
                at_ms: 0,
            },
        );
        assert_eq!(
            code(&st, &w_as_manager, "/raft/vote", &member),
            Some(StatusCode::GONE)
        );
    }
}

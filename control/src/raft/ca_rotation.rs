//! `swarm ca --rotate` in the replicated state, as swarmkit does it: a new
//! root (cross-signed by the old one) signs every certificate from the
//! start; every node trusts both roots, renews at once (its session reply
//! names the signing root) and presents the new certificate with the
//! cross-signed root, so peers still on the old root alone accept it. Once
//! every node's handshake shows a certificate of the new root, the leader
//! finishes: the new root becomes the only one and the join tokens change
//! (they pin its digest). A node that is down is not waited for: one that
//! comes back after the finish holds a certificate of the dropped root, is
//! refused at the handshake ("unknown_ca" on the managers) and must join
//! again (a rotation never hangs on a dead node).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use openraft::Raft;
use tracing::{info, warn};

use super::state::{err, put, Change, ClusterState};
use super::TypeConfig;
use crate::pki::{subject_of_pem, ClusterCa, JoinToken};
use crate::wire::{CaRotation, Command, CommandResult, NodeRecord, NodeState, WireError};

/// How often the leader looks whether the rotation is complete.
const TICK: Duration = Duration::from_millis(500);

/// How far a rotation is: nodes on the new root, of all nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub rotated: usize,
    pub total: usize,
}

impl ClusterState {
    pub(super) fn ca_rotate(&mut self, rotation: CaRotation) -> (CommandResult, Vec<Change>) {
        let Some(mut c) = self.cluster.clone() else {
            return err(WireError::unavailable("the swarm is not initialised"));
        };
        if c.ca_rotation.is_some() {
            return err(WireError::conflict(
                "a CA rotation is already under way: wait for it to finish",
            ));
        }
        c.ca_rotation = Some(rotation);
        self.cluster = Some(c.clone());
        (CommandResult::Ok, vec![put("cluster".into(), &c)])
    }

    pub(super) fn ca_rotate_finish(
        &mut self,
        worker_token: String,
        manager_token: String,
    ) -> (CommandResult, Vec<Change>) {
        let Some(mut c) = self.cluster.clone() else {
            return err(WireError::unavailable("the swarm is not initialised"));
        };
        let Some(r) = c.ca_rotation.take() else {
            return err(WireError::conflict("no CA rotation is under way"));
        };
        match self.ca_progress() {
            Some(p) if p.rotated == p.total => {}
            p => {
                return err(WireError::conflict(format!(
                    "not every node holds a certificate of the new root yet ({p:?})"
                )))
            }
        }
        c.ca_cert_pem = r.cert_pem;
        c.ca_key_pem = r.key_pem;
        c.worker_token = worker_token;
        c.manager_token = manager_token;
        self.cluster = Some(c.clone());
        (CommandResult::Ok, vec![put("cluster".into(), &c)])
    }

    /// The rotation's progress over the nodes not down (None: none under
    /// way).
    pub fn ca_progress(&self) -> Option<Progress> {
        let waiting = self.ca_waiting()?;
        let total = self
            .nodes
            .values()
            .filter(|n| n.state != NodeState::Down)
            .count();
        Some(Progress {
            rotated: total - waiting.len(),
            total,
        })
    }

    /// The nodes (not down) still on the old root (None: no rotation).
    pub fn ca_waiting(&self) -> Option<Vec<&NodeRecord>> {
        let r = self.cluster.as_ref()?.ca_rotation.as_ref()?;
        let new = subject_of_pem(&r.cert_pem).ok()?;
        Some(
            self.nodes
                .values()
                .filter(|n| n.state != NodeState::Down)
                .filter(|n| n.cert_issuer.as_deref() != Some(new.as_str()))
                .collect(),
        )
    }
}

/// The command that starts a rotation away from the current root.
pub fn start(st: &ClusterState, now_ms: u64) -> anyhow::Result<Command> {
    let c = st
        .cluster
        .as_ref()
        .ok_or_else(|| crate::wire_err!(Unavailable, "the swarm is not initialised"))?;
    if c.ca_rotation.is_some() {
        crate::fail!(
            Conflict,
            "a CA rotation is already under way: wait for it to finish"
        );
    }
    let old = ClusterCa::from_pem(&c.cluster_id, &c.ca_cert_pem, &c.ca_key_pem)?;
    let (new, cross_pem) = old.rotated()?;
    Ok(Command::CaRotate {
        rotation: CaRotation {
            cert_pem: new.cert_pem.clone(),
            key_pem: new.key_pem.clone(),
            cross_pem,
            started_ms: now_ms,
        },
    })
}

/// The command that finishes the rotation, if every node is on the new
/// root: new join tokens (new secrets too) pinning the new root.
pub fn finish(st: &ClusterState) -> Option<Command> {
    let p = st.ca_progress()?;
    if p.rotated < p.total {
        return None;
    }
    let r = st.cluster.as_ref()?.ca_rotation.as_ref()?;
    let digest = crate::pki::digest_of_pem(&r.cert_pem).ok()?;
    Some(Command::CaRotateFinish {
        worker_token: JoinToken::generate(&digest).to_string(),
        manager_token: JoinToken::generate(&digest).to_string(),
    })
}

/// The leader finishes a rotation once every node is on the new root. Runs
/// on every manager, acts only while leading.
pub async fn watch(raft: Raft<TypeConfig>, state: Arc<RwLock<ClusterState>>) {
    loop {
        tokio::time::sleep(TICK).await;
        if !super::leads_as_voter(&raft.metrics().borrow()) {
            continue;
        }
        let Some(cmd) = finish(&state.read().expect("state lock")) else {
            continue;
        };
        match tokio::time::timeout(Duration::from_secs(2), raft.client_write(cmd)).await {
            Ok(Ok(r)) if !matches!(r.data, CommandResult::Error(_)) => {
                info!("CA rotation finished: every node holds a certificate of the new root; the old root is dropped and the join tokens changed")
            }
            r => warn!("CA rotation: finishing not committed: {r:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::state::ClusterState;

    fn node(st: &mut ClusterState, id: &str, issuer: Option<&str>) {
        let n = crate::wire::NodeRecord {
            id: id.into(),
            raft_id: None,
            hostname: format!("h-{id}"),
            addr: [198, 18, 0, 1].into(),
            role: crate::wire::Role::Worker,
            availability: crate::wire::Availability::Active,
            labels: Default::default(),
            state: crate::wire::NodeState::Ready,
            ipsec: Default::default(),
            cert_not_after_ms: None,
            cert_issuer: issuer.map(str::to_string),
            version: 1,
        };
        st.nodes.insert(id.into(), n);
    }

    #[test]
    fn a_rotation_finishes_only_once_every_node_is_on_the_new_root() {
        let mut st = ClusterState {
            cluster: Some(crate::wire::ClusterInfo::for_tests(vec![])),
            ..Default::default()
        };
        let ca = ClusterCa::generate("c1").unwrap();
        {
            let c = st.cluster.as_mut().unwrap();
            c.cluster_id = "c1".into();
            c.ca_cert_pem = ca.cert_pem.clone();
            c.ca_key_pem = ca.key_pem.clone();
        }
        let old = subject_of_pem(&ca.cert_pem).unwrap();
        node(&mut st, "a", None);
        node(&mut st, "b", Some(&old));
        assert_eq!(st.ca_progress(), None);
        assert!(finish(&st).is_none());
        let cmd = start(&st, 5).unwrap();
        let (r, _) = st.apply(2, cmd.clone());
        assert!(matches!(r, CommandResult::Ok), "{r:?}");
        // A second rotation while one is under way is refused.
        assert!(start(&st, 6).is_err());
        assert!(matches!(st.apply(3, cmd).0, CommandResult::Error(_)));
        let new_pem = st.cluster.as_ref().unwrap().ca_rotation.clone().unwrap();
        let new = subject_of_pem(&new_pem.cert_pem).unwrap();
        assert_ne!(new, old, "two roots never share a name");
        let bundle = st.cluster.as_ref().unwrap().trust_bundle();
        assert_eq!(crate::pki::digests_of_bundle(&bundle).unwrap().len(), 2);
        assert_eq!(
            st.ca_progress(),
            Some(Progress {
                rotated: 0,
                total: 2
            })
        );
        node(&mut st, "a", Some(&new));
        assert_eq!(st.ca_progress().unwrap().rotated, 1);
        assert!(finish(&st).is_none(), "b is still on the old root");
        // Finishing early is refused by the state itself.
        let early = Command::CaRotateFinish {
            worker_token: "w".into(),
            manager_token: "m".into(),
        };
        assert!(matches!(st.apply(4, early).0, CommandResult::Error(_)));
        // A node that is down is not waited for.
        node(&mut st, "c", None);
        st.nodes.get_mut("c").unwrap().state = NodeState::Down;
        assert_eq!(st.ca_progress().unwrap().total, 2);
        node(&mut st, "b", Some(&new));
        let old_token = st.cluster.as_ref().unwrap().worker_token.clone();
        let (r, _) = st.apply(5, finish(&st).unwrap());
        assert!(matches!(r, CommandResult::Ok), "{r:?}");
        let c = st.cluster.as_ref().unwrap();
        assert!(c.ca_rotation.is_none());
        assert_eq!(c.ca_cert_pem, new_pem.cert_pem);
        assert_eq!(c.ca_key_pem, new_pem.key_pem);
        assert_ne!(c.worker_token, old_token);
        let t = JoinToken::parse(&c.worker_token).unwrap();
        assert_eq!(
            t.ca_digest,
            crate::pki::digest_of_pem(&new_pem.cert_pem).unwrap()
        );
        assert_eq!(c.trust_bundle(), new_pem.cert_pem);
    }
}

//! A node's session with the managers: a heartbeat every
//! `liveness::HEARTBEAT` (the leader's liveness watch marks silent nodes
//! down), and what the leader's answer says about this node: promoted (get
//! a manager certificate, start a Raft member, join as a voter), demoted
//! (worker certificate, stop the Raft member), removed (leave). Also
//! `swarm leave`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio_rustls::rustls::ClientConfig;
use tracing::{debug, info, warn};

use super::join::{renew_identity, sign_for};
use super::Membership;
use crate::agent::Agent;
use crate::control_port::client::call;
use crate::control_port::tls::Identity;
use crate::raft::liveness::HEARTBEAT;
use crate::raft::manager::to_leader;
use crate::wire::Role;
use crate::wire::SessionRequest;
use crate::wire::{CertReply, CertRequest};
use crate::wire::{ErrorKind, WireError, REMOVED};
use crate::wire::{LeaderOp, SessionReply};

impl Agent {
    pub(super) fn spawn_session(self: &Arc<Self>, generation: u64) {
        let a = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                let current = a.swarm.lock().await.as_ref().map(|s| s.generation);
                if current != Some(generation) {
                    return;
                }
                if let Err(e) = a.session_tick().await {
                    debug!("swarm session: {e:#}");
                }
            }
        });
    }

    async fn session_tick(self: &Arc<Self>) -> Result<()> {
        let (manager, tls, ms, not_after, issuer) = {
            let g = self.swarm.lock().await;
            let Some(s) = g.as_ref() else { return Ok(()) };
            let not_after = Some(s.cert.not_after_ms());
            (
                s.manager.clone(),
                s.tls.client(),
                s.membership.clone(),
                not_after,
                s.cert.issuer.clone(),
            )
        };
        // A manager asks through its own Raft member; if that fails (a
        // demoted manager is refused Raft), it asks like a worker does.
        let local = match &manager {
            Some(m) => m
                .leader_op(LeaderOp::Heartbeat {
                    node_id: ms.node_id.clone(),
                    reports: self.task_reports(),
                    logs: self.take_log_answers(),
                    flows: self.flows.take_answers(),
                    gossip_keys: self.gossip.keys.report(),
                    leaving: false,
                    restarting: false,
                    ipsec: Some(self.ipsec.support.clone()),
                    cert_not_after_ms: not_after,
                    // Its own certificate, as it serves it.
                    cert_issuer: issuer,
                })
                .await
                .map_err(|e| WireError::new(WireError::kind_of(e.as_ref()), format!("{e:#}")))
                .and_then(|r| {
                    r.session
                        .ok_or_else(|| WireError::internal("no session in reply"))
                }),
            None => Err(WireError::unavailable("not a manager")),
        };
        let reply = match local {
            Ok(s) => Ok(s),
            Err(e) if e.kind == ErrorKind::Gone => Err(e),
            Err(_) => self.session_remote(&tls, &ms, not_after).await,
        };
        match reply {
            Ok(s) => {
                self.note_cert_refusal(None).await;
                self.follow_session(s).await?;
                self.renew_if_due().await;
                Ok(())
            }
            // Only a node no longer in the swarm is refused its session.
            Err(e) if e.kind == ErrorKind::Gone => {
                warn!("{e}; leaving the swarm");
                self.leave_locally(false).await;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A heartbeat through the control port: the known managers first
    /// (the last leader leads the list); if none answers (they may all
    /// have been demoted since), every other node gossip knows, since a
    /// manager's control port is at its VTEP address.
    async fn session_remote(
        &self,
        tls: &Arc<ClientConfig>,
        ms: &Membership,
        cert_not_after_ms: Option<u64>,
    ) -> Result<SessionReply, WireError> {
        let mut last = WireError::unavailable("no managers known");
        // Every manager reached refused this node's certificate (why).
        let mut refused: Option<&'static str> = None;
        let mut tried: Vec<String> = vec![ms.control_addr.to_string()];
        let known = ms.managers.clone();
        let others: Vec<String> = self
            .gossip_view()
            .await
            .members
            .iter()
            .filter_map(|m| m.vtep)
            .map(|ip| format!("{ip}:{}", self.control_port))
            .collect();
        for (round, addrs) in [known, others].into_iter().enumerate() {
            for addr in addrs {
                if tried.contains(&addr) {
                    continue;
                }
                tried.push(addr.clone());
                let ttl = Duration::from_millis(if round == 0 { 2000 } else { 500 });
                let req = SessionRequest {
                    reports: self.task_reports(),
                    logs: self.take_log_answers(),
                    flows: self.flows.take_answers(),
                    gossip_keys: self.gossip.keys.report(),
                    leaving: false,
                    restarting: false,
                    ipsec: Some(self.ipsec.support.clone()),
                    cert_not_after_ms,
                };
                match call::<_, SessionReply>(tls, &addr, "/swarm/session", &req, ttl).await {
                    Ok(r) => return Ok(r),
                    Err(f) => {
                        refused = refused.or(f.cert_refused);
                        match f.into_wire() {
                            e if e.kind == ErrorKind::Gone => return Err(e),
                            e => last = e,
                        }
                    }
                }
            }
        }
        if refused == Some("revoked") {
            // Removed: the managers refuse its certificate at the handshake.
            return Err(WireError::gone(format!(
                "this node {REMOVED} (the managers revoked its certificate)"
            )));
        }
        if refused.is_some() {
            self.note_cert_refusal(refused).await;
        }
        Err(last)
    }

    /// Acts on what the leader says this node is.
    async fn follow_session(self: &Arc<Self>, s: SessionReply) -> Result<()> {
        let keys_changed = {
            let g = self.swarm.lock().await;
            g.as_ref()
                .is_some_and(|sw| s.node.id == sw.membership.node_id)
                && self.adopt_gossip_keys(s.gossip_keys.clone(), s.gossip_send)
        };
        if keys_changed {
            // The inbound SAs of a new key are in before the next
            // heartbeat tells the leader this node has it (then peers
            // may send with it). Not under the swarm lock: the API waits
            // on it.
            let vteps = self
                .gossip
                .peers()
                .await
                .iter()
                .map(|p| p.gossip_ip)
                .collect();
            if let Err(e) = self.sync_ipsec(vteps).await {
                tracing::warn!("IPsec: {e:#}");
            }
        }
        // A node without gossip peers finds them through its managers
        // and the few other nodes they name.
        let ask: Vec<std::net::IpAddr> = s
            .managers
            .iter()
            .filter_map(|m| m.parse::<std::net::SocketAddr>().ok())
            .map(|m| m.ip())
            .chain(s.gossip_hint.iter().map(|&ip| ip.into()))
            .collect();
        self.gossip.introduce(&ask).await;
        let mut g = self.swarm.lock().await;
        let Some(sw) = g.as_mut() else { return Ok(()) };
        if s.node.id != sw.membership.node_id {
            bail!("session reply for another node");
        }
        self.reconcile_tasks(s.assignments.clone());
        // Not under the swarm lock: giving an address back asks a manager.
        let me = self.clone();
        let held = s.attachments.clone();
        tokio::spawn(async move { me.release_orphans(held).await });
        self.answer_log_asks(&s.log_asks);
        self.flows.answer_asks(&sw.membership.node_id, &s.flow_asks);
        self.set_data_path_port(s.data_path_port).await?;
        self.set_mesh(s.mesh.clone()).await?;
        if let Some(ms) = s.cert_expiry_ms {
            sw.cert.follow_expiry(ms);
        }
        if let Some(root) = &s.signing_ca {
            sw.cert.follow_root(root);
        }
        if let Some(bundle) = &s.ca_pem {
            self.follow_roots(sw, bundle)?;
        }
        let mut managers = s.managers.clone();
        managers.sort_by_key(|a| a != &s.leader);
        if managers != sw.membership.managers {
            sw.membership.managers = managers;
            sw.membership.save(&self.data_dir)?;
        }
        // A promotion in progress that the managers took back (or gave
        // another Raft id): its member stops, and its log goes.
        let stale = sw
            .promoting
            .as_ref()
            .is_some_and(|p| s.node.role != Role::Manager || s.node.raft_id != Some(p.raft_id));
        if stale {
            let p = sw.promoting.take().expect("checked");
            let _ = p.manager.shutdown().await;
            let _ = std::fs::remove_dir_all(self.data_dir.join("raft"));
            info!("a promotion in progress was taken back");
        }
        if s.node.role == sw.membership.role {
            return Ok(());
        }
        let mut ms = sw.membership.clone();
        match s.node.role {
            Role::Manager => {
                let raft_id = s.node.raft_id.context("promoted without a Raft id")?;
                let p = match sw.promoting.take() {
                    // Retried: the same member, its log kept (the leader
                    // may have made it a voter already).
                    Some(p) => p,
                    None => {
                        let ca_pem = Identity::load(&self.data_dir)?.ca_pem;
                        let (tls, leader) = (sw.tls.client(), s.leader.clone());
                        let identity = renew_identity(ca_pem, |csr_pem| async move {
                            let c: CertReply = call(
                                &tls,
                                &leader,
                                "/swarm/cert",
                                &CertRequest { csr_pem },
                                Duration::from_secs(5),
                            )
                            .await
                            .map_err(|f| anyhow!("new certificate: {}", f.msg))?;
                            Ok(c)
                        })
                        .await?;
                        // A fresh member: nothing of an earlier one.
                        let _ = std::fs::remove_dir_all(self.data_dir.join("raft"));
                        // The manager certificate from here on (the session too).
                        sw.tls.reload(&identity)?;
                        let manager = self
                            .start_manager(raft_id, &ms.node_id, ms.control_addr, &sw.tls)
                            .await?;
                        info!(
                            raft_id,
                            "promotion: Raft member started, asking the leader to add it"
                        );
                        super::Promoting {
                            raft_id,
                            manager,
                            identity,
                        }
                    }
                };
                let add = LeaderOp::AddVoter {
                    raft_id,
                    addr: ms.control_addr.to_string(),
                };
                if let Err(e) =
                    to_leader(&sw.tls.client(), std::slice::from_ref(&s.leader), &add).await
                {
                    sw.promoting = Some(p);
                    // Said where operators look (session errors are
                    // debug: a leader away is routine, this is not).
                    warn!("promotion: the leader did not add this node to Raft yet (retried with the same Raft member): {e:#}");
                    bail!("promotion pending");
                }
                let super::Promoting {
                    manager: m,
                    identity,
                    ..
                } = p;
                identity.save(&self.data_dir)?;
                ms.role = Role::Manager;
                ms.raft_id = raft_id;
                sw.manager = Some(m);
                sw.cert = super::certs::clock_or_now(&identity);
                sw.membership = ms.clone();
                ms.save(&self.data_dir)?;
                info!("promoted to manager");
            }
            Role::Worker => {
                let Some(m) = sw.manager.take() else {
                    bail!("demoted, but no manager runs here");
                };
                // Signed here while this node still holds the CA (the
                // key is made here either way).
                let ca_pem = Identity::load(&self.data_dir)?.ca_pem;
                let st = m.state();
                let identity = renew_identity(ca_pem, |csr| async move {
                    Ok(CertReply {
                        cert_pem: sign_for(&st, &s.node, &csr)?,
                        ca_pem: st.cluster.as_ref().map(|c| c.trust_bundle()),
                    })
                })
                .await?;
                let _ = m.shutdown().await;
                let _ = std::fs::remove_dir_all(self.data_dir.join("raft"));
                identity.save(&self.data_dir)?;
                ms.role = Role::Worker;
                sw.tls.reload(&identity)?;
                sw.cert = super::certs::clock_or_now(&identity);
                sw.membership = ms.clone();
                ms.save(&self.data_dir)?;
                info!("demoted to worker");
            }
        }
        Ok(())
    }

    /// Trusts the roots the leader names (both during a CA rotation, the
    /// new one alone after it) from the next handshake on.
    fn follow_roots(&self, sw: &mut super::Swarm, bundle: &str) -> Result<()> {
        let mut identity = Identity::load(&self.data_dir)?;
        if identity.ca_pem == bundle {
            return Ok(());
        }
        let n = crate::pki::digests_of_bundle(bundle)?.len();
        identity.ca_pem = bundle.to_string();
        sw.tls.reload(&identity)?;
        identity.save(&self.data_dir)?;
        info!(roots = n, "trusting the swarm's roots as the managers say");
        Ok(())
    }

    /// Drops this node's swarm state (after a removal or `swarm leave`),
    /// saying goodbye first when `goodbye`: taking the state stops the
    /// session loop, so no ordinary heartbeat follows the last one.
    async fn leave_locally(&self, goodbye: bool) {
        let taken = self.swarm.lock().await.take();
        if let Some(s) = taken {
            if goodbye {
                self.say_goodbye(&s).await;
            }
            if let Some(m) = s.manager {
                let _ = m.shutdown().await;
            }
            if let Some(p) = s.promoting {
                let _ = p.manager.shutdown().await;
            }
        }
        self.forget_swarm();
    }

    /// The last heartbeat (best effort): the leader marks this node down
    /// at once and rotates the gossip key, so the key this node holds
    /// stops working within seconds.
    async fn say_goodbye(&self, s: &super::Swarm) {
        if !self.last_heartbeat(s, true).await {
            warn!("could not tell the managers this node leaves; they will see it down in 3 s");
        }
    }

    /// Before a quiet exit (a restart): tells the managers to wait
    /// `liveness::RESTART_GRACE` for this node, not to move its tasks.
    pub async fn say_restarting(&self) {
        let g = self.swarm.lock().await;
        let Some(s) = g.as_ref() else { return };
        if !self.last_heartbeat(s, false).await {
            warn!("could not tell the managers this node restarts; a slow restart may see its tasks moved");
        }
    }

    /// A last heartbeat, leaving or restarting: whether a manager took it.
    async fn last_heartbeat(&self, s: &super::Swarm, leaving: bool) -> bool {
        let ms = &s.membership;
        let last = LeaderOp::Heartbeat {
            node_id: ms.node_id.clone(),
            reports: vec![],
            logs: vec![],
            flows: vec![],
            gossip_keys: None,
            leaving,
            restarting: !leaving,
            ipsec: None,
            cert_not_after_ms: None,
            cert_issuer: None,
        };
        if let Some(m) = &s.manager {
            if m.leader_op(last).await.is_ok() {
                return true;
            }
        }
        let req = SessionRequest {
            leaving,
            restarting: !leaving,
            ..Default::default()
        };
        let client = s.tls.client();
        for addr in &ms.managers {
            let r = call::<_, SessionReply>(
                &client,
                addr,
                "/swarm/session",
                &req,
                Duration::from_secs(2),
            );
            if r.await.is_ok() {
                return true;
            }
        }
        false
    }

    /// `swarm leave [--force]`: a manager must be forced (as in Docker); it
    /// first leaves Raft's membership, so the others' quorum shrinks with it.
    pub async fn swarm_leave(&self, force: bool) -> Result<()> {
        let (manager, ms) = {
            let g = self.swarm.lock().await;
            let s = g
                .as_ref()
                .ok_or_else(|| crate::wire_err!(Unavailable, "this node is not part of a swarm"))?;
            (s.manager.clone(), s.membership.clone())
        };
        if let Some(m) = manager {
            let voters = m.voters().len();
            if !force {
                crate::fail!(
                    Conflict,
                    "this node is a manager: leaving leaves {} of {} managers{}; demote it first, or use --force",
                    voters.saturating_sub(1),
                    voters,
                    if voters <= 1 { " and erases the swarm's state" } else { "" }
                );
            }
            if voters > 1 {
                if let Err(e) = m
                    .leader_op(LeaderOp::RemoveVoter {
                        raft_id: ms.raft_id,
                    })
                    .await
                {
                    warn!("leaving without leaving Raft's membership: {e:#}");
                }
            }
        }
        self.leave_locally(true).await;
        info!(node_id = %ms.node_id, "left the swarm");
        Ok(())
    }
}

impl Agent {
    /// Adopts the swarm's VXLAN port (`swarm init --data-path-port`): the
    /// dataplane's config map is rewritten in place, no reload.
    pub async fn set_data_path_port(&self, port: u16) -> Result<()> {
        let mut inner = self.inner.lock().await;
        let mut cfg = inner.maps.config()?;
        if u16::from_be(cfg.vxlan_port) != port {
            cfg.vxlan_port = port.to_be();
            inner.maps.set_config(cfg)?;
            info!(port, "VXLAN data path port set by the swarm");
        }
        Ok(())
    }
}

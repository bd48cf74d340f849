//! Creating and joining a swarm.
//!
//! `swarm init`: a Raft group of one, the cluster CA, join tokens, this
//! node's manager certificate.
//!
//! `swarm join --token T ADDR`: the joining node pins the CA by the token's
//! digest inside the TLS handshake (no certificate of its own yet), proves
//! the token's secret, and gets a node record and a certificate. A manager
//! then starts its Raft member with that certificate and asks the leader,
//! now authenticated, to add it as a voter.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use hyper::Method;
use tracing::info;

use super::{new_id, new_raft_id, Membership};
use crate::agent::Agent;
use crate::control_port::client::{call, request};
use crate::control_port::live::LiveTls;
use crate::control_port::tls::{pinned_client, Identity};
use crate::pki::{digests_of_bundle, ClusterCa, JoinToken};
use crate::raft::manager::to_leader;
use crate::raft::networks::INGRESS_SUBNET;
use crate::raft::state::ClusterState;
use crate::wire::LeaderOp;
use crate::wire::{AddrPool, NetworkSpec};
use crate::wire::{Availability, ClusterInfo, Command, CommandResult, NodeRecord, NodeState, Role};
use crate::wire::{CertReply, JoinReply, JoinRequest};
use crate::wire::{SwarmInit, SwarmInitReply};
use crate::wire::{DEFAULT_CERT_EXPIRY_MS, REMOVED};

pub fn expect_ok(r: CommandResult) -> Result<()> {
    match r {
        CommandResult::Error(e) => Err(e.into()),
        _ => Ok(()),
    }
}

/// A certificate for `node`'s key (its CSR) with the role the state gives it,
/// from the root that signs now; mid-rotation followed by that root
/// cross-signed by the old one. Valid for the swarm's `cert_expiry_ms`;
/// never for a revoked node.
pub fn sign_for(st: &ClusterState, node: &NodeRecord, csr_pem: &str) -> Result<String> {
    let c = st
        .cluster
        .as_ref()
        .ok_or_else(|| crate::wire_err!(Unavailable, "the swarm is not initialised"))?;
    if c.revoked.contains_key(&node.id) {
        crate::fail!(Gone, "node {} {REMOVED}", node.id);
    }
    let (cert, key) = c.signing_ca();
    let ca = ClusterCa::from_pem(&c.cluster_id, cert, key)?;
    let validity = Duration::from_millis(c.cert_expiry_ms);
    let leaf = ca.sign(csr_pem, &node.id, node.role, node.addr, validity)?;
    Ok(match &c.ca_rotation {
        Some(r) => format!("{leaf}{}", r.cross_pem),
        None => leaf,
    })
}

/// This node's new identity: a key made here, certified through `sign`
/// (a manager's, from the node's CSR), with the roots the reply names
/// (else `ca_pem`, the ones it had).
pub async fn renew_identity<F, Fut>(ca_pem: String, sign: F) -> Result<Identity>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<CertReply>>,
{
    let (key_pem, csr_pem) = crate::pki::new_key_and_csr()?;
    let reply = sign(csr_pem).await?;
    Ok(Identity {
        ca_pem: reply.ca_pem.unwrap_or(ca_pem),
        cert_pem: reply.cert_pem,
        key_pem,
    })
}

/// Control addresses of the current voters.
fn manager_addrs(m: &crate::raft::manager::Manager) -> Vec<String> {
    let metrics = m.raft.metrics().borrow().clone();
    let mem = metrics.membership_config.membership();
    mem.voter_ids()
        .filter_map(|v| mem.get_node(&v).map(|n| n.addr.clone()))
        .collect()
}

impl Agent {
    /// `--cert-expiry` at least an hour (Docker's floor; `--min-cert-expiry`
    /// lowers it for tests), at most ten years.
    pub(super) fn check_cert_expiry(&self, ms: u64) -> Result<()> {
        let floor = self.min_cert_expiry.as_millis() as u64;
        if ms < floor || ms > 10 * 365 * 24 * 3600 * 1000 {
            crate::fail!(
                Invalid,
                "--cert-expiry must be between {} and 10 years",
                humantime::format_duration(Duration::from_millis(floor))
            );
        }
        Ok(())
    }

    pub async fn swarm_init(self: &Arc<Self>, req: SwarmInit) -> Result<SwarmInitReply> {
        let mut swarm = self.swarm.lock().await;
        if swarm.is_some() {
            crate::fail!(Conflict, "this node is already part of a swarm");
        }
        let pool = AddrPool {
            base: req
                .default_addr_pool
                .unwrap_or(AddrPool::default().base)
                .trunc(),
            mask_len: req.default_addr_pool_mask_length.unwrap_or(24),
        };
        if pool.mask_len < pool.base.prefix_len() || pool.mask_len > 29 {
            crate::fail!(
                Invalid,
                "--default-addr-pool-mask-length {} does not fit the pool {} (between /{} and /29)",
                pool.mask_len,
                pool.base,
                pool.base.prefix_len()
            );
        }
        let data_path_port = req.data_path_port.unwrap_or(4789);
        if data_path_port < 1024 {
            crate::fail!(Invalid, "--data-path-port must be 1024-65535");
        }
        let rotation_ms = req
            .gossip_key_rotation_ms
            .unwrap_or(self.gossip_key_rotation.as_millis() as u64);
        if rotation_ms < 1000 {
            crate::fail!(Invalid, "--gossip-key-rotation must be at least 1s");
        }
        let cert_expiry_ms = req.cert_expiry_ms.unwrap_or(DEFAULT_CERT_EXPIRY_MS);
        self.check_cert_expiry(cert_expiry_ms)?;
        let addr = req.advertise_addr.unwrap_or(self.info.vtep);
        let control_addr = SocketAddr::new(addr.into(), self.control_port);
        let raft_id = new_raft_id();
        let node_id = new_id();
        // The CA's subject names the cluster; certificates issued later
        // rebuild the issuer name from the same id.
        let cluster_id = new_id();
        let ca = ClusterCa::generate(&cluster_id)?;
        let validity = Duration::from_millis(cert_expiry_ms);
        let (cert_pem, key_pem) = ca.issue(&node_id, Role::Manager, addr, validity)?;
        let identity = Identity {
            ca_pem: ca.cert_pem.clone(),
            cert_pem,
            key_pem,
        };
        identity.save(&self.data_dir)?;
        let tls = LiveTls::new(&identity)?;
        let manager = self
            .start_manager(raft_id, &node_id, control_addr, &tls)
            .await?;
        manager.initialize().await?;
        // The first gossip key; the leader rotates it from here on.
        let first_key = crate::raft::gossip_keys::new_key(1);
        let info = ClusterInfo {
            cluster_id,
            worker_token: JoinToken::generate(&ca.digest()).to_string(),
            manager_token: JoinToken::generate(&ca.digest()).to_string(),
            ca_cert_pem: ca.cert_pem.clone(),
            ca_key_pem: ca.key_pem.clone(),
            pool,
            data_path_port,
            gossip_keys: vec![first_key.clone()],
            gossip_key_rotation_ms: rotation_ms,
            cert_expiry_ms,
            revoked: Default::default(),
            ca_rotation: None,
        };
        expect_ok(
            manager
                .write(Command::ClusterInit { info: info.clone() })
                .await?,
        )?;
        let me = NodeRecord {
            id: node_id.clone(),
            raft_id: Some(raft_id),
            hostname: self.info.node.clone(),
            addr,
            role: Role::Manager,
            availability: Availability::Active,
            labels: Default::default(),
            state: NodeState::Ready,
            ipsec: self.ipsec.support.clone(),
            cert_not_after_ms: None,
            cert_issuer: None,
            version: 0,
        };
        expect_ok(manager.write(Command::NodeAdd { node: me }).await?)?;
        // Docker's ingress network, for the routing mesh.
        let ingress = NetworkSpec {
            name: "ingress".into(),
            subnet: Some(INGRESS_SUBNET.parse().expect("valid")),
            ingress: true,
            ..Default::default()
        };
        expect_ok(
            manager
                .write(Command::NetworkCreate {
                    id: new_id(),
                    spec: ingress,
                    now: crate::clock::now_ms(),
                })
                .await?,
        )?;
        let membership = Membership {
            node_id: node_id.clone(),
            raft_id,
            control_addr,
            role: Role::Manager,
            managers: vec![control_addr.to_string()],
        };
        self.install(&mut swarm, membership, Some(manager), &identity, tls)?;
        // The first manager seals with the key it just made, at once.
        let _ = self.adopt_gossip_keys(vec![first_key], Some(1));
        info!(%node_id, %control_addr, "swarm initialised");
        Ok(SwarmInitReply {
            node_id,
            control_addr: control_addr.to_string(),
            worker_token: info.worker_token,
            manager_token: info.manager_token,
        })
    }

    /// A manager admitting a node: the token's secret decides the role;
    /// the node record goes through the leader; the certificate is signed
    /// here with the cluster CA from the replicated state.
    pub(super) async fn admit(&self, req: JoinRequest) -> Result<JoinReply> {
        let (m, _) = self.manager().await?;
        let st = m.state();
        let cluster = st
            .cluster
            .as_ref()
            .ok_or_else(|| crate::wire_err!(Unavailable, "the swarm is not initialised"))?;
        // The tokens pin the current root (mid-rotation still the old one:
        // they change when the rotation finishes).
        let presented = JoinToken::parse(&req.token)?;
        if presented.ca_digest != crate::pki::digest_of_pem(&cluster.ca_cert_pem)? {
            crate::fail!(Forbidden, "the join token is for another swarm");
        }
        let role = if presented.secret_matches(&JoinToken::parse(&cluster.worker_token)?) {
            Role::Worker
        } else if presented.secret_matches(&JoinToken::parse(&cluster.manager_token)?) {
            Role::Manager
        } else {
            crate::fail!(Forbidden, "invalid join token");
        };
        // A node that left (down) may come back under a new id, as in
        // Docker; a live one may not join twice.
        if let Some(n) = st.nodes.values().find(|n| n.addr == req.addr) {
            if n.state != NodeState::Down || n.role == Role::Manager {
                crate::fail!(
                    Conflict,
                    "a node with address {} is already in the swarm ({})",
                    req.addr,
                    n.hostname
                );
            }
            let rm = Command::NodeRemove {
                id: n.id.clone(),
                now: crate::clock::now_ms(),
            };
            expect_ok(m.write(rm).await?)?;
        }
        let node = NodeRecord {
            id: new_id(),
            raft_id: (role == Role::Manager).then_some(req.raft_id),
            hostname: req.hostname.clone(),
            addr: req.addr,
            role,
            availability: Availability::Active,
            labels: Default::default(),
            state: NodeState::Ready,
            // Its first heartbeat says.
            ipsec: Default::default(),
            cert_not_after_ms: None,
            cert_issuer: None,
            version: 0,
        };
        let cert_pem = sign_for(&st, &node, &req.csr_pem)?;
        expect_ok(m.write(Command::NodeAdd { node: node.clone() }).await?)?;
        info!(node_id = %node.id, hostname = %req.hostname, ?role, "node admitted");
        Ok(JoinReply {
            node_id: node.id,
            role,
            cert_pem,
            ca_pem: st.cluster.as_ref().map(|c| c.trust_bundle()),
            managers: manager_addrs(&m),
        })
    }

    /// Joins the swarm a manager at `remote` belongs to.
    pub async fn swarm_join(self: &Arc<Self>, token: &str, remote: &str) -> Result<JoinReply> {
        let mut swarm = self.swarm.lock().await;
        if swarm.is_some() {
            crate::fail!(Conflict, "this node is already part of a swarm");
        }
        let t = JoinToken::parse(token)?;
        if remote.parse::<SocketAddr>().is_err() {
            crate::fail!(
                Invalid,
                "bad manager address {remote:?} (want IP:PORT, e.g. 198.18.0.1:2377)"
            );
        }
        let pinned = pinned_client(&t.ca_digest)?;
        let ttl = Duration::from_secs(20);
        let (status, ca) = request(&pinned, remote, Method::GET, "/swarm/ca", vec![], ttl)
            .await
            .map_err(|f| {
                if f.pin_mismatch {
                    anyhow!(crate::wire::WireError::forbidden(format!("the manager at {remote} does not hold the CA this token pins (refused in the TLS handshake); refusing to join")))
                } else {
                    anyhow!(f.into_wire())
                }
            })?;
        if !status.is_success() {
            crate::fail!(Unavailable, "{remote} is not a swarm manager");
        }
        // The roots the swarm trusts (two mid-rotation): the token's must
        // be among them.
        let ca = String::from_utf8_lossy(&ca).into_owned();
        if !digests_of_bundle(&ca)?.contains(&t.ca_digest) {
            crate::fail!(
                Forbidden,
                "the manager at {remote} does not hold the CA this token pins; refusing to join"
            );
        }
        let control_addr = SocketAddr::new(self.info.vtep.into(), self.control_port);
        let raft_id = new_raft_id();
        // The key is made here and stays here; the manager signs its CSR.
        let (key_pem, csr_pem) = crate::pki::new_key_and_csr()?;
        let req = JoinRequest {
            token: token.to_string(),
            hostname: self.info.node.clone(),
            addr: self.info.vtep,
            raft_id,
            control_addr,
            csr_pem,
        };
        let reply: JoinReply = call(&pinned, remote, "/swarm/join", &req, ttl)
            .await
            .map_err(|f| {
                // The manager's kind (a bad token is forbidden, a taken
                // address a conflict) reaches the CLI unchanged.
                let mut e = f.into_wire();
                e.message = format!("{remote} refused the join: {}", e.message);
                e
            })?;
        let identity = Identity {
            ca_pem: reply.ca_pem.clone().unwrap_or(ca),
            cert_pem: reply.cert_pem.clone(),
            key_pem,
        };
        identity.save(&self.data_dir)?;
        let tls = LiveTls::new(&identity)?;
        let manager = if reply.role == Role::Manager {
            let _ = std::fs::remove_dir_all(self.data_dir.join("raft"));
            let m = self
                .start_manager(raft_id, &reply.node_id, control_addr, &tls)
                .await?;
            let mut addrs = reply.managers.clone();
            addrs.push(remote.to_string());
            let add = LeaderOp::AddVoter {
                raft_id,
                addr: control_addr.to_string(),
            };
            if let Err(e) = to_leader(&tls.client(), &addrs, &add).await {
                let _ = m.shutdown().await;
                self.forget_swarm();
                bail!("joined as a manager, but the leader could not add this node to Raft: {e:#}");
            }
            Some(m)
        } else {
            None
        };
        let membership = Membership {
            node_id: reply.node_id.clone(),
            raft_id,
            control_addr,
            role: reply.role,
            managers: reply.managers.clone(),
        };
        self.install(&mut swarm, membership, manager, &identity, tls)?;
        info!(node_id = %reply.node_id, role = ?reply.role, "joined the swarm");
        Ok(reply)
    }
}

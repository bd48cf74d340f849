//! Containers attached to attachable networks (CNI, the Docker driver):
//! their addresses come from the same allocator as tasks' (the lowest free
//! host address, decided while the command is applied), are held while the
//! attachment exists, and are freed when it is detached or its node is
//! removed. Docker's swarmkit does the same with "network attachment"
//! tasks; here an attachment is its own small record, since it has no
//! service, spec or lifecycle to schedule.

use super::state::{err, put, Change, ClusterState};
use crate::wire::{AttachRequest, Attachment, Command, CommandResult, NodeState, WireError};

fn row(id: &str) -> String {
    format!("attachment/{id}")
}

/// Container ids and interface names as runtimes make them; bounded so a
/// caller cannot grow the replicated state with junk.
fn valid_part(what: &str, s: &str, max: usize) -> Result<(), WireError> {
    let ok = !s.is_empty()
        && s.len() <= max
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(WireError::invalid(format!(
            "invalid {what} {s:?}: use 1-{max} letters, digits, '-', '_' or '.'"
        )))
    }
}

impl ClusterState {
    /// Checks `req` from `node_id` and picks its address. An attachment
    /// that exists already on the same network is returned as it is (a
    /// runtime retrying ADD gets the same answer).
    pub fn allocate_attachment(
        &self,
        node_id: &str,
        req: &AttachRequest,
    ) -> Result<Attachment, WireError> {
        valid_part("container id", &req.container_id, 128)?;
        valid_part("interface name", &req.ifname, 15)?;
        if !req.name.is_empty() {
            valid_part("container name", &req.name, 128)?;
        }
        let node = self
            .nodes
            .get(node_id)
            .ok_or_else(|| WireError::gone(format!("node {node_id} is not in the swarm")))?;
        let net = self
            .network_by_key(&req.network)
            .ok_or_else(|| WireError::not_found(format!("network {} not found", req.network)))?;
        if net.spec.ingress || !net.spec.attachable {
            return Err(WireError::invalid(format!(
                "network {} is not attachable (create it with `network create --attachable`)",
                net.spec.name
            )));
        }
        if net.spec.encrypted {
            if let Some(why) = node.ipsec.why_not() {
                return Err(WireError::unavailable(format!(
                    "network {} is encrypted and node {} cannot encrypt: {why}",
                    net.spec.name, node.hostname
                )));
            }
        }
        let id = Attachment::key(node_id, &req.container_id, &req.ifname);
        if let Some(a) = self.attachments.get(&id) {
            if a.network_id == net.id && req.ip.is_none_or(|ip| ip == a.addr) {
                return Ok(a.clone());
            }
            return Err(WireError::conflict(format!(
                "container {} already has {} on network {} ({})",
                req.container_id,
                req.ifname,
                self.networks
                    .get(&a.network_id)
                    .map_or(a.network_id.as_str(), |n| n.spec.name.as_str()),
                a.addr
            )));
        }
        let addr = match req.ip {
            Some(ip) => {
                if !net.subnet.contains(&ip)
                    || ip == net.subnet.network()
                    || ip == net.subnet.broadcast()
                {
                    return Err(WireError::invalid(format!(
                        "{ip} is not a host address of network {} ({})",
                        net.spec.name, net.subnet
                    )));
                }
                if self.used_addrs(&net.id).contains(&ip) {
                    return Err(WireError::conflict(format!(
                        "{ip} is in use on network {}",
                        net.spec.name
                    )));
                }
                ip
            }
            None => self
                .free_addr(&net.id, &Default::default())
                .ok_or_else(|| {
                    WireError::unavailable(format!(
                        "network {} has no free address left",
                        net.spec.name
                    ))
                })?,
        };
        Ok(Attachment {
            id,
            node_id: node_id.into(),
            container_id: req.container_id.clone(),
            ifname: req.ifname.clone(),
            name: req.name.clone(),
            network_id: net.id.clone(),
            addr,
            created_at: 0,
            version: 0,
        })
    }

    /// Applies an attachment command (see `ClusterState::apply`).
    pub(super) fn apply_attachment(
        &mut self,
        index: u64,
        cmd: Command,
    ) -> (CommandResult, Vec<Change>) {
        match cmd {
            Command::AttachmentCreate { node_id, req, now } => {
                if self
                    .nodes
                    .get(&node_id)
                    .is_some_and(|n| n.state == NodeState::Down)
                {
                    return err(WireError::unavailable(format!("node {node_id} is down")));
                }
                match self.allocate_attachment(&node_id, &req) {
                    Ok(a) if a.version != 0 => (CommandResult::Attachments(vec![a]), vec![]),
                    Ok(mut a) => {
                        a.created_at = now;
                        a.version = index;
                        self.attachments.insert(a.id.clone(), a.clone());
                        let mut changes = vec![put(row(&a.id), &a)];
                        // Its node balances the network's VIPs for it (IPVS).
                        changes.extend(self.ensure_lb_addrs(&node_id, &[a.network_id.clone()]));
                        (CommandResult::Attachments(vec![a]), changes)
                    }
                    Err(e) => err(e),
                }
            }
            Command::AttachmentRemove { node_id, req } => {
                let gone = self.drop_attachments(|a| {
                    a.node_id == node_id
                        && a.container_id == req.container_id
                        && req.ifname.as_ref().is_none_or(|i| *i == a.ifname)
                });
                // Removing what is not there is not an error: DEL is
                // idempotent in CNI and Docker alike.
                let (gone, mut changes) = gone;
                if !gone.is_empty() {
                    changes.extend(self.prune_lb_addrs());
                }
                (CommandResult::Attachments(gone), changes)
            }
            other => unreachable!("not an attachment command: {other:?}"),
        }
    }

    /// Removes the attachments `gone` selects: (them, the changes).
    pub(super) fn drop_attachments(
        &mut self,
        gone: impl Fn(&Attachment) -> bool,
    ) -> (Vec<Attachment>, Vec<Change>) {
        let ids: Vec<String> = self
            .attachments
            .values()
            .filter(|a| gone(a))
            .map(|a| a.id.clone())
            .collect();
        let mut out = (vec![], vec![]);
        for id in ids {
            if let Some(a) = self.attachments.remove(&id) {
                out.1.push(Change::Delete(row(&id)));
                out.0.push(a);
            }
        }
        out
    }

    /// The attachments of one node.
    pub fn attachments_of(&self, node_id: &str) -> Vec<&Attachment> {
        self.attachments
            .values()
            .filter(|a| a.node_id == node_id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{AddrPool, Availability, DetachRequest, NetworkSpec, NodeRecord, Role};

    fn state() -> ClusterState {
        let mut st = ClusterState::default();
        st.nodes.insert(
            "n1".into(),
            NodeRecord {
                ipsec: Default::default(),
                cert_not_after_ms: None,
                cert_issuer: None,
                id: "n1".into(),
                raft_id: None,
                hostname: "n1".into(),
                addr: "198.18.0.1".parse().unwrap(),
                role: Role::Worker,
                availability: Availability::Active,
                labels: Default::default(),
                state: NodeState::Ready,
                version: 0,
            },
        );
        for (id, name, attachable) in [("a", "att", true), ("p", "plain", false)] {
            let spec = NetworkSpec {
                name: name.into(),
                attachable,
                ..Default::default()
            };
            let n = st
                .allocate_network(id, &spec, &AddrPool::default())
                .unwrap();
            st.networks.insert(id.into(), n);
        }
        st
    }

    fn req(container: &str, ip: Option<&str>) -> AttachRequest {
        AttachRequest {
            network: "att".into(),
            container_id: container.into(),
            ifname: "eth0".into(),
            name: format!("{container}-name"),
            ip: ip.map(|i| i.parse().unwrap()),
        }
    }

    fn create(st: &mut ClusterState, i: u64, r: AttachRequest) -> CommandResult {
        st.apply(
            i,
            Command::AttachmentCreate {
                node_id: "n1".into(),
                req: r,
                now: 7,
            },
        )
        .0
    }

    fn addr(r: &CommandResult) -> String {
        match r {
            CommandResult::Attachments(a) => a[0].addr.to_string(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn addresses_come_from_the_allocator_are_kept_and_freed() {
        let mut st = state();
        let a = create(&mut st, 1, req("c1", None));
        assert_eq!(addr(&a), "10.0.0.2");
        // ADD again: the same answer, nothing written.
        let (again, changes) = st.apply(
            2,
            Command::AttachmentCreate {
                node_id: "n1".into(),
                req: req("c1", None),
                now: 8,
            },
        );
        assert_eq!((addr(&again), changes.len()), ("10.0.0.2".into(), 0));
        // A wanted address is honoured when free, refused when held.
        assert_eq!(
            addr(&create(&mut st, 3, req("c2", Some("10.0.0.9")))),
            "10.0.0.9"
        );
        let taken = create(&mut st, 4, req("c3", Some("10.0.0.9")));
        assert!(
            matches!(taken, CommandResult::Error(ref e) if e.message.contains("in use")),
            "{taken:?}"
        );
        let outside = create(&mut st, 5, req("c3", Some("10.9.9.9")));
        assert!(
            matches!(outside, CommandResult::Error(ref e) if e.message.contains("not a host address"))
        );
        // Network removal waits for the containers.
        let (busy, _) = st.apply(6, Command::NetworkRemove { id: "a".into() });
        assert!(
            matches!(busy, CommandResult::Error(ref e) if e.message.contains("attached")),
            "{busy:?}"
        );
        // DEL frees it (twice is fine), and the next container gets it.
        let rm = Command::AttachmentRemove {
            node_id: "n1".into(),
            req: DetachRequest {
                container_id: "c1".into(),
                ifname: None,
            },
        };
        let (r, ch) = st.apply(7, rm.clone());
        assert!(matches!(r, CommandResult::Attachments(ref v) if v.len() == 1));
        assert_eq!(ch.len(), 1);
        let (r, ch) = st.apply(8, rm);
        assert!(matches!(r, CommandResult::Attachments(ref v) if v.is_empty()));
        assert!(ch.is_empty());
        assert_eq!(addr(&create(&mut st, 9, req("c4", None))), "10.0.0.2");
        // The node's removal frees the rest.
        st.apply(
            10,
            Command::NodeRemove {
                id: "n1".into(),
                now: 1,
            },
        );
        assert!(st.attachments.is_empty());
    }

    #[test]
    fn plain_networks_and_junk_are_refused() {
        let st = state();
        let mut r = req("c1", None);
        r.network = "plain".into();
        let e = st.allocate_attachment("n1", &r).unwrap_err();
        assert!(e.message.contains("not attachable"), "{e}");
        let e = st
            .allocate_attachment("n1", &req("bad id!", None))
            .unwrap_err();
        assert!(e.message.contains("invalid container id"), "{e}");
        let e = st
            .allocate_attachment("stranger", &req("c1", None))
            .unwrap_err();
        assert!(e.message.contains("not in the swarm"), "{e}");
        let mut r = req("c1", None);
        r.network = "nope".into();
        assert!(st
            .allocate_attachment("n1", &r)
            .unwrap_err()
            .message
            .contains("not found"));
    }
}

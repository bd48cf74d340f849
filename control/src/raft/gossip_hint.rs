//! Where a node with no gossip peer asks to be let in, sent in each
//! heartbeat reply: a few Ready nodes' addresses besides the managers'.
//!
//! The managers alone are not enough: a swarm's only manager, restarted
//! slower than the failure detector, has only itself to ask, and its peers
//! never ask a new process in (SWIM addresses a member by process). Its
//! remembered members (`gossip/remembered.rs`) usually do it; this covers
//! a node that remembers none (its first start on a version without them).

use std::net::Ipv4Addr;

use super::state::ClusterState;
use crate::wire::NodeState;

/// How many addresses a reply carries.
pub const HINTS: usize = 8;

impl ClusterState {
    /// Up to `HINTS` Ready nodes other than `asker`, read from a random
    /// place in the node table on: a few lookups, not a walk of a
    /// 2,000-node table on every heartbeat of every node.
    pub fn gossip_hint(&self, asker: &str) -> Vec<Ipv4Addr> {
        // A random id: node ids are random (`new_id`), so the nodes
        // after it are any nodes.
        let start = super::state::new_id();
        self.nodes
            .range(start.clone()..)
            .chain(self.nodes.range(..start))
            // Not a walk of the table when few are Ready.
            .take(HINTS * 4)
            .filter(|(id, n)| id.as_str() != asker && n.state == NodeState::Ready)
            .map(|(_, n)| n.addr)
            .take(HINTS)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::wire::{Availability, NodeRecord, Role};

    fn node(i: u32, state: NodeState) -> NodeRecord {
        NodeRecord {
            ipsec: Default::default(),
            cert_not_after_ms: None,
            cert_issuer: None,
            id: crate::raft::state::new_id(),
            raft_id: None,
            hostname: format!("h{i}"),
            addr: Ipv4Addr::from(0xC612_0000 + i),
            role: Role::Worker,
            availability: Availability::Active,
            labels: Default::default(),
            state,
            version: 0,
        }
    }

    #[test]
    fn a_few_ready_nodes_other_than_the_asker_from_anywhere_in_the_table() {
        let mut st = ClusterState::default();
        let asker = node(0, NodeState::Ready);
        st.nodes.insert(asker.id.clone(), asker.clone());
        assert!(st.gossip_hint(&asker.id).is_empty(), "nobody else");
        let down = node(1, NodeState::Down);
        st.nodes.insert(down.id.clone(), down.clone());
        let other = node(2, NodeState::Ready);
        st.nodes.insert(other.id.clone(), other.clone());
        for _ in 0..20 {
            assert_eq!(st.gossip_hint(&asker.id), [other.addr]);
        }
        for i in 3..2000 {
            let n = node(i, NodeState::Ready);
            st.nodes.insert(n.id.clone(), n);
        }
        let mut seen = BTreeSet::new();
        for _ in 0..50 {
            let h = st.gossip_hint(&asker.id);
            assert_eq!(h.len(), HINTS);
            assert!(!h.contains(&asker.addr) && !h.contains(&down.addr));
            seen.extend(h);
        }
        // Spread over the table, not the same first few every time.
        assert!(seen.len() > 100, "{}", seen.len());
    }
}

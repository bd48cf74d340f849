//! `shoal debug flows` on a manager: every node's flow log (`agent/flows.rs`)
//! asked through the leader and the node sessions, like `service logs`, and
//! merged in time order.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::agent::Agent;
use crate::wire::FlowsPage;
use crate::wire::LeaderOp;
use crate::wire::NodeState;
use crate::wire::{FlowAsk, FlowQuery};

/// How long the answers are waited for (a node answers within two of its
/// 500 ms heartbeats).
const ANSWER_WAIT: Duration = Duration::from_secs(3);

impl Agent {
    pub async fn cluster_flows(&self, q: FlowQuery) -> Result<FlowsPage> {
        let (m, _) = self.manager().await?;
        let st = m.state();
        if let Some(s) = &q.service {
            if st.service_by_key(s).is_none() {
                crate::fail!(NotFound, "service {s} not found");
            }
        }
        let mut page = FlowsPage::default();
        let mut asks = vec![];
        let mut waiting = BTreeMap::new();
        for n in st.nodes.values() {
            if n.state == NodeState::Down {
                page.silent.push(format!("{} (node down)", n.hostname));
                continue;
            }
            asks.push((
                n.id.clone(),
                FlowAsk {
                    id: 0,
                    query: q.clone(),
                },
            ));
            waiting.insert(n.id.clone(), n.hostname.clone());
        }
        let id = m.leader_op(LeaderOp::FlowAsk { asks }).await?.log_id;
        let t0 = Instant::now();
        while !waiting.is_empty() && t0.elapsed() < ANSWER_WAIT {
            tokio::time::sleep(Duration::from_millis(100)).await;
            for a in m.leader_op(LeaderOp::FlowCollect { id }).await?.flows {
                let Some(host) = waiting.remove(&a.node) else {
                    continue;
                };
                if a.off {
                    page.off.push(host.clone());
                }
                page.evicted.insert(host, a.evicted);
                page.flows.extend(a.flows);
            }
        }
        for node in waiting.into_values() {
            page.silent.push(format!(
                "{node} (no answer within {} s)",
                ANSWER_WAIT.as_secs()
            ));
        }
        page.flows.sort_by_key(|f| f.time_ms);
        Ok(page)
    }
}

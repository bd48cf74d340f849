//! `service logs [-f] [--tail N] [-t]` on a manager: each task's log stays
//! on its node; the ask goes to the leader, rides the node's next session
//! heartbeat reply, and the lines come back with the heartbeat after (see
//! `raft/logs.rs`). Following is the same ask repeated from the cursors of
//! the last page, so the manager keeps no state per reader.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::agent::Agent;
use crate::wire::LeaderOp;
use crate::wire::LogAsk;
use crate::wire::NodeState;
use crate::wire::TaskRecord;
use crate::wire::{LogsPage, LogsQuery};

/// How long a page waits for the nodes' answers.
const ANSWER_WAIT: Duration = Duration::from_secs(5);

impl Agent {
    pub async fn service_logs(&self, key: &str, q: LogsQuery) -> Result<LogsPage> {
        let (m, _) = self.manager().await?;
        let st = m.state();
        let s = st
            .service_by_key(key)
            .ok_or_else(|| crate::wire_err!(NotFound, "service {key} not found"))?;
        let mut tasks: Vec<&TaskRecord> = st
            .tasks
            .values()
            .filter(|t| t.service_id == s.id && t.node_id.is_some())
            .collect();
        tasks.sort_by_key(|t| (t.slot, t.created_at));
        let node_of = |t: &TaskRecord| t.node_id.as_ref().and_then(|n| st.nodes.get(n));
        let label = |t: &TaskRecord| {
            let host = node_of(t).map(|n| n.hostname.clone()).unwrap_or_default();
            format!("{}@{host}", t.name())
        };
        let mut page = LogsPage::default();
        let mut asks = vec![];
        for t in &tasks {
            if node_of(t).is_some_and(|n| n.state == NodeState::Down) {
                page.silent.push(format!("{} (node down)", label(t)));
                continue;
            }
            asks.push((
                t.node_id.clone().unwrap_or_default(),
                LogAsk {
                    id: 0,
                    task_id: t.id.clone(),
                    tail: q.tail,
                    from: q.cursors.get(&t.id).copied(),
                    timestamps: q.timestamps,
                },
            ));
        }
        let want = asks.len();
        let id = m.leader_op(LeaderOp::LogAsk { asks }).await?.log_id;
        let mut got = BTreeMap::new();
        let t0 = Instant::now();
        while got.len() < want && t0.elapsed() < ANSWER_WAIT {
            tokio::time::sleep(Duration::from_millis(100)).await;
            for l in m.leader_op(LeaderOp::LogCollect { id }).await?.logs {
                got.insert(l.task_id.clone(), l);
            }
        }
        page.cursors = q.cursors;
        for t in tasks {
            let Some(l) = got.remove(&t.id) else {
                if !page.silent.iter().any(|s| s.starts_with(&label(t))) {
                    page.silent
                        .push(format!("{} (no answer within 5 s)", label(t)));
                }
                continue;
            };
            let prefix = label(t);
            for line in l.lines {
                page.lines.push(match line.split_once(' ') {
                    Some((ts, text)) if q.timestamps => format!("{ts} {prefix}    | {text}"),
                    _ => format!("{prefix}    | {line}"),
                });
            }
            page.more |= l.more;
            page.cursors.insert(t.id.clone(), l.cursor);
        }
        Ok(page)
    }
}

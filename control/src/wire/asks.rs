//! Asks that ride the node sessions (`service logs`, `debug flows`): what managers ask, what nodes answer, and the pages the CLI reads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Which flows: of one service (by name), newer than `since_ms` (Unix ms),
/// at most `limit` per node (the newest).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowQuery {
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub since_ms: Option<u64>,
    #[serde(default)]
    pub limit: usize,
}

/// One flow as a node saw it: a task's new connection to a VIP, a client's
/// to a published port, or a dropped packet, with the names the node knew
/// then.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// Unix ms.
    pub time_ms: u64,
    /// The node that saw it.
    pub node: String,
    /// `vip`, `mesh` or `drop`.
    pub kind: String,
    /// `forwarded` or `dropped`.
    pub verdict: String,
    /// Why it was dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `tcp`, `udp`, `icmp` or the protocol number.
    pub proto: String,
    /// `ip:port` of the client.
    pub client: String,
    /// The client's task, when it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_task: Option<String>,
    /// The service's address the client used: `VIP:port`, or the node's
    /// `address:published` for the mesh.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// `ip:port` of the task picked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_task: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowAsk {
    #[serde(default)]
    pub id: u64,
    pub query: FlowQuery,
}

/// A node's answer: its matching flows (oldest first), and how many flows
/// its log has let go since it started (the log keeps the newest).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowAnswer {
    pub id: u64,
    /// The answering node's id.
    pub node: String,
    pub flows: Vec<FlowRecord>,
    #[serde(default)]
    pub evicted: u64,
    /// The node keeps no flow log (`--flow-log-size 0`).
    #[serde(default)]
    pub off: bool,
}
/// Where a reader of a task log stands: the log's rotation generation and
/// the byte offset in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogCursor {
    pub gen: u64,
    pub offset: u64,
}

/// "Send task `task_id`'s lines from `from`, or its last `tail` lines
/// (0: all) without a cursor."
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogAsk {
    #[serde(default)]
    pub id: u64,
    pub task_id: String,
    #[serde(default)]
    pub tail: u64,
    #[serde(default)]
    pub from: Option<LogCursor>,
    #[serde(default)]
    pub timestamps: bool,
}

/// A node's answer to one ask; `cursor` is where the next ask starts,
/// `more` says the answer was cut at its size limit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLines {
    pub id: u64,
    pub task_id: String,
    pub lines: Vec<String>,
    #[serde(default)]
    pub cursor: LogCursor,
    #[serde(default)]
    pub more: bool,
}
/// One page of a service's logs.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LogsQuery {
    /// Last N lines of each task without a cursor (0: all).
    #[serde(default)]
    pub tail: u64,
    #[serde(default)]
    pub timestamps: bool,
    /// Per task id: where the previous page ended.
    #[serde(default)]
    pub cursors: BTreeMap<String, LogCursor>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LogsPage {
    /// `NAME@NODE    | line` (timestamp first with `timestamps`), Docker's
    /// shape, in task order.
    pub lines: Vec<String>,
    pub cursors: BTreeMap<String, LogCursor>,
    /// Some answer was cut at its size limit: ask again at once.
    pub more: bool,
    /// Tasks whose node did not answer: `NAME@NODE (why)`.
    pub silent: Vec<String>,
}
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FlowsPage {
    /// Every node's matching flows, oldest first.
    pub flows: Vec<FlowRecord>,
    /// Nodes that did not answer: `NODE (why)`.
    pub silent: Vec<String>,
    /// Per node that answered: flows its log has let go (it keeps the
    /// newest), so a reader knows older history is incomplete.
    pub evicted: BTreeMap<String, u64>,
    /// Nodes that keep no flow log.
    pub off: Vec<String>,
}

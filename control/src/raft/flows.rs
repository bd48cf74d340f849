//! `shoal debug flows` on the wire: the query a manager sends every node
//! through the session asks (`desk.rs`), and the flows that come back from
//! each node's flow log (`agent/flows.rs`).

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

impl super::desk::Numbered for FlowAsk {
    fn set_id(&mut self, id: u64) {
        self.id = id;
    }
}

impl super::desk::Numbered for FlowAnswer {
    fn set_id(&mut self, id: u64) {
        self.id = id;
    }
    fn id(&self) -> u64 {
        self.id
    }
}

/// The flow asks waiting for their nodes, and the answers.
pub type FlowDesk = super::desk::Desk<FlowAsk, FlowAnswer>;

//! Tasks in the replicated state: records, their states, what nodes report and what they are assigned.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::*;

/// swarmkit's task states, in the order a task moves through them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    New,
    Pending,
    Assigned,
    Accepted,
    Preparing,
    Starting,
    Running,
    Complete,
    Shutdown,
    Failed,
    Rejected,
    Orphaned,
}

impl TaskState {
    /// The state's word on the wire: `running`.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::New => "new",
            TaskState::Pending => "pending",
            TaskState::Assigned => "assigned",
            TaskState::Accepted => "accepted",
            TaskState::Preparing => "preparing",
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Complete => "complete",
            TaskState::Shutdown => "shutdown",
            TaskState::Failed => "failed",
            TaskState::Rejected => "rejected",
            TaskState::Orphaned => "orphaned",
        }
    }

    /// Finished: the process is gone (or never came).
    pub fn is_terminal(self) -> bool {
        self >= TaskState::Complete
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    Running,
    Shutdown,
}

impl DesiredState {
    /// The state's word on the wire: `running`.
    pub fn as_str(self) -> &'static str {
        match self {
            DesiredState::Running => "running",
            DesiredState::Shutdown => "shutdown",
        }
    }
}

/// A task's address on one network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskAddr {
    pub network_id: String,
    pub addr: Ipv4Addr,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub id: String,
    pub service_id: String,
    pub service_name: String,
    /// Replica slot (1..N); 0 for global tasks (one per node).
    pub slot: u64,
    pub node_id: Option<String>,
    pub desired: DesiredState,
    pub state: TaskState,
    /// Why it is in this state (a scheduling refusal, an exit code).
    pub err: Option<String>,
    pub exit_code: Option<i32>,
    pub networks: Vec<TaskAddr>,
    pub created_at: u64,
    /// When `state` last changed (ms since the epoch).
    pub state_at: u64,
    pub version: u64,
    /// What it runs (its service's spec when it was made).
    #[serde(default)]
    pub spec: TaskSpec,
}

impl TaskRecord {
    /// Docker's task name: `SERVICE.SLOT.ID` (global: `SERVICE.NODEID.ID`).
    pub fn name(&self) -> String {
        let slot = if self.slot == 0 {
            self.node_id.clone().unwrap_or_default()
        } else {
            self.slot.to_string()
        };
        format!("{}.{}.{}", self.service_name, slot, self.id)
    }

    /// `web.1` (or `web.NODEID` for global tasks), as `service ps` shows.
    pub fn short_name(&self) -> String {
        if self.slot == 0 {
            format!(
                "{}.{}",
                self.service_name,
                self.node_id.clone().unwrap_or_default()
            )
        } else {
            format!("{}.{}", self.service_name, self.slot)
        }
    }
}

/// A new task the orchestrator asks for (addresses are allocated when the
/// command is applied).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTask {
    pub id: String,
    pub service_id: String,
    pub slot: u64,
    pub node_id: Option<String>,
    /// Why it has no node, if it has none.
    pub err: Option<String>,
}

/// A node's report of one of its tasks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskReport {
    pub id: String,
    pub state: TaskState,
    pub err: Option<String>,
    pub exit_code: Option<i32>,
}

/// A network as a node needs it to attach a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignedNet {
    pub name: String,
    pub vni: u32,
    pub subnet: ipnet::Ipv4Net,
    pub gateway: Ipv4Addr,
    pub addr: Ipv4Addr,
    pub aliases: Vec<String>,
    /// The service's VIP on this network.
    pub vip: Option<Ipv4Addr>,
    /// This node's balancer address on the network (IPVS mode).
    #[serde(default)]
    pub lb_addr: Option<Ipv4Addr>,
    #[serde(default)]
    pub encrypted: bool,
}

/// What a node is told about one of its tasks at each heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub task: TaskRecord,
    pub command: Vec<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub stop_grace_ms: u64,
    pub networks: Vec<AssignedNet>,
    #[serde(default)]
    pub health: Option<HealthSpec>,
    /// Ports the service publishes in host mode: on this node, straight to
    /// this task.
    #[serde(default)]
    pub host_ports: Vec<PortSpec>,
}
/// A task as this node runs it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct LocalTask {
    pub id: String,
    pub name: String,
    pub short_name: String,
    pub state: TaskState,
    pub pid: Option<u32>,
    pub netns: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_order_and_words() {
        assert!(TaskState::Running < TaskState::Complete);
        assert!(TaskState::Failed.is_terminal() && !TaskState::Running.is_terminal());
        assert_eq!(
            serde_json::to_string(&TaskState::Running).unwrap(),
            "\"running\""
        );
    }

    #[test]
    fn as_str_is_the_wire_word() {
        fn word<T: Serialize>(v: T) -> String {
            serde_json::to_value(v)
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        }
        use TaskState::*;
        for s in [
            New, Pending, Assigned, Accepted, Preparing, Starting, Running, Complete, Shutdown,
            Failed, Rejected, Orphaned,
        ] {
            assert_eq!(s.as_str(), word(s));
        }
        for d in [DesiredState::Running, DesiredState::Shutdown] {
            assert_eq!(d.as_str(), word(d));
        }
        use UpdateState as U;
        for u in [
            U::Updating,
            U::Paused,
            U::Completed,
            U::RollbackStarted,
            U::RollbackPaused,
            U::RollbackCompleted,
        ] {
            assert_eq!(u.as_str(), word(u));
        }
        for m in [EndpointMode::Vip, EndpointMode::Dnsrr] {
            assert_eq!(m.as_str(), word(m));
        }
        for r in [Role::Manager, Role::Worker] {
            assert_eq!(r.as_str(), word(r));
        }
    }
}

//! Docker's JSON shapes, field for field: what `inspect` prints (whole
//! objects) and what `ls`/`ps --format json` print (one row a line, the
//! table's columns under Docker's names, as `--format '{{json .}}'` does),
//! so scripts written for Docker read Shoal's output unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::*;

/// `network inspect`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkInspect {
    pub name: String,
    pub id: String,
    pub created: String,
    pub scope: String,
    pub driver: String,
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: bool,
    #[serde(rename = "IPAM")]
    pub ipam: Ipam,
    pub internal: bool,
    pub attachable: bool,
    pub ingress: bool,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Ipam {
    pub driver: String,
    pub config: Vec<IpamConfig>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamConfig {
    pub subnet: String,
    pub gateway: String,
}

/// `service inspect`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceInspect {
    #[serde(rename = "ID")]
    pub id: String,
    pub version: Version,
    pub created_at: String,
    pub updated_at: String,
    pub spec: ServiceSpecView,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_spec: Option<ServiceSpecView>,
    pub endpoint: EndpointView,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_status: Option<UpdateStatusView>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Version {
    pub index: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointView {
    pub spec: EndpointSpecMode,
    pub ports: Vec<PortView>,
    #[serde(rename = "VirtualIPs")]
    pub virtual_ips: Vec<VirtualIp>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointSpecMode {
    pub mode: EndpointMode,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VirtualIp {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// `10.0.1.2/24`.
    pub addr: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortView {
    pub protocol: Protocol,
    pub target_port: u16,
    pub published_port: u16,
    pub publish_mode: PublishMode,
}

impl From<&PortSpec> for PortView {
    fn from(p: &PortSpec) -> Self {
        Self {
            protocol: p.protocol,
            target_port: p.target,
            published_port: p.published,
            publish_mode: p.mode,
        }
    }
}

/// `UpdateStatus`, with Shoal's progress beside Docker's fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateStatusView {
    pub state: UpdateState,
    pub started_at: String,
    pub completed_at: Option<String>,
    pub message: String,
    /// How many of the live tasks run the current spec.
    pub progress: UpdateProgress,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateProgress {
    pub updated: usize,
    pub total: usize,
}

/// Docker's ServiceSpec.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceSpecView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub task_template: TaskTemplate,
    pub mode: ModeView,
    pub update_config: UpdateConfigView,
    pub rollback_config: UpdateConfigView,
    pub endpoint_spec: EndpointSpecView,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskTemplate {
    pub container_spec: ContainerSpec,
    pub restart_policy: RestartPolicyView,
    pub placement: Placement,
    pub networks: Vec<NetworkAttachmentView>,
    pub force_update: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerSpec {
    pub command: Vec<String>,
    pub env: Vec<String>,
    pub dir: Option<String>,
    /// Nanoseconds, as Docker.
    pub stop_grace_period: u64,
    pub healthcheck: Option<HealthSpec>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RestartPolicyView {
    pub condition: RestartCondition,
    /// Nanoseconds.
    pub delay: u64,
    pub max_attempts: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Placement {
    pub constraints: Vec<String>,
    pub preferences: Vec<String>,
    pub max_replicas: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkAttachmentView {
    /// The network's id where known, else as the spec gave it.
    pub target: String,
    pub aliases: Vec<String>,
}

/// `{"Replicated": {"Replicas": 3}}` or `{"Global": {}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ModeView {
    Replicated {
        #[serde(rename = "Replicas")]
        replicas: u64,
    },
    Global {},
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateConfigView {
    pub parallelism: u64,
    /// Nanoseconds.
    pub delay: u64,
    pub failure_action: FailureAction,
    /// Nanoseconds.
    pub monitor: u64,
    pub max_failure_ratio: f64,
    pub order: UpdateOrder,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointSpecView {
    pub mode: EndpointMode,
    pub ports: Vec<PortView>,
}

/// The API's `service ls` row: Docker's row (with the whole id) and the
/// labels a stack filters on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRow {
    #[serde(flatten)]
    pub row: ServiceLsRow,
    #[serde(default, rename = "Labels")]
    pub labels: BTreeMap<String, String>,
}

/// `inspect TASK` / `/v1/tasks`: a task, Docker's fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskInspect {
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    pub service_name: String,
    pub slot: u64,
    #[serde(rename = "NodeID")]
    pub node_id: Option<String>,
    /// The node's hostname.
    pub node: Option<String>,
    pub desired_state: DesiredState,
    pub status: TaskStatusView,
    pub created_at: String,
    pub spec: TaskSpecView,
    pub networks_attachments: Vec<TaskAttachmentView>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskStatusView {
    pub state: TaskState,
    pub timestamp: String,
    /// The same time in ms since the epoch (for `N seconds ago`).
    pub timestamp_ms: u64,
    pub err: Option<String>,
    pub container_status: ContainerStatus,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerStatus {
    pub exit_code: Option<i32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskSpecView {
    pub container_spec: TaskContainerSpec,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskContainerSpec {
    pub command: Vec<String>,
    pub env: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskAttachmentView {
    pub network: AttachedNetwork,
    /// `10.0.1.5/24`.
    pub addresses: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AttachedNetwork {
    #[serde(rename = "ID")]
    pub id: String,
    pub spec: AttachedNetworkSpec,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AttachedNetworkSpec {
    pub name: Option<String>,
}

/// `node inspect`: Docker's node object, the fields Shoal has.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeInspect {
    #[serde(rename = "ID")]
    pub id: String,
    pub version: Version,
    pub spec: NodeSpecView,
    pub description: NodeDescription,
    pub status: NodeStatusView,
    /// `null` for a worker, as Docker.
    pub manager_status: Option<ManagerStatusView>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeSpecView {
    pub labels: BTreeMap<String, String>,
    pub role: Role,
    pub availability: Availability,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeDescription {
    pub hostname: String,
    /// Docker's TLS section, with the certificate's expiry (RFC 3339; as
    /// the node's heartbeat last said).
    #[serde(rename = "TLSInfo", default)]
    pub tls_info: TlsInfoView,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TlsInfoView {
    #[serde(default)]
    pub cert_not_after: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeStatusView {
    pub state: NodeState,
    pub addr: std::net::Ipv4Addr,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ManagerStatusView {
    pub leader: bool,
    /// `reachable` or `unreachable`.
    pub reachability: String,
    /// The control address, `IP:2377`.
    pub addr: String,
}

// The rows below are what the list commands print with `--format json`:
// one object a line, the table's columns under Docker's names and with the
// values the table shows (capitalised states, `N seconds ago`, short ids
// where the table truncates), as `docker ... --format '{{json .}}'` prints
// them. The CLI builds them from the API's objects.

/// `service ls` / `stack services` row (`docker service ls --format
/// '{{json .}}'`); the CLI prints the id short, as the table does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceLsRow {
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    /// `replicated` or `global`.
    pub mode: String,
    /// `running/desired`.
    pub replicas: String,
    pub image: String,
    /// `*:8080->80/tcp, ...`.
    pub ports: String,
}

/// `service ps` / `stack ps` row (`docker service ps --format '{{json .}}'`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskRow {
    /// Short unless `--no-trunc`.
    #[serde(rename = "ID")]
    pub id: String,
    /// `web.1` (a global task: `web.NODEID`). The table indents a slot's
    /// older tasks (` \_ web.1`); JSON rows do not, as Docker's.
    pub name: String,
    pub image: String,
    /// The node's hostname.
    pub node: String,
    /// `Running`, `Shutdown`.
    pub desired_state: String,
    /// `Running 5 seconds ago`.
    pub current_state: String,
    /// The task's error, cut at 60 characters unless `--no-trunc`.
    pub error: String,
    /// Host-mode published ports, `*:8080->80/tcp`.
    pub ports: String,
}

/// `node ls` row (`docker node ls --format '{{json .}}'`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeRow {
    #[serde(rename = "ID")]
    pub id: String,
    pub hostname: String,
    /// `Ready`, `Down`, `Unknown`.
    pub status: String,
    /// `Active`, `Pause`, `Drain`.
    pub availability: String,
    /// `Leader`, `Reachable`, `Unreachable`, or empty for a worker.
    pub manager_status: String,
    /// Empty: managers do not learn their nodes' versions yet.
    pub engine_version: String,
    #[serde(rename = "Self")]
    pub is_self: bool,
    /// `Ready`: every node holds a certificate of the cluster's CA.
    #[serde(rename = "TLSStatus")]
    pub tls_status: String,
}

/// `network ls` row (`docker network ls --format '{{json .}}'`): Docker
/// prints its booleans here as strings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkRow {
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    pub driver: String,
    pub scope: String,
    /// `true` or `false`.
    pub internal: String,
    /// `true` or `false`.
    #[serde(rename = "IPv6")]
    pub ipv6: String,
    /// `k=v,k2=v2`.
    pub labels: String,
    /// Go's time format, as Docker: `2026-11-26 10:00:00.123 +0000 UTC`.
    pub created_at: String,
}

/// `stack ls` row (`docker stack ls --format '{{json .}}'`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StackRow {
    pub name: String,
    /// How many services, as a string (Docker's).
    pub services: String,
    /// `Swarm`.
    pub orchestrator: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CLI reads these answers typed and prints them back: nothing of
    /// what the daemon sends today may be lost on the way.
    #[test]
    fn answers_still_built_as_json_read_back_unchanged() {
        // `node inspect` (agent/swarm/nodes.rs), a manager and a worker.
        for ms in [
            serde_json::json!({"Leader": true, "Reachability": "reachable", "Addr": "198.18.0.1:2377"}),
            serde_json::Value::Null,
        ] {
            let v = serde_json::json!({
                "ID": "abc", "Version": {"Index": 7},
                "Spec": {"Labels": {"a": "1"}, "Role": "manager", "Availability": "drain"},
                "Description": {"Hostname": "n1", "TLSInfo": {"CertNotAfter": "2027-03-05T13:44:47.000Z"}},
                "Status": {"State": "ready", "Addr": "198.18.0.1"},
                "ManagerStatus": ms,
            });
            let n: NodeInspect = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(serde_json::to_value(&n).unwrap(), v);
        }
        // `swarm join` (api/server.rs).
        let v = serde_json::json!({"node_id": "abc", "role": Role::Worker});
        let r: SwarmJoinReply = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&r).unwrap(), v);
        // `debug raft` (raft/manager.rs), before any log.
        let v = serde_json::json!({
            "id": 1, "node_id": "abc", "state": "Leader", "term": 2, "leader": 1,
            "voters": [1], "learners": [], "nodes": {"1": "198.18.0.1:2377"},
            "last_log_index": null, "committed": null, "applied": null, "snapshot": null,
            "purged": null, "log_entries": null, "millis_since_quorum_ack": 3, "records": 1,
        });
        let r: RaftDebug = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&r).unwrap(), v);
    }
}

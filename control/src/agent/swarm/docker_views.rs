//! The replicated state's records as Docker shows them (`crate::wire`'s
//! Docker shapes): networks, services and tasks for `inspect`, and the
//! rows of `service ls`.

use std::collections::BTreeMap;

use crate::clock::rfc3339;
use crate::raft::state::ClusterState;
use crate::wire::{
    AttachedNetwork, AttachedNetworkSpec, ContainerSpec, ContainerStatus, DesiredState,
    EndpointSpecMode, EndpointSpecView, EndpointView, Ipam, IpamConfig, Mode, ModeView,
    NetworkAttachmentView, NetworkInspect, NetworkRecord, Placement, PortView, RestartPolicyView,
    ServiceInspect, ServiceLsRow, ServiceRecord, ServiceRow, ServiceSpec, ServiceSpecView,
    TaskAttachmentView, TaskContainerSpec, TaskInspect, TaskRecord, TaskSpecView, TaskState,
    TaskStatusView, TaskTemplate, UpdateConfigView, UpdatePolicy, UpdateProgress, UpdateStatusView,
    Version, VirtualIp,
};

/// Docker's durations are nanoseconds.
const NS_PER_MS: u64 = 1_000_000;

pub fn network_view(n: &NetworkRecord) -> NetworkInspect {
    NetworkInspect {
        name: n.spec.name.clone(),
        id: n.id.clone(),
        created: rfc3339(n.created_at),
        scope: "swarm".into(),
        driver: "overlay".into(),
        enable_ipv6: false,
        ipam: Ipam {
            driver: "default".into(),
            config: vec![IpamConfig {
                subnet: n.subnet.to_string(),
                gateway: n.gateway.to_string(),
            }],
        },
        internal: n.spec.internal,
        attachable: n.spec.attachable,
        ingress: n.spec.ingress,
        options: {
            let mut o = BTreeMap::from([(
                "com.docker.network.driver.overlay.vxlanid_list".to_string(),
                n.vni.to_string(),
            )]);
            if n.spec.encrypted {
                o.insert("encrypted".to_string(), String::new());
            }
            o
        },
        labels: n.spec.labels.clone(),
    }
}

/// `10.0.1.2/24`: an address with its network's prefix (32 if the network
/// is gone).
fn with_prefix(st: &ClusterState, network_id: &str, addr: std::net::Ipv4Addr) -> String {
    let prefix = st
        .networks
        .get(network_id)
        .map(|n| n.subnet.prefix_len())
        .unwrap_or(32);
    format!("{addr}/{prefix}")
}

pub fn service_view(st: &ClusterState, s: &ServiceRecord) -> ServiceInspect {
    let virtual_ips = s
        .vips
        .iter()
        .map(|v| VirtualIp {
            network_id: v.network_id.clone(),
            addr: with_prefix(st, &v.network_id, v.addr),
        })
        .collect();
    let update_status = s.update_status.as_ref().map(|u| {
        // Beyond Docker's fields: how many of the live tasks run the
        // current spec, for the progress line.
        let live: Vec<&TaskRecord> = st
            .tasks
            .values()
            .filter(|t| t.service_id == s.id && t.desired == DesiredState::Running)
            .collect();
        let updated = live
            .iter()
            .filter(|t| {
                t.state == TaskState::Running && !crate::orchestrator::update::out_of_date(st, s, t)
            })
            .count();
        UpdateStatusView {
            state: u.state,
            started_at: rfc3339(u.started_at),
            completed_at: u.completed_at.map(rfc3339),
            message: u.message.clone(),
            progress: UpdateProgress {
                updated,
                total: live.len(),
            },
        }
    });
    ServiceInspect {
        id: s.id.clone(),
        version: Version { index: s.version },
        created_at: rfc3339(s.created_at),
        updated_at: rfc3339(s.updated_at),
        spec: spec_view(&s.spec, &s.network_ids),
        previous_spec: s.previous_spec.as_ref().map(|p| spec_view(p, &[])),
        endpoint: EndpointView {
            spec: EndpointSpecMode {
                mode: s.spec.endpoint_mode,
            },
            ports: s.spec.ports.iter().map(PortView::from).collect(),
            virtual_ips,
        },
        update_status,
    }
}

fn policy_view(p: &UpdatePolicy) -> UpdateConfigView {
    UpdateConfigView {
        parallelism: p.parallelism,
        delay: p.delay_ms * NS_PER_MS,
        failure_action: p.failure_action,
        monitor: p.monitor_ms * NS_PER_MS,
        max_failure_ratio: p.max_failure_ratio,
        order: p.order,
    }
}

/// Docker's ServiceSpec; networks by id where known, else as given.
fn spec_view(spec: &ServiceSpec, network_ids: &[String]) -> ServiceSpecView {
    let mode = match &spec.mode {
        Mode::Replicated { replicas } => ModeView::Replicated {
            replicas: *replicas,
        },
        Mode::Global => ModeView::Global {},
    };
    let networks = spec
        .networks
        .iter()
        .enumerate()
        .map(|(i, a)| NetworkAttachmentView {
            target: network_ids.get(i).unwrap_or(&a.target).clone(),
            aliases: a.aliases.clone(),
        })
        .collect();
    ServiceSpecView {
        name: spec.name.clone(),
        labels: spec.labels.clone(),
        task_template: TaskTemplate {
            container_spec: ContainerSpec {
                command: spec.command.clone(),
                env: spec.env.clone(),
                dir: spec.workdir.clone(),
                stop_grace_period: spec.stop_grace_ms * NS_PER_MS,
                healthcheck: spec.health.clone(),
            },
            restart_policy: RestartPolicyView {
                condition: spec.restart.condition,
                delay: spec.restart.delay_ms * NS_PER_MS,
                max_attempts: spec.restart.max_attempts,
            },
            placement: Placement {
                constraints: spec.constraints.clone(),
                preferences: spec.placement_prefs.clone(),
                max_replicas: spec.max_per_node,
            },
            networks,
            force_update: spec.force_update,
        },
        mode,
        update_config: policy_view(&spec.update),
        rollback_config: policy_view(&spec.rollback),
        endpoint_spec: EndpointSpecView {
            mode: spec.endpoint_mode,
            ports: spec.ports.iter().map(PortView::from).collect(),
        },
    }
}

pub fn task_view(st: &ClusterState, t: &TaskRecord) -> TaskInspect {
    let networks_attachments = t
        .networks
        .iter()
        .map(|a| TaskAttachmentView {
            network: AttachedNetwork {
                id: a.network_id.clone(),
                spec: AttachedNetworkSpec {
                    name: st.networks.get(&a.network_id).map(|n| n.spec.name.clone()),
                },
            },
            addresses: vec![with_prefix(st, &a.network_id, a.addr)],
        })
        .collect();
    TaskInspect {
        id: t.id.clone(),
        name: t.name(),
        service_id: t.service_id.clone(),
        service_name: t.service_name.clone(),
        slot: t.slot,
        node_id: t.node_id.clone(),
        node: t
            .node_id
            .as_ref()
            .and_then(|n| st.nodes.get(n))
            .map(|n| n.hostname.clone()),
        desired_state: t.desired,
        status: TaskStatusView {
            state: t.state,
            timestamp: rfc3339(t.state_at),
            timestamp_ms: t.state_at,
            err: t.err.clone(),
            container_status: ContainerStatus {
                exit_code: t.exit_code,
            },
        },
        created_at: rfc3339(t.created_at),
        spec: TaskSpecView {
            container_spec: TaskContainerSpec {
                command: t.spec.command.clone(),
                env: t.spec.env.clone(),
            },
        },
        networks_attachments,
    }
}

/// A `service ls` row: running/desired counts the live tasks.
pub fn service_row(st: &ClusterState, s: &ServiceRecord) -> ServiceRow {
    let live = |t: &&TaskRecord| t.service_id == s.id && t.desired == DesiredState::Running;
    let running = st
        .tasks
        .values()
        .filter(live)
        .filter(|t| t.state == TaskState::Running)
        .count();
    let (mode, desired) = match &s.spec.mode {
        Mode::Replicated { replicas } => ("replicated", *replicas as usize),
        Mode::Global => ("global", st.tasks.values().filter(live).count()),
    };
    ServiceRow {
        row: ServiceLsRow {
            id: s.id.clone(),
            name: s.spec.name.clone(),
            mode: mode.into(),
            replicas: format!("{running}/{desired}"),
            image: image_of(&s.spec.command),
            ports: ports_column(&s.spec),
        },
        labels: s.spec.labels.clone(),
    }
}

/// Docker's IMAGE column: a task here is a command, so its program.
pub fn image_of(command: &[String]) -> String {
    command
        .first()
        .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
        .unwrap_or_default()
}

/// `*:8080->80/tcp, *:53->53/udp`.
pub fn ports_column(spec: &ServiceSpec) -> String {
    spec.ports
        .iter()
        .map(|p| {
            let proto = match p.protocol {
                crate::wire::Protocol::Tcp => "tcp",
                crate::wire::Protocol::Udp => "udp",
            };
            format!("*:{}->{}/{proto}", p.published, p.target)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_dates() {
        assert_eq!(crate::clock::rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            crate::clock::rfc3339(1_795_651_200_123),
            "2026-11-26T00:00:00.123Z"
        );
    }

    #[test]
    fn image_is_the_program() {
        assert_eq!(
            super::image_of(&["/usr/bin/shoal".into(), "whoami".into()]),
            "shoal"
        );
        assert_eq!(super::image_of(&[]), "");
    }
}

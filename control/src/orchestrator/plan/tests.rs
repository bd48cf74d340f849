use super::*;
use crate::wire::NetworkSpec;
use crate::wire::TaskReport;
use crate::wire::{EndpointMode, RestartPolicy, ServiceSpec};
use crate::wire::{NodeRecord, Role};

/// A cluster of `nodes` (the first a manager) with network `appnet`.
pub(crate) fn cluster(nodes: &[&str]) -> ClusterState {
    let mut st = ClusterState::default();
    for (i, n) in nodes.iter().enumerate() {
        st.apply(
            1,
            Command::NodeAdd {
                node: NodeRecord {
                    ipsec: Default::default(),
                    cert_not_after_ms: None,
                    cert_issuer: None,
                    id: format!("id-{n}"),
                    raft_id: None,
                    hostname: n.to_string(),
                    addr: std::net::Ipv4Addr::new(198, 18, 0, i as u8 + 1),
                    role: if i == 0 { Role::Manager } else { Role::Worker },
                    availability: Availability::Active,
                    labels: Default::default(),
                    state: NodeState::Ready,
                    version: 0,
                },
            },
        );
    }
    st.apply(
        2,
        Command::NetworkCreate {
            id: "net".into(),
            spec: NetworkSpec {
                name: "appnet".into(),
                ..Default::default()
            },
            now: 0,
        },
    );
    st
}

fn spec(name: &str, mode: Mode) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        mode,
        command: vec!["true".into()],
        env: vec![],
        workdir: None,
        networks: vec![crate::wire::NetAttach {
            target: "appnet".into(),
            aliases: vec![],
        }],
        endpoint_mode: EndpointMode::Vip,
        ports: vec![],
        constraints: vec![],
        placement_prefs: vec![],
        max_per_node: 0,
        restart: RestartPolicy::default(),
        health: None,
        stop_grace_ms: 10_000,
        labels: Default::default(),
        update: Default::default(),
        rollback: Default::default(),
        force_update: 0,
    }
}

/// Applies plans until nothing changes (at most 10 passes).
fn settle(st: &mut ClusterState, now: u64) {
    let mut n = 0;
    let mut id = || {
        n += 1;
        format!("t{now}-{n}")
    };
    for _ in 0..10 {
        let cmds = plan(st, now, &mut id);
        if cmds.is_empty() {
            return;
        }
        for c in cmds {
            st.apply(9, c);
        }
    }
    panic!("did not settle");
}

fn live<'a>(st: &'a ClusterState, service: &str) -> Vec<&'a TaskRecord> {
    st.tasks
        .values()
        .filter(|t| t.service_name == service && t.desired == DesiredState::Running)
        .collect()
}

fn per_node(st: &ClusterState, service: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for t in live(st, service) {
        *m.entry(t.node_id.clone().unwrap_or_default()).or_default() += 1;
    }
    m
}

#[test]
fn replicas_spread_scale_and_move_off_dead_and_drained_nodes() {
    let mut st = cluster(&["n1", "n2", "n3"]);
    st.apply(
        3,
        Command::ServiceCreate {
            id: "s".into(),
            spec: spec("web", Mode::Replicated { replicas: 3 }),
            now: 0,
        },
    );
    settle(&mut st, 0);
    assert_eq!(
        per_node(&st, "web").values().copied().collect::<Vec<_>>(),
        vec![1, 1, 1]
    );
    // Every task got its own address; the VIP is taken too.
    let addrs: BTreeSet<_> = st.tasks.values().map(|t| t.networks[0].addr).collect();
    assert_eq!(addrs.len(), 3);
    assert!(!addrs.contains(&st.services["s"].vips[0].addr));
    st.apply(
        4,
        Command::ServiceScale {
            id: "s".into(),
            replicas: 6,
            now: 1,
        },
    );
    settle(&mut st, 1);
    assert_eq!(
        per_node(&st, "web").values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2]
    );
    st.apply(
        5,
        Command::ServiceScale {
            id: "s".into(),
            replicas: 1,
            now: 2,
        },
    );
    settle(&mut st, 2);
    assert_eq!(live(&st, "web").len(), 1);
    assert_eq!(live(&st, "web")[0].slot, 1);
    // The node of slot 1 dies: a replacement elsewhere at once.
    let dead = live(&st, "web")[0].node_id.clone().unwrap();
    st.apply(
        6,
        Command::NodeSetState {
            id: dead.clone(),
            state: NodeState::Down,
        },
    );
    settle(&mut st, 3);
    let now_on = live(&st, "web")[0].node_id.clone().unwrap();
    assert_ne!(now_on, dead);
    // Drain: moved again.
    st.apply(
        7,
        Command::NodeUpdate {
            id: now_on.clone(),
            role: None,
            availability: Some(Availability::Drain),
            labels_add: Default::default(),
            labels_rm: vec![],
        },
    );
    settle(&mut st, 4);
    let third = live(&st, "web")[0].node_id.clone().unwrap();
    assert!(third != now_on && third != dead);
    // Every node with a task on the network has its own balancer address
    // there (IPVS), distinct from every task's, and its assignments carry
    // it.
    let nodes: std::collections::BTreeSet<String> = live(&st, "web")
        .iter()
        .filter_map(|t| t.node_id.clone())
        .collect();
    let lb: std::collections::BTreeSet<std::net::Ipv4Addr> = nodes
        .iter()
        .map(|n| st.lb_addr("net", n).expect("a balancer address"))
        .collect();
    assert_eq!(lb.len(), nodes.len());
    assert!(st
        .tasks
        .values()
        .flat_map(|t| &t.networks)
        .all(|a| !lb.contains(&a.addr)));
    for n in &nodes {
        assert!(st
            .assignments(n)
            .iter()
            .all(|a| a.networks[0].lb_addr == st.lb_addr("net", n)));
    }
    // Removing the service stops its tasks; once stopped they are forgotten
    // and their addresses (the balancers' too) free.
    st.apply(8, Command::ServiceRemove { id: "s".into() });
    let ids: Vec<String> = st.tasks.keys().cloned().collect();
    let reports = ids
        .iter()
        .map(|id| TaskReport {
            id: id.clone(),
            state: TaskState::Shutdown,
            err: None,
            exit_code: None,
        })
        .collect();
    st.apply(9, Command::TaskReports { reports, now: 5 });
    settle(&mut st, 5);
    assert!(
        st.tasks.is_empty(),
        "{:?}",
        st.tasks.keys().collect::<Vec<_>>()
    );
    assert_eq!(st.used_addrs("net").len(), 1, "only the gateway is left");
}

#[test]
fn global_constraints_pending_and_max_per_node() {
    let mut st = cluster(&["n1", "n2", "n3"]);
    let mut g = spec("agent", Mode::Global);
    g.constraints = vec!["node.role==worker".into()];
    st.apply(
        3,
        Command::ServiceCreate {
            id: "g".into(),
            spec: g,
            now: 0,
        },
    );
    let mut m = spec("capped", Mode::Replicated { replicas: 4 });
    m.max_per_node = 1;
    st.apply(
        4,
        Command::ServiceCreate {
            id: "m".into(),
            spec: m,
            now: 0,
        },
    );
    settle(&mut st, 0);
    let on: BTreeSet<_> = live(&st, "agent")
        .iter()
        .map(|t| t.node_id.clone().unwrap())
        .collect();
    assert_eq!(on, ["id-n2".to_string(), "id-n3".to_string()].into());
    let capped = live(&st, "capped");
    let pending: Vec<_> = capped
        .iter()
        .filter(|t| t.state == TaskState::Pending)
        .collect();
    assert_eq!(pending.len(), 1);
    assert!(
        pending[0]
            .err
            .as_deref()
            .unwrap()
            .contains("no suitable node"),
        "{:?}",
        pending[0].err
    );
    // A node that joins later gets the global task and the pending replica.
    let mut st2 = st.clone();
    st2.apply(
        5,
        Command::NodeAdd {
            node: NodeRecord {
                ipsec: Default::default(),
                cert_not_after_ms: None,
                cert_issuer: None,
                id: "id-n4".into(),
                raft_id: None,
                hostname: "n4".into(),
                addr: "198.18.0.4".parse().unwrap(),
                role: Role::Worker,
                availability: Availability::Active,
                labels: Default::default(),
                state: NodeState::Ready,
                version: 0,
            },
        },
    );
    settle(&mut st2, 1);
    assert_eq!(live(&st2, "agent").len(), 3);
    assert!(live(&st2, "capped")
        .iter()
        .all(|t| t.state == TaskState::Assigned));
}

#[test]
fn restart_policy_delay_and_attempts() {
    let mut st = cluster(&["n1"]);
    let mut s = spec("crash", Mode::Replicated { replicas: 1 });
    s.restart = RestartPolicy {
        condition: RestartCondition::OnFailure,
        delay_ms: 1000,
        max_attempts: 2,
    };
    st.apply(
        3,
        Command::ServiceCreate {
            id: "c".into(),
            spec: s,
            now: 0,
        },
    );
    settle(&mut st, 0);
    let fail = |st: &mut ClusterState, now: u64| {
        let t = live(st, "crash")
            .iter()
            .find(|t| !t.state.is_terminal())
            .map(|t| t.id.clone())
            .unwrap();
        st.apply(
            10,
            Command::TaskReports {
                reports: vec![TaskReport {
                    id: t,
                    state: TaskState::Failed,
                    err: Some("exit 1".into()),
                    exit_code: Some(1),
                }],
                now,
            },
        );
    };
    fail(&mut st, 100);
    settle(&mut st, 500); // within the delay: no new task
    assert!(live(&st, "crash").is_empty());
    // And the plan says when time alone will make it plan again: the
    // leader need not re-plan this unchanged state before then.
    let (cmds, due) = plan_until(&st, 500, &mut || "x".into());
    assert!(cmds.is_empty());
    assert_eq!(due, Some(1100));
    settle(&mut st, 1100);
    assert_eq!(live(&st, "crash").len(), 1);
    fail(&mut st, 1200);
    settle(&mut st, 2300);
    assert_eq!(live(&st, "crash").len(), 1, "second restart");
    fail(&mut st, 2400);
    settle(&mut st, 9000);
    assert!(live(&st, "crash").is_empty(), "max attempts reached");
    // Nothing more will ever happen by itself.
    assert_eq!(plan_until(&st, 9000, &mut || "x".into()), (vec![], None));
}

#[test]
fn host_mode_ports_take_one_task_per_node_and_block_other_services() {
    use crate::wire::{PortSpec, Protocol, PublishMode};
    let mut st = cluster(&["n1", "n2", "n3"]);
    let host = |p: u16| PortSpec {
        published: p,
        target: 80,
        protocol: Protocol::Tcp,
        mode: PublishMode::Host,
    };
    let mut a = spec("a", Mode::Replicated { replicas: 2 });
    a.ports = vec![host(8080)];
    a.constraints = vec!["node.hostname!=n3".into()];
    st.apply(
        3,
        Command::ServiceCreate {
            id: "a".into(),
            spec: a,
            now: 0,
        },
    );
    // Another service on the same host port: only n3 is free for it.
    let mut b = spec("b", Mode::Replicated { replicas: 2 });
    b.ports = vec![host(8080)];
    st.apply(
        4,
        Command::ServiceCreate {
            id: "b".into(),
            spec: b,
            now: 0,
        },
    );
    settle(&mut st, 0);
    let on = |svc: &str| -> BTreeSet<String> {
        live(&st, svc)
            .iter()
            .filter_map(|t| t.node_id.clone())
            .collect()
    };
    assert_eq!(on("a"), ["id-n1".to_string(), "id-n2".to_string()].into());
    assert_eq!(on("b"), ["id-n3".to_string()].into());
    let pending: Vec<_> = live(&st, "b")
        .into_iter()
        .filter(|t| t.state == TaskState::Pending)
        .collect();
    assert_eq!(pending.len(), 1);
    assert!(
        pending[0]
            .err
            .as_deref()
            .unwrap()
            .contains("host-mode port"),
        "{:?}",
        pending[0].err
    );
}

/// Every node has an ingress address (its sandbox, for local access to
/// published ports): the nodes there when the ingress network is made and
/// any joining later; tasks coming and going do not free it, the node's
/// removal does.
#[test]
fn every_node_has_an_ingress_address_until_it_leaves() {
    let mut st = cluster(&["a", "b"]);
    st.apply(
        3,
        Command::NetworkCreate {
            id: "ing".into(),
            spec: NetworkSpec {
                name: "ingress".into(),
                ingress: true,
                ..Default::default()
            },
            now: 0,
        },
    );
    let mut c = cluster(&["a", "b", "c"]);
    let node_c = c.nodes.remove("id-c").unwrap();
    st.apply(4, Command::NodeAdd { node: node_c });
    let addrs: std::collections::BTreeSet<_> = ["id-a", "id-b", "id-c"]
        .iter()
        .map(|n| st.lb_addr("ing", n).expect("an ingress address"))
        .collect();
    assert_eq!(addrs.len(), 3);
    assert_eq!(st.mesh_config("id-b").local_addr, st.lb_addr("ing", "id-b"));
    st.apply(
        5,
        Command::ServiceCreate {
            id: "s".into(),
            spec: spec("web", Mode::Replicated { replicas: 2 }),
            now: 0,
        },
    );
    settle(&mut st, 6);
    st.apply(8, Command::ServiceRemove { id: "s".into() });
    settle(&mut st, 9);
    assert!(st.lb_addr("ing", "id-a").is_some(), "kept without tasks");
    st.apply(
        12,
        Command::NodeRemove {
            id: "id-c".into(),
            now: 0,
        },
    );
    assert!(st.lb_addr("ing", "id-c").is_none());
}

/// Tasks of an encrypted network go only to nodes that can encrypt; while
/// none can they are pending with the reason, and a node saying it can
/// takes them (never a node that would send in clear).
#[test]
fn encrypted_networks_tasks_go_only_to_nodes_that_can_encrypt() {
    use crate::wire::Ipsec;
    let mut st = cluster(&["n1", "n2", "n3"]);
    st.apply(
        3,
        Command::NetworkCreate {
            id: "sec".into(),
            spec: NetworkSpec {
                name: "secnet".into(),
                encrypted: true,
                ..Default::default()
            },
            now: 0,
        },
    );
    let missing = Ipsec::Missing("esp4 (IPsec ESP)".into());
    for (i, n) in ["n1", "n2", "n3"].iter().enumerate() {
        st.apply(
            4 + i as u64,
            Command::NodeSetIpsec {
                id: format!("id-{n}"),
                ipsec: missing.clone(),
            },
        );
    }
    let mut s = spec("web", Mode::Replicated { replicas: 2 });
    s.networks[0].target = "secnet".into();
    st.apply(
        10,
        Command::ServiceCreate {
            id: "w".into(),
            spec: s,
            now: 0,
        },
    );
    settle(&mut st, 0);
    let tasks = live(&st, "web");
    assert_eq!(tasks.len(), 2);
    for t in &tasks {
        assert_eq!(t.state, TaskState::Pending);
        let err = t.err.as_deref().unwrap();
        assert!(
            err.contains("no ready node can encrypt: n1: its kernel lacks esp4 (IPsec ESP)"),
            "{err}"
        );
    }
    // n2 can now: both tasks go there, none to n1 or n3.
    st.apply(
        11,
        Command::NodeSetIpsec {
            id: "id-n2".into(),
            ipsec: Ipsec::Ready,
        },
    );
    settle(&mut st, 1);
    let on: BTreeSet<_> = live(&st, "web")
        .iter()
        .map(|t| t.node_id.clone().unwrap())
        .collect();
    assert_eq!(on, ["id-n2".to_string()].into());
    // A plain network's service goes anywhere, as before.
    st.apply(
        12,
        Command::ServiceCreate {
            id: "p".into(),
            spec: spec("plain", Mode::Replicated { replicas: 3 }),
            now: 0,
        },
    );
    settle(&mut st, 2);
    assert_eq!(live(&st, "plain").len(), 3);
    let nodes: BTreeSet<_> = live(&st, "plain")
        .iter()
        .map(|t| t.node_id.clone().unwrap())
        .collect();
    assert_eq!(nodes.len(), 3);
}

/// More replicas than the network has addresses: as many tasks as fit,
/// and then nothing more to propose (a batch refused whole, proposed
/// again every pass, once filled the Raft log).
#[test]
fn replicas_beyond_the_networks_addresses_wait_without_a_refused_batch() {
    let mut st = cluster(&["n1", "n2"]);
    st.apply(
        3,
        Command::NetworkCreate {
            id: "small".into(),
            spec: NetworkSpec {
                name: "small".into(),
                subnet: Some("10.9.9.0/28".parse().unwrap()),
                ..Default::default()
            },
            now: 0,
        },
    );
    let mut s = spec("many", Mode::Replicated { replicas: 50 });
    s.networks[0].target = "small".into();
    st.apply(
        4,
        Command::ServiceCreate {
            id: "many".into(),
            spec: s,
            now: 0,
        },
    );
    settle(&mut st, 0);
    let n = live(&st, "many").len();
    assert!(n > 0 && n < 14, "{n} tasks on a /28");
    assert_eq!(st.free_addr_count("small"), 0, "every address taken");
    let mut id = || "x".to_string();
    assert!(plan(&st, 0, &mut id).is_empty(), "nothing more proposed");
}

/// Thousands of replicas are created in bounded batches, each a Raft entry
/// every manager can take in one AppendEntries body.
#[test]
fn many_replicas_are_created_in_bounded_batches() {
    let mut st = cluster(&["n1", "n2"]);
    st.apply(
        3,
        Command::NetworkCreate {
            id: "big".into(),
            spec: NetworkSpec {
                name: "big".into(),
                subnet: Some("10.9.0.0/20".parse().unwrap()),
                ..Default::default()
            },
            now: 0,
        },
    );
    let mut s = spec("many", Mode::Replicated { replicas: 2500 });
    s.networks[0].target = "big".into();
    st.apply(
        4,
        Command::ServiceCreate {
            id: "many".into(),
            spec: s,
            now: 0,
        },
    );
    let mut n = 0;
    let mut id = || {
        n += 1;
        format!("t{n}")
    };
    let cmds = plan(&st, 0, &mut id);
    let sizes: Vec<usize> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::TaskCreate { tasks, .. } => Some(tasks.len()),
            _ => None,
        })
        .collect();
    assert_eq!(sizes, vec![1000, 1000, 500]);
    let biggest = cmds
        .iter()
        .map(|c| serde_json::to_vec(c).unwrap().len())
        .max()
        .unwrap_or(0);
    assert!(biggest < 1 << 20, "an entry of {biggest} bytes");
    for c in cmds {
        st.apply(5, c);
    }
    assert_eq!(live(&st, "many").len(), 2500);
}

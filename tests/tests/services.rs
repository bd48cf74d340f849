//! Networks, services and tasks on lab clusters (real daemons, tasks as
//! real processes in their own namespaces, curl as the client): create,
//! spread, reach, scale, remove and clean up; a worker killed and back;
//! drain; global mode and constraints; max-per-node with a reason; the
//! leader killed while scaling; a crash loop under its restart policy; bad
//! input refused while the cluster keeps working.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_tests::services::{
    create_whoami, curl, detached, lab_task_namespaces, per_node, running, task_ns, tasks, Task,
};
use shoal_tests::{ok, refused, shoal, shoal_bin, wait, Lab};

#[test]
fn replicated_service_spreads_reaches_scales_and_cleans_up() {
    let lab = Lab::up_with(3, 0, "tc", &[]);
    ok(lab.shoal_on("n1", &["network", "create", "appnet"]));
    let inspect: Value =
        serde_json::from_str(&ok(lab.shoal_on("n1", &["network", "inspect", "appnet"]))).unwrap();
    assert_eq!(inspect[0]["Scope"], "swarm");
    assert_eq!(inspect[0]["Driver"], "overlay");
    assert_eq!(inspect[0]["IPAM"]["Config"][0]["Subnet"], "10.10.0.0/24");
    assert!(
        inspect[0]["Options"]["com.docker.network.driver.overlay.vxlanid_list"]
            .as_str()
            .unwrap()
            .parse::<u32>()
            .unwrap()
            >= 4096
    );
    let ls = ok(lab.shoal_on("n1", &["network", "ls"]));
    assert!(ls.contains("ingress") && ls.contains("appnet"), "{ls}");

    let create = |lab: &Lab| create_whoami(lab, "web", &["--replicas", "3"]);
    let out = create(&lab);
    assert!(out.contains("converged"), "{out}");
    let ts = running(&lab, "n1", "web");
    assert_eq!(
        per_node(&ts).values().copied().collect::<Vec<_>>(),
        vec![1, 1, 1]
    );
    // Every task reaches every other across nodes, by task IP; whoami
    // answers with its task and sees the caller's task IP.
    for a in &ts {
        for b in &ts {
            let text = curl(&lab, &task_ns(&lab, a), &b.ip);
            assert!(
                text.contains(&format!("IP: {}", b.ip)),
                "{} -> {}: {text}",
                a.id,
                b.ip
            );
            assert!(text.contains("Task: web."), "{text}");
            assert!(text.contains(&format!("RemoteAddr: {}:", a.ip)), "{text}");
        }
    }
    let ls = ok(lab.shoal_on("n1", &["service", "ls"]));
    assert!(ls.contains("web") && ls.contains("3/3"), "{ls}");
    // Service records in gossip: n1 sees n2's and n3's tasks with their
    // service, task name, slot and the service's VIP.
    let vip = shoal_tests::services::service_vip(&lab, "web");
    wait("service records gossiped", 10, || {
        let g = lab.debug_json("n1", &["gossip"]);
        let recs: Vec<&Value> = g["table"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["svc"]["service"] == "web")
            .collect();
        recs.len() == 2
            && recs.iter().all(|e| {
                e["svc"]["vip"].as_str() == Some(vip.as_str())
                    && e["svc"]["task"].as_str().unwrap().starts_with("web.")
                    && e["svc"]["network"] == "appnet"
            })
    });
    // exec in a task's namespaces: its hostname is its short id, its
    // resolver the embedded DNS address.
    let t1 = ts.iter().find(|t| t.node == "n1").unwrap();
    let host = ok(lab.shoal_on("n1", &["exec", &t1.id, "--", "hostname"]));
    assert_eq!(host.trim(), &t1.id[..12]);
    let resolv = ok(lab.shoal_on("n1", &["exec", &t1.id, "--", "cat", "/etc/resolv.conf"]));
    assert!(resolv.contains("nameserver 127.0.0.11"), "{resolv}");
    let elsewhere = ts.iter().find(|t| t.node != "n1").unwrap();
    refused(
        &lab,
        "n1",
        &["exec", &elsewhere.id, "--", "true"],
        "runs on node",
    );
    let v: Value = serde_json::from_str(&ok(lab.shoal_on("n1", &["inspect", &t1.id]))).unwrap();
    assert_eq!(v[0]["Status"]["State"], "running");
    assert!(v[0]["NetworksAttachments"][0]["Addresses"][0]
        .as_str()
        .unwrap()
        .starts_with(&t1.ip));

    ok(lab.shoal_on("n1", &["service", "scale", "web=6"]));
    wait("6 running", 20, || running(&lab, "n1", "web").len() == 6);
    assert_eq!(
        per_node(&running(&lab, "n1", "web"))
            .values()
            .copied()
            .collect::<Vec<_>>(),
        vec![2, 2, 2]
    );
    ok(lab.shoal_on("n1", &["service", "scale", "web=1"]));
    wait("1 running, 5 stopped", 20, || {
        running(&lab, "n1", "web").len() == 1 && lab_task_namespaces(&lab).len() == 1
    });
    let first_ips: BTreeSet<String> = ts.iter().map(|t| t.ip.clone()).collect();

    ok(lab.shoal_on("n1", &["service", "rm", "web"]));
    wait("no task namespace left", 20, || {
        lab_task_namespaces(&lab).is_empty()
    });
    wait("no service record left", 20, || {
        ok(lab.shoal_on("n1", &["service", "ls"])).lines().count() == 1
    });
    wait("no task record left", 20, || {
        ts.iter()
            .all(|t| !lab.shoal_on("n1", &["inspect", &t.id]).status.success())
    });
    // Nothing left in any node's dataplane for appnet, and the network can go.
    for n in ["n1", "n2", "n3"] {
        let eps = lab.debug_json(n, &["endpoints"]);
        assert!(eps.as_array().unwrap().is_empty(), "{n}: {eps}");
    }
    // Freed addresses are handed out again.
    create(&lab);
    let again: BTreeSet<String> = running(&lab, "n1", "web")
        .iter()
        .map(|t| t.ip.clone())
        .collect();
    assert_eq!(again, first_ips, "addresses reused");
    refused(
        &lab,
        "n1",
        &["network", "rm", "appnet"],
        "in use by service web",
    );
}

#[test]
fn a_dead_worker_s_tasks_move_and_drain_moves_them_too() {
    let lab = Lab::up_with(3, 0, "tc", &[]);
    ok(lab.shoal_on("n1", &["network", "create", "appnet"]));
    let create = |lab: &Lab| create_whoami(lab, "web", &["--replicas", "6"]);
    create(&lab);
    shoal_tests::shoal_ok(&["lab", "kill", "--name", &lab.name, "n3"]);
    let t0 = Instant::now();
    wait("6 running without n3", 30, || {
        let r = running(&lab, "n1", "web");
        r.len() == 6 && r.iter().all(|t| t.node != "n3")
    });
    println!(
        "worker kill -9 -> its tasks running elsewhere: {:?}",
        t0.elapsed()
    );
    // Back: its stale tasks are stopped, never more than 6.
    shoal_tests::shoal_ok(&["lab", "start", "--name", &lab.name, "n3"]);
    wait("n3's stale tasks stopped", 20, || {
        lab_task_namespaces(&lab)
            .iter()
            .all(|n| !n.starts_with(&format!("{}-n3-", lab.name)))
    });
    assert_eq!(running(&lab, "n1", "web").len(), 6);
    // Drain n2: its tasks move; active again: nothing moves back.
    ok(lab.shoal_on("n1", &["node", "update", "--availability", "drain", "n2"]));
    wait("n2 drained", 20, || {
        let r = running(&lab, "n1", "web");
        r.len() == 6 && r.iter().all(|t| t.node != "n2")
    });
    ok(lab.shoal_on("n1", &["node", "update", "--availability", "active", "n2"]));
    std::thread::sleep(Duration::from_secs(2));
    assert!(running(&lab, "n1", "web").iter().all(|t| t.node != "n2"));
}

#[test]
fn global_constraints_max_per_node_restart_policy_and_bad_input() {
    let lab = Lab::up_with(3, 0, "tc", &[]);
    ok(lab.shoal_on("n1", &["network", "create", "appnet"]));
    ok(lab.shoal_on("n1", &["node", "update", "--label-add", "zone=b", "n3"]));
    detached(
        &lab,
        "agent",
        &["--mode", "global", "--constraint", "node.role==worker"],
    );
    detached(
        &lab,
        "zoned",
        &["--replicas", "2", "--constraint", "node.labels.zone==b"],
    );
    detached(
        &lab,
        "capped",
        &["--replicas", "4", "--replicas-max-per-node", "1"],
    );
    wait("global on the workers", 20, || {
        let nodes: BTreeSet<String> = running(&lab, "n1", "agent")
            .into_iter()
            .map(|t| t.node)
            .collect();
        nodes == ["n2".to_string(), "n3".to_string()].into()
    });
    wait("zoned on n3", 20, || {
        let r = running(&lab, "n1", "zoned");
        r.len() == 2 && r.iter().all(|t| t.node == "n3")
    });
    wait("3 capped running, 1 pending", 20, || {
        running(&lab, "n1", "capped").len() == 3
    });
    // The fourth is pending (its record may trail the three a moment).
    let pending_now = || -> Vec<Task> {
        tasks(&lab, "n1", "capped")
            .into_iter()
            .filter(|t| t.state == "pending")
            .collect()
    };
    wait("1 capped pending", 10, || pending_now().len() == 1);
    let pending = pending_now();
    assert!(
        pending[0].err.contains("no suitable node"),
        "{:?}",
        pending[0]
    );

    // A node that joins later gets the global task (n2 leaves, is removed,
    // joins again under a new id).
    ok(lab.shoal_on("n2", &["swarm", "leave"]));
    wait("n2 down", 10, || {
        ok(lab.shoal_on("n1", &["node", "ls"]))
            .lines()
            .any(|l| l.contains(" n2 ") && l.contains("Down"))
    });
    ok(lab.shoal_on("n1", &["node", "rm", "n2"]));
    let token = ok(lab.shoal_on("n1", &["swarm", "join-token", "-q", "worker"]));
    ok(lab.shoal_on(
        "n2",
        &["swarm", "join", "--token", token.trim(), "198.18.0.1:2377"],
    ));
    wait("global task on the rejoined n2", 20, || {
        running(&lab, "n1", "agent").iter().any(|t| t.node == "n2")
    });

    // A crash loop: restarted after the delay, at most max-attempts times.
    let a = vec![
        "service",
        "create",
        "-d",
        "--name",
        "crash",
        "--restart-condition",
        "on-failure",
        "--restart-delay",
        "1s",
        "--restart-max-attempts",
        "2",
        "--",
        "/bin/sh",
        "-c",
        "exit 3",
    ];
    ok(lab.shoal_on("n1", &a));
    wait("three failed tasks", 30, || {
        tasks(&lab, "n1", "crash")
            .iter()
            .filter(|t| t.state == "failed")
            .count()
            == 3
    });
    std::thread::sleep(Duration::from_secs(3));
    let all = tasks(&lab, "n1", "crash");
    assert_eq!(all.len(), 3, "no fourth attempt: {all:?}");
    assert!(
        all.iter().all(|t| t.err.contains("non-zero exit (3)")),
        "{all:?}"
    );

    // Bad input: one line each, nothing changes.
    let before = ok(lab.shoal_on("n1", &["service", "ls"]));
    let mut bad = vec![
        (
            vec![
                "service",
                "create",
                "-d",
                "--name",
                "x",
                "--network",
                "nonet",
                "--",
                "true",
            ],
            "network nonet not found",
        ),
        (
            vec!["service", "create", "-d", "--name", "agent", "--", "true"],
            "already exists",
        ),
        (
            vec![
                "service",
                "create",
                "-d",
                "--name",
                "x",
                "--constraint",
                "node.color==red",
                "--",
                "true",
            ],
            "unknown key",
        ),
        (
            vec![
                "service",
                "create",
                "-d",
                "--name",
                "x",
                "--replicas",
                "-1",
                "--",
                "true",
            ],
            "replicas",
        ),
        (
            vec![
                "service",
                "create",
                "-d",
                "--name",
                "x",
                "--mode",
                "global",
                "--replicas",
                "2",
                "--",
                "true",
            ],
            "replicated mode",
        ),
        (
            vec![
                "service", "create", "-d", "--name", "x", "-p", "80:x", "--", "true",
            ],
            "bad --publish",
        ),
        (vec!["service", "scale", "agent=3"], "replicated mode"),
        (vec!["service", "scale", "zoned=-2"], "invalid replicas"),
        (vec!["service", "rm", "nosuch"], "not found"),
        (vec!["network", "create", "appnet"], "already exists"),
        (
            vec!["network", "create", "--subnet", "10.10.0.128/25", "other"],
            "overlaps",
        ),
        (vec!["network", "rm", "appnet"], "in use"),
        (
            vec!["network", "create", "-d", "bridge", "b"],
            "not supported",
        ),
    ];
    detached(&lab, "held", &["-p", "8080:80"]);
    bad.push((
        vec![
            "service", "create", "-d", "--name", "y", "-p", "8080:80", "--", "true",
        ],
        "already published",
    ));
    for (args, needle) in &bad {
        refused(&lab, "n1", args, needle);
    }
    let after = ok(lab.shoal_on("n1", &["service", "ls"]));
    assert_eq!(
        after.lines().count(),
        before.lines().count() + 1,
        "only `held` was added"
    );
    assert!(
        running(&lab, "n1", "zoned").len() == 2,
        "the cluster keeps working"
    );
}

#[test]
fn scaling_completes_across_a_leader_kill() {
    let lab = Lab::up_with(4, 0, "tc", &["--managers", "3"]);
    ok(lab.shoal_on("n1", &["network", "create", "appnet"]));
    let create = |lab: &Lab| create_whoami(lab, "web", &["--replicas", "2"]);
    create(&lab);
    ok(lab.shoal_on("n2", &["service", "scale", "-d", "web=8"]));
    shoal_tests::shoal_ok(&["lab", "kill", "--name", &lab.name, "n1"]);
    wait("8 running after the leader's death", 40, || {
        let r = running(&lab, "n2", "web");
        r.len() == 8 && r.iter().all(|t| t.node != "n1")
    });
}

#[test]
fn health_checks_gate_running_and_service_logs_come_from_the_nodes() {
    let lab = Lab::up_with(2, 0, "tc", &[]);
    ok(lab.shoal_on("n1", &["network", "create", "appnet"]));
    // Healthy: its own HTTP answers inside its namespaces.
    detached(
        &lab,
        "good",
        &[
            "--health-cmd",
            "curl -sf http://127.0.0.1:80/",
            "--health-interval",
            "300ms",
            "--health-timeout",
            "2s",
        ],
    );
    // Never healthy: starting, then stopped as unhealthy and replaced.
    detached(
        &lab,
        "bad",
        &[
            "--health-cmd",
            "false",
            "--health-interval",
            "300ms",
            "--health-retries",
            "2",
            "--restart-delay",
            "500ms",
        ],
    );
    wait("good running", 20, || {
        running(&lab, "n1", "good").len() == 1
    });
    wait("bad replaced twice", 30, || {
        tasks(&lab, "n1", "bad")
            .iter()
            .filter(|t| t.state == "failed" && t.err.contains("unhealthy"))
            .count()
            >= 2
    });
    assert!(
        tasks(&lab, "n1", "bad")
            .iter()
            .all(|t| t.state != "running"),
        "an unhealthy task never counts as running"
    );
    let ls = ok(lab.shoal_on("n1", &["service", "ls"]));
    let bad = ls.lines().find(|l| l.contains(" bad ")).unwrap();
    assert!(bad.contains("0/1"), "{ls}");

    // service logs: each task's output, fetched from its node.
    ok(lab.shoal_on(
        "n1",
        &[
            "service",
            "create",
            "--name",
            "talk",
            "--replicas",
            "2",
            "--",
            "/bin/sh",
            "-c",
            "echo hello from $SHOAL_TASK_NAME; i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done",
        ],
    ));
    let mut logs = String::new();
    wait("both tasks' logs", 20, || {
        logs = ok(lab.shoal_on("n1", &["service", "logs", "talk"]));
        logs.matches("| hello from talk.").count() == 2
    });
    assert!(
        logs.contains("@n1    | ") && logs.contains("@n2    | "),
        "{logs}"
    );
    let last = ok(lab.shoal_on("n1", &["service", "logs", "--tail", "1", "talk"]));
    assert_eq!(last.matches("| tick ").count(), 2, "{last}");
    assert!(!last.contains("hello"), "{last}");

    // -f -t: lines keep coming, each task's in order with none lost or
    // repeated, stamped with the time their node saw them.
    let bin = shoal_bin().to_string_lossy().into_owned();
    let out = shoal(&[
        "lab", "exec", "--name", &lab.name, "n1", "--", "timeout", "5", &bin, "service", "logs",
        "--tail", "1", "-f", "-t", "talk",
    ]);
    let followed = String::from_utf8_lossy(&out.stdout).into_owned();
    let now = std::time::SystemTime::now();
    for task in ["talk.1", "talk.2"] {
        let ticks: Vec<u64> = followed
            .lines()
            .filter(|l| l.contains(&format!(" {task}.")))
            .map(|l| {
                let ts = l.split(' ').next().unwrap();
                let at = humantime::parse_rfc3339(ts).unwrap_or_else(|e| panic!("{l}: {e}"));
                assert!(now.duration_since(at).unwrap().as_secs() < 30, "{l}");
                l.rsplit(' ').next().unwrap().parse().unwrap()
            })
            .collect();
        assert!(ticks.len() >= 10, "{task} followed for 5 s: {followed}");
        assert!(
            ticks.windows(2).all(|w| w[1] == w[0] + 1),
            "{task}: {ticks:?}"
        );
    }
    refused(
        &lab,
        "n1",
        &["service", "logs", "--tail", "x", "talk"],
        "bad --tail",
    );
}

/// `swarm init --data-path-port`: every node's dataplane adopts the port,
/// and tasks across nodes talk over it.
#[test]
fn the_swarm_s_data_path_port_is_every_node_s() {
    let lab = Lab::up_with(2, 0, "tc", &["--managers", "0"]);
    ok(lab.shoal_on(
        "n1",
        &[
            "swarm",
            "init",
            "--data-path-port",
            "4790",
            "--default-addr-pool",
            "10.20.0.0/16",
        ],
    ));
    let token = ok(lab.shoal_on("n1", &["swarm", "join-token", "-q", "worker"]));
    ok(lab.shoal_on(
        "n2",
        &["swarm", "join", "--token", token.trim(), "198.18.0.1:2377"],
    ));
    for n in ["n1", "n2"] {
        wait("port adopted", 10, || {
            lab.debug_json(n, &["maps"])["vxlan_port"] == 4790
        });
    }
    ok(lab.shoal_on("n1", &["network", "create", "appnet"]));
    create_whoami(&lab, "web", &["--replicas", "2"]);
    let ts = running(&lab, "n1", "web");
    assert_eq!(per_node(&ts).len(), 2, "{ts:?}");
    assert!(ts[0].ip.starts_with("10.20."), "{ts:?}");
    let text = curl(&lab, &task_ns(&lab, &ts[0]), &ts[1].ip);
    assert!(text.contains(&format!("IP: {}", ts[1].ip)), "{text}");
    refused(&lab, "n1", &["swarm", "leave"], "--force");
}

/// A 3-node lab (n1 the manager) with `web` on its two workers, one task
/// each: the lab and those tasks.
fn web_on_the_workers() -> (Lab, Vec<Task>) {
    let lab = Lab::up_with(3, 0, "tc", &[]);
    ok(lab.shoal_on("n1", &["network", "create", "appnet"]));
    create_whoami(
        &lab,
        "web",
        &["--replicas", "2", "--constraint", "node.role==worker"],
    );
    let before = running(&lab, "n1", "web");
    assert_eq!(per_node(&before).len(), 2, "{before:?}");
    (lab, before)
}

/// A worker that loses its managers keeps its tasks running, and when the
/// manager is back nothing is replaced (no duplicates, same tasks).
#[test]
fn workers_keep_their_tasks_while_the_managers_are_gone() {
    let (lab, before) = web_on_the_workers();
    shoal_tests::shoal_ok(&["lab", "kill", "--name", &lab.name, "n1"]);
    std::thread::sleep(Duration::from_secs(5));
    // Still serving each other across nodes without any manager.
    let text = curl(&lab, &task_ns(&lab, &before[0]), &before[1].ip);
    assert!(text.contains(&format!("IP: {}", before[1].ip)), "{text}");
    shoal_tests::shoal_ok(&["lab", "start", "--name", &lab.name, "n1"]);
    wait("the manager back", 20, || {
        lab.shoal_on("n1", &["service", "ls"]).status.success()
    });
    std::thread::sleep(Duration::from_secs(5));
    let after = running(&lab, "n1", "web");
    let ids = |ts: &[Task]| ts.iter().map(|t| t.id.clone()).collect::<BTreeSet<_>>();
    assert_eq!(ids(&after), ids(&before), "same tasks, none replaced");
    assert_eq!(tasks(&lab, "n1", "web").len(), 2, "no extra tasks");
}

/// A manager frozen for seconds (a starved VM, SIGSTOP) convicts no node
/// of its own silence when it thaws: no node goes down, no task is
/// replaced.
#[test]
fn a_frozen_manager_convicts_no_node_when_it_thaws() {
    let (lab, before) = web_on_the_workers();
    let n1 = lab.daemon("n1");
    n1.freeze(true);
    std::thread::sleep(Duration::from_secs(5));
    n1.freeze(false);
    std::thread::sleep(Duration::from_secs(5));
    let log = lab.node_log("n1");
    assert!(
        !log.lines().any(|l| l.contains("node liveness changed")),
        "{log}"
    );
    assert!(log.contains("liveness watch was frozen"), "{log}");
    let after = running(&lab, "n1", "web");
    let ids = |ts: &[Task]| ts.iter().map(|t| t.id.clone()).collect::<BTreeSet<_>>();
    assert_eq!(ids(&after), ids(&before), "same tasks, none replaced");
}

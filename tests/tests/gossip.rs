//! The node daemon and gossip on real lab clusters: endpoints created
//! through one node's API become reachable everywhere, removals and node
//! failures propagate, restarts bring endpoints back, hostile gossip is
//! refused while traffic keeps flowing (hosts without the gossip key:
//! `gossip_keys.rs`).

use std::time::Duration;

use shoal_tests::{send_udp, Lab};

fn pings(lab: &Lab, netns: &str, ip: &str) -> bool {
    lab.run(netns, &["ping", "-c", "1", "-W", "1", ip])
        .status
        .success()
}

#[test]
fn endpoint_created_on_one_node_is_reachable_everywhere_and_removal_propagates() {
    let lab = Lab::up(3, 1, "tc");
    let info = lab.info();
    let name = format!("{}-x1", lab.name);
    let out = lab.shoal_on(
        "n2",
        &[
            "endpoint",
            "create",
            "--network",
            "labnet",
            "--ip",
            "10.0.1.50/24",
            "--name",
            &name,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for n in ["n1", "n3"] {
        let t = lab.wait_for(Duration::from_secs(5), || {
            lab.remote_ips(n).contains(&"10.0.1.50".to_string())
        });
        eprintln!("{n} programmed the new endpoint after {t:?}");
        assert!(t.is_some(), "{n} never learnt 10.0.1.50");
    }
    for ep in &info.endpoints {
        assert!(
            pings(&lab, &ep.netns, "10.0.1.50"),
            "{} cannot reach the new endpoint",
            ep.name
        );
    }
    let ls = lab.shoal_on("n2", &["endpoint", "ls", "--format", "json"]);
    let eps: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    assert!(eps
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == name.as_str()));

    let out = lab.shoal_on("n2", &["endpoint", "rm", &name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for n in ["n1", "n3"] {
        let t = lab.wait_for(Duration::from_secs(5), || {
            !lab.remote_ips(n).contains(&"10.0.1.50".to_string())
        });
        assert!(t.is_some(), "{n} still has 10.0.1.50 after removal");
    }
    assert!(!pings(&lab, &info.endpoints[0].netns, "10.0.1.50"));
    assert!(
        !std::path::Path::new(&format!("/run/netns/{name}")).exists(),
        "namespace removed with the endpoint"
    );
}

#[test]
fn killed_node_vanishes_within_the_bound_and_comes_back() {
    let lab = Lab::up(3, 1, "tc");
    let info = lab.info();
    let (a, c) = (&info.endpoints[0], &info.endpoints[2]);
    assert!(pings(&lab, &a.netns, &c.ip));

    shoal_tests::shoal_ok(&["lab", "kill", "--name", &lab.name, "n3"]);
    let gone = |n: &str| !lab.remote_ips(n).contains(&c.ip);
    let t1 = lab.wait_for(Duration::from_secs(10), || gone("n1") && gone("n2"));
    eprintln!("kill -9 of n3: its endpoints left n1 and n2 after {t1:?} (goal < 3 s: 2.5 s of silence, `gossip::HOLD`)");
    let t1 = t1.expect("n3's endpoints never left the others' maps");
    assert!(t1 < Duration::from_secs(5), "failure detection took {t1:?}");
    // Traffic to it is no longer forwarded: dropped at the source, counted.
    let before = lab.counter("n1", "unknown_endpoint");
    assert!(!pings(&lab, &a.netns, &c.ip));
    assert!(lab.counter("n1", "unknown_endpoint") > before);
    let view = lab.debug_json("n1", &["gossip"]);
    let n3 = view["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["node"] == "n3")
        .unwrap()
        .clone();
    assert_eq!(n3["live"], false, "{view}");

    shoal_tests::shoal_ok(&["lab", "start", "--name", &lab.name, "n3"]);
    let t2 = lab.wait_for(Duration::from_secs(10), || !gone("n1") && !gone("n2"));
    eprintln!("restart of n3: its endpoints were back after {t2:?}");
    assert!(t2.is_some(), "n3's endpoints did not come back");
    assert!(pings(&lab, &a.netns, &c.ip));
    // A new generation (its record may reach n1 a moment after its first
    // datagrams, which already hand the old one's entries over).
    let old = n3["generation"].as_u64().unwrap();
    let newer = || {
        let view = lab.debug_json("n1", &["gossip"]);
        view["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["node"] == "n3" && m["generation"].as_u64().unwrap() > old)
    };
    assert!(
        lab.wait_for(Duration::from_secs(5), newer).is_some(),
        "{}",
        lab.debug_json("n1", &["gossip"])
    );
}

#[test]
fn graceful_stop_removes_the_node_at_once() {
    let lab = Lab::up(3, 1, "tc");
    let c = lab.info().endpoints[2].clone();
    shoal_tests::shoal_ok(&["lab", "stop", "--name", &lab.name, "n3"]);
    // `lab stop` returns when the agent has exited, after its goodbye.
    let t = lab.wait_for(Duration::from_secs(3), || {
        !lab.remote_ips("n1").contains(&c.ip) && !lab.remote_ips("n2").contains(&c.ip)
    });
    eprintln!("SIGTERM of n3: gone from the others {t:?} after its agent exited");
    assert!(
        t.is_some_and(|t| t < Duration::from_millis(500)),
        "not removed at once: {t:?}"
    );
}

/// Hostile gossip from hosts that hold the gossip key (an endpoint-only
/// lab, sealed with the lab's key file): what the merge rules and the
/// cluster id refuse. Hosts without the key are `gossip_keys.rs`'s.
#[test]
fn hostile_gossip_is_refused_while_traffic_flows() {
    let lab = Lab::up_with(2, 1, "tc", &["--managers", "0"]);
    let info = lab.info();
    let (a, b) = (&info.endpoints[0], &info.endpoints[1]);
    let refused = |key: &str| lab.refused("n1", key);

    // Garbage on 7946: not even sealed.
    let garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff; 3],
        b"hello gossip".to_vec(),
        vec![0; 2000],
        vec![0x4c, 0xc8, 0, 0, 0xff, 0xff, 0xff],
    ];
    send_udp(&info.nodes[1].netns, "198.18.0.1:7946", &garbage);
    let t = lab.wait_for(Duration::from_secs(3), || refused("malformed") >= 4);
    assert!(
        t.is_some(),
        "malformed datagrams not counted: {}",
        lab.debug_json("n1", &["gossip"])
    );

    // A daemon with the key but of another cluster joins through n1:
    // refused, never a member.
    let key = lab.gossip_key_file();
    let evil = lab.extra_host("ev", "198.18.0.201");
    let (mut evil_d, _) = lab.spawn_daemon_with(
        &evil,
        "evil",
        "198.18.0.201",
        "another-cluster",
        &["--gossip-key-file", &key],
    );
    let t = lab.wait_for(Duration::from_secs(5), || refused("foreign_cluster") > 0);
    assert!(t.is_some(), "foreign cluster not counted");
    let members = lab.debug_json("n1", &["gossip"])["members"].clone();
    assert!(
        !members
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["node"] == "evil"),
        "{members}"
    );

    // A daemon of this cluster with a wider subnet claims n1-e1's address
    // (later than n1 did) and an address outside labnet's subnet.
    let intr = lab.extra_host("in", "198.18.0.202");
    let (mut intr_d, sock) = lab.spawn_daemon_with(
        &intr,
        "intruder",
        "198.18.0.202",
        &lab.name,
        &["--gossip-key-file", &key],
    );
    let s = sock.to_string_lossy().into_owned();
    shoal_tests::shoal_ok(&[
        "debug",
        "--socket",
        &s,
        "network",
        "add",
        "labnet",
        "--vni",
        "4000",
        "--subnet",
        "10.0.0.0/16",
    ]);
    for (ip, n) in [("10.0.1.2/16", "x-dup"), ("10.0.2.5/16", "x-out")] {
        let name = format!("{}-{n}", lab.name);
        shoal_tests::shoal_ok(&[
            "endpoint",
            "--socket",
            &s,
            "create",
            "--network",
            "labnet",
            "--ip",
            ip,
            "--name",
            &name,
        ]);
    }
    let t = lab.wait_for(Duration::from_secs(5), || {
        let v = lab.debug_json("n2", &["gossip"]);
        v["refused"]["duplicate_ip"].as_u64().unwrap_or(0) > 0
            && v["refused"]["outside_subnet"].as_u64().unwrap_or(0) > 0
    });
    assert!(
        t.is_some(),
        "intruder's entries not refused on n2: {}",
        lab.debug_json("n2", &["gossip"])
    );
    // n2 still sends n1-e1's traffic to n1, and nothing to 10.0.2.5.
    let eps = lab.debug_json("n2", &["endpoints"]);
    let e = eps
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["ip"] == a.ip.as_str())
        .unwrap()
        .clone();
    assert_eq!(e["vtep"], info.nodes[0].underlay_ip.as_str(), "{eps}");
    assert!(!eps
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["ip"] == "10.0.2.5"));
    assert!(pings(&lab, &b.netns, &a.ip), "traffic stopped");
    assert!(
        lab.info().nodes.iter().all(|n| n.pid.is_some()),
        "a daemon died"
    );
    let _ = evil_d.kill();
    let _ = intr_d.kill();
    let _ = evil_d.wait();
    let _ = intr_d.wait();
}

#[test]
fn endpoint_api_refuses_bad_input_and_changes_nothing() {
    let lab = Lab::up(2, 1, "tc");
    let before = lab
        .shoal_on("n1", &["endpoint", "ls", "--format", "json"])
        .stdout;
    let n = format!("{}-bad", lab.name);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "endpoint",
                "create",
                "--network",
                "nope",
                "--ip",
                "10.0.1.9/24",
                "--name",
                &n,
            ],
            "no network named",
        ),
        (
            vec![
                "endpoint",
                "create",
                "--network",
                "labnet",
                "--ip",
                "10.0.2.9/24",
                "--name",
                &n,
            ],
            "outside",
        ),
        (
            vec![
                "endpoint",
                "create",
                "--network",
                "labnet",
                "--ip",
                "10.0.1.9/16",
                "--name",
                &n,
            ],
            "prefix",
        ),
        (
            vec![
                "endpoint",
                "create",
                "--network",
                "labnet",
                "--ip",
                "10.0.1.1/24",
                "--name",
                &n,
            ],
            "gateway",
        ),
        (
            vec![
                "endpoint",
                "create",
                "--network",
                "labnet",
                "--ip",
                "10.0.1.2/24",
                "--name",
                &n,
            ],
            "already used",
        ),
        (
            vec![
                "endpoint",
                "create",
                "--network",
                "labnet",
                "--ip",
                "10.0.1.3/24",
                "--name",
                &n,
            ],
            "node n2",
        ),
        (
            vec![
                "endpoint",
                "create",
                "--network",
                "labnet",
                "--ip",
                "banana",
                "--name",
                &n,
            ],
            "bad IP",
        ),
        (
            vec![
                "endpoint",
                "create",
                "--network",
                "labnet",
                "--ip",
                "10.0.1.9/24",
                "--mac",
                "zz",
                "--name",
                &n,
            ],
            "bad MAC",
        ),
        (
            vec![
                "endpoint",
                "create",
                "--network",
                "labnet",
                "--ip",
                "10.0.1.9/24",
                "--name",
                "../etc",
            ],
            "invalid endpoint name",
        ),
        (
            vec![
                "endpoint",
                "create",
                "--network",
                "labnet",
                "--ip",
                "10.0.1.9/24",
                "--netns",
                "/nonexistent",
            ],
            "cannot open",
        ),
        (vec!["endpoint", "rm", "nope"], "no endpoint named"),
        (
            vec![
                "debug",
                "network",
                "add",
                "x",
                "--vni",
                "0",
                "--subnet",
                "10.9.0.0/24",
            ],
            "out of range",
        ),
        (
            vec![
                "debug",
                "network",
                "add",
                "x",
                "--vni",
                "16777216",
                "--subnet",
                "10.9.0.0/24",
            ],
            "out of range",
        ),
        (
            vec![
                "debug",
                "network",
                "add",
                "x",
                "--vni",
                "9",
                "--subnet",
                "10.0.1.128/25",
            ],
            "overlaps",
        ),
        (
            vec![
                "debug",
                "network",
                "add",
                "x",
                "--vni",
                "9",
                "--subnet",
                "10.9.0.0/33",
            ],
            "bad subnet",
        ),
        (
            vec![
                "debug",
                "network",
                "add",
                "x",
                "--vni",
                "4000",
                "--subnet",
                "10.9.0.0/24",
            ],
            "already used",
        ),
        (vec!["debug", "network", "rm", "labnet"], "in use"),
    ];
    for (args, needle) in cases {
        let out = lab.shoal_on("n1", &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(
            err.contains(needle),
            "{args:?}: expected {needle:?} in {err:?}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err:?}");
    }
    // Malformed API requests straight on the socket.
    let sock = format!("/run/shoal/lab/{}/nodes/n1/shoal.sock", lab.name);
    for body in ["{", "[]", "{\"network\": 5}"] {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "--unix-socket",
                &sock,
                "-X",
                "POST",
                "-H",
                "content-type: application/json",
                "-d",
                body,
            ])
            .arg("http://shoal/v1/endpoints")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("bad request"), "{body}: {text}");
    }
    assert_eq!(
        lab.shoal_on("n1", &["endpoint", "ls", "--format", "json"])
            .stdout,
        before,
        "state changed"
    );
    assert!(
        !std::path::Path::new(&format!("/run/netns/{n}")).exists(),
        "a namespace was left behind"
    );
    assert!(
        lab.info().nodes.iter().all(|n| n.pid.is_some()),
        "a daemon died"
    );
}

#[test]
fn second_daemon_on_the_same_socket_is_refused() {
    let lab = Lab::up(1, 1, "tc");
    let sock = format!("/run/shoal/lab/{}/nodes/n1/shoal.sock", lab.name);
    let out = std::process::Command::new(shoal_tests::shoal_bin())
        .args([
            "daemon",
            "--advertise-addr",
            "198.18.0.1",
            "--data-dir",
            &format!("/run/shoal/lab/{}/other", lab.name),
        ])
        .args(["--bpffs-dir", "/sys/fs/bpf/shoal-never", "--socket", &sock])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already listening"), "{err}");
    assert!(!std::path::Path::new("/sys/fs/bpf/shoal-never").exists());
}

/// Endpoint gossip is scoped per network (issue 24): a node holds a
/// network's entries only while it has a task on it, gets them when its
/// first one starts, and drops them when its last one goes; every node is
/// on the ingress network.
#[test]
fn a_network_s_entries_stay_among_the_nodes_on_it() {
    use shoal_tests::services::{create_whoami, running, service_vip};
    use shoal_tests::{ok, shoal, shoal_bin, wait};
    let lab = Lab::up_with(3, 0, "tc", &[]);
    ok(lab.shoal_on("n1", &["network", "create", "appnet"]));
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(lab.shoal_on("n1", &["network", "inspect", "appnet"]))).unwrap();
    let vni: u64 = inspect[0]["Options"]["com.docker.network.driver.overlay.vxlanid_list"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let out = create_whoami(
        &lab,
        "web",
        &["--replicas", "2", "--constraint", "node.hostname==n2"],
    );
    assert!(out.contains("converged"), "{out}");
    let vip = service_vip(&lab, "web");
    // What a node holds of appnet: its instance's members, and entries.
    let held = |n: &str| -> (Option<Vec<String>>, usize) {
        let g = lab.debug_json(n, &["gossip"]);
        let members = g["networks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["vni"] == vni)
            .map(|x| {
                x["members"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m.as_str().unwrap().to_string())
                    .collect()
            });
        let entries = g["table"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["vni"] == vni)
            .count();
        (members, entries)
    };
    let on_ingress = |n: &str| {
        lab.debug_json(n, &["gossip"])["networks"]
            .as_array()
            .unwrap()
            .len()
    };
    wait("n2 alone on appnet", 10, || {
        held("n2").0 == Some(vec!["n2".to_string()])
    });
    std::thread::sleep(Duration::from_secs(2));
    for n in ["n1", "n3"] {
        assert_eq!(held(n), (None, 0), "{n} holds appnet's gossip");
        assert_eq!(on_ingress(n), 1, "{n}: only the ingress network");
    }
    // A task on n1: n1 joins appnet, and its first request by name works.
    let bin = shoal_bin().to_string_lossy().into_owned();
    let out = create_whoami(
        &lab,
        "client",
        &["--replicas", "1", "--constraint", "node.hostname==n1"],
    );
    assert!(out.contains("converged"), "{out}");
    let client = running(&lab, "n1", "client").remove(0);
    let via_name = || {
        let o = shoal(&[
            "lab",
            "exec",
            "--name",
            &lab.name,
            "n1",
            "--",
            &bin,
            "exec",
            &client.id,
            "--",
            "curl",
            "-s",
            "-m",
            "3",
            "http://web/",
        ]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // The join pulls the table: n1 holds n2's two tasks within a second or
    // two of its task running (it may well already).
    let t0 = std::time::Instant::now();
    wait("n1 holds n2's two tasks", 5, || {
        held("n1") == (Some(vec!["n1".to_string(), "n2".to_string()]), 2)
    });
    eprintln!(
        "n1 held appnet's table {:?} after its task ran",
        t0.elapsed()
    );
    let first = via_name();
    assert!(first.contains("Task: web."), "a request by name: {first:?}");
    wait("n2 holds n1's task", 5, || {
        held("n2") == (Some(vec!["n1".to_string(), "n2".to_string()]), 1)
    });
    assert_eq!(held("n3"), (None, 0), "n3 is not on appnet");
    let t = lab.run(
        &shoal_tests::services::task_ns(&lab, &client),
        &["curl", "-s", "-m", "3", &format!("http://{vip}/")],
    );
    assert!(String::from_utf8_lossy(&t.stdout).contains("Task: web."));
    // Its last task gone, n1 leaves appnet and drops its entries; n2 drops
    // n1's.
    ok(lab.shoal_on("n1", &["service", "rm", "client"]));
    wait("n1 off appnet", 20, || held("n1") == (None, 0));
    wait("n2 alone on appnet again", 10, || {
        held("n2") == (Some(vec!["n2".to_string()]), 0)
    });
}

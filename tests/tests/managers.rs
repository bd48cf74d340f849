//! Raft managers on lab clusters (`shoal lab up --managers M`): agreement
//! across managers, leader failover after kill -9, a partitioned minority
//! refusing writes, every manager restarted, promote/demote/drain/rm/leave
//! round trips, a lagging manager catching up from a snapshot, mutual TLS
//! on 2377 seen from a stranger, and bad input changing nothing.

use std::time::Instant;

use serde_json::Value;
use shoal_tests::{ok, refused, wait, Lab};

/// `node ls --format json` on `node`, or None if it refuses.
fn rows(lab: &Lab, node: &str) -> Option<Vec<Value>> {
    let o = lab.shoal_on(node, &["node", "ls", "--format", "json"]);
    o.status.success().then(|| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    })
}

/// (hostname, status, availability, manager status) per node, as `node`
/// sees them.
fn table(lab: &Lab, node: &str) -> Option<Vec<(String, String, String, String)>> {
    rows(lab, node).map(|rs| {
        rs.iter()
            .map(|r| {
                let f = |k: &str| r[k].as_str().unwrap_or_default().to_string();
                (
                    f("Hostname"),
                    f("Status"),
                    f("Availability"),
                    f("ManagerStatus"),
                )
            })
            .collect()
    })
}

fn leader(lab: &Lab, node: &str) -> Option<String> {
    table(lab, node)?
        .into_iter()
        .find(|r| r.3 == "Leader")
        .map(|r| r.0)
}

fn label(lab: &Lab, on: &str, target: &str, key: &str) -> Option<String> {
    let o = lab.shoal_on(on, &["node", "inspect", target]);
    if !o.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&o.stdout).ok()?;
    v[0]["Spec"]["Labels"][key].as_str().map(String::from)
}

fn set_label(lab: &Lab, on: &str, target: &str, kv: &str) -> std::process::Output {
    lab.shoal_on(on, &["node", "update", "--label-add", kv, target])
}

#[test]
fn three_managers_fail_over_refuse_in_minority_and_restart() {
    let lab = Lab::up_with(5, 1, "tc", &["--managers", "3"]);
    // Every manager sees the same cluster.
    let expect = vec![
        ("n1", "Ready", "Active", "Leader"),
        ("n2", "Ready", "Active", "Reachable"),
        ("n3", "Ready", "Active", "Reachable"),
        ("n4", "Ready", "Active", ""),
        ("n5", "Ready", "Active", ""),
    ];
    let expect: Vec<(String, String, String, String)> = expect
        .into_iter()
        .map(|(a, b, c, d)| (a.into(), b.into(), c.into(), d.into()))
        .collect();
    for m in ["n1", "n2", "n3"] {
        assert_eq!(table(&lab, m).unwrap(), expect, "node ls on {m}");
    }
    let worker = lab.shoal_on("n4", &["node", "ls"]);
    assert!(String::from_utf8_lossy(&worker.stderr).contains("worker nodes can't"));

    // kill -9 the leader: the others elect one and take writes again.
    shoal_tests::shoal_ok(&["lab", "kill", "--name", &lab.name, "n1"]);
    let t0 = Instant::now();
    wait("a write after the leader's death", 20, || {
        set_label(&lab, "n2", "n4", "epoch=1").status.success()
    });
    let failover = t0.elapsed();
    println!("leader kill -9 -> write accepted by the new leader: {failover:?}");
    let new_leader = leader(&lab, "n2").expect("a new leader");
    assert_ne!(new_leader, "n1");
    wait("n1 marked down", 10, || {
        table(&lab, "n2").unwrap()[0].1 == "Down"
    });
    assert_eq!(table(&lab, "n2").unwrap()[0].3, "Unreachable");
    // The old leader comes back from its disk and catches up.
    shoal_tests::shoal_ok(&["lab", "start", "--name", &lab.name, "n1"]);
    wait("n1 caught up", 20, || {
        label(&lab, "n1", "n4", "epoch").as_deref() == Some("1")
    });
    wait("n1 ready and reachable again", 10, || {
        let r = &table(&lab, "n2").unwrap()[0];
        r.1 == "Ready" && (r.3 == "Reachable" || r.3 == "Leader")
    });

    // Partition a follower manager: the majority keeps writing, the
    // minority refuses with a clear error.
    let leader_now = leader(&lab, "n1").unwrap();
    let cut = ["n1", "n2", "n3"]
        .into_iter()
        .find(|n| *n != leader_now)
        .unwrap();
    let other = ["n1", "n2", "n3"]
        .into_iter()
        .find(|n| *n != leader_now && *n != cut)
        .unwrap();
    let dev = format!("{}-eth0", lab.name);
    let ns = format!("{}-{cut}", lab.name);
    let link = |state: &str| {
        let o = std::process::Command::new("ip")
            .args(["netns", "exec", &ns, "ip", "link", "set", &dev, state])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    link("down");
    refused(
        &lab,
        cut,
        &["node", "update", "--label-add", "side=minority", "n5"],
        "majority of managers",
    );
    assert!(set_label(&lab, other, "n5", "side=majority")
        .status
        .success());
    wait("the cut manager marked down", 10, || {
        table(&lab, other)
            .unwrap()
            .iter()
            .any(|r| r.0 == cut && r.1 == "Down")
    });
    link("up");
    wait("the cut manager caught up", 20, || {
        label(&lab, cut, "n5", "side").as_deref() == Some("majority")
    });
    wait("the cut manager ready again", 10, || {
        table(&lab, other)
            .unwrap()
            .iter()
            .any(|r| r.0 == cut && r.1 == "Ready")
    });

    // Every manager stopped, then started: the state is on their disks.
    for n in ["n1", "n2", "n3"] {
        shoal_tests::shoal_ok(&["lab", "stop", "--name", &lab.name, n]);
    }
    for n in ["n1", "n2", "n3"] {
        shoal_tests::shoal_ok(&["lab", "start", "--name", &lab.name, n]);
    }
    wait("a leader after the full restart", 20, || {
        leader(&lab, "n3").is_some()
    });
    for m in ["n1", "n2", "n3"] {
        assert_eq!(label(&lab, m, "n5", "side").as_deref(), Some("majority"));
        assert_eq!(label(&lab, m, "n4", "epoch").as_deref(), Some("1"));
        assert_eq!(table(&lab, m).unwrap().len(), 5);
    }
    assert!(set_label(&lab, "n3", "n4", "epoch=2").status.success());
}

#[test]
fn promote_demote_drain_leave_rm_and_bad_input() {
    let lab = Lab::up_with(4, 1, "tc", &["--managers", "1"]);
    // Bad input first: clear errors, nothing changes.
    let before = table(&lab, "n1").unwrap();
    refused(&lab, "n1", &["node", "inspect", "nosuch"], "no such node");
    refused(&lab, "n1", &["node", "promote", "nosuch"], "no such node");
    refused(&lab, "n1", &["node", "demote", "n2"], "already a worker");
    refused(&lab, "n1", &["node", "demote", "n1"], "last manager");
    refused(&lab, "n1", &["node", "promote", "n1"], "already a manager");
    refused(&lab, "n1", &["swarm", "leave"], "--force");
    refused(
        &lab,
        "n1",
        &["node", "update", "--availability", "gone", "n2"],
        "availability",
    );
    refused(
        &lab,
        "n1",
        &["node", "update", "--label-add", "=x", "n2"],
        "bad label",
    );
    refused(&lab, "n1", &["node", "rm", "n2"], "not down");
    assert_eq!(
        table(&lab, "n1").unwrap(),
        before,
        "refusals changed nothing"
    );

    // Mutual TLS on 2377, seen from a stranger on the underlay: no
    // certificate -> 401 before anything is read; a certificate of another
    // CA -> no handshake; plain HTTP -> nothing.
    let curl = |args: &[&str]| {
        let mut a = vec!["curl", "-s", "-k", "-m", "5", "-X", "POST"];
        a.extend_from_slice(args);
        lab.run(&format!("{}-n4", lab.name), &a)
    };
    let o = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "https://198.18.0.1:2377/raft/vote",
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "401");
    // Removed when dropped, also if an assertion fails.
    let dir = tempfile::tempdir().unwrap();
    let (key, crt) = (dir.path().join("k.pem"), dir.path().join("c.pem"));
    let gen = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=intruder/OU=swarm-manager",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .unwrap();
    assert!(
        gen.status.success(),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );
    let o = curl(&[
        "--cert",
        crt.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "https://198.18.0.1:2377/raft/vote",
    ]);
    assert!(!o.status.success(), "a foreign certificate was accepted");
    let o = curl(&["http://198.18.0.1:2377/raft/vote"]);
    assert!(!o.status.success() || o.stdout.is_empty());
    // Garbage on the port and a malformed join: refused, the manager lives.
    lab.run(
        &format!("{}-n4", lab.name),
        &[
            "bash",
            "-c",
            "head -c 4096 /dev/urandom > /dev/tcp/198.18.0.1/2377 || true",
        ],
    );
    let o = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        "content-type: application/json",
        "-d",
        "{\"token\": 7",
        "https://198.18.0.1:2377/swarm/join",
    ]);
    let code = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(code.starts_with('4'), "malformed join answered {code}");
    assert_eq!(
        table(&lab, "n1").unwrap(),
        before,
        "still serving, unchanged"
    );

    // Promote n2: it joins Raft as a voter and answers manager commands.
    ok(lab.shoal_on("n1", &["node", "promote", "n2"]));
    wait("n2 reachable", 15, || {
        table(&lab, "n1").unwrap()[1].3 == "Reachable"
    });
    wait("n2 serves node ls", 10, || rows(&lab, "n2").is_some());
    // Demote the leader itself: n2 takes over, n1 is a worker.
    ok(lab.shoal_on("n2", &["node", "demote", "n1"]));
    wait("n2 leads", 15, || {
        leader(&lab, "n2").as_deref() == Some("n2")
    });
    wait("n1 is a worker", 10, || {
        String::from_utf8_lossy(&lab.shoal_on("n1", &["node", "ls"]).stderr)
            .contains("worker nodes can't")
    });
    refused(&lab, "n2", &["node", "demote", "n2"], "last manager");

    // Drain, then a worker leaves: down, then removable.
    ok(lab.shoal_on("n2", &["node", "update", "--availability", "drain", "n3"]));
    assert_eq!(table(&lab, "n2").unwrap()[2].2, "Drain");
    ok(lab.shoal_on("n4", &["swarm", "leave"]));
    wait("n4 down", 10, || table(&lab, "n2").unwrap()[3].1 == "Down");
    ok(lab.shoal_on("n2", &["node", "rm", "n4"]));
    assert_eq!(table(&lab, "n2").unwrap().len(), 3);
    // Bad joins from the node outside the swarm.
    for (token, addr, needle) in [
        ("SWMTKN-1-xyz", "198.18.0.1:2377", "invalid join token"),
        (
            "SWMTKN-2-xyz",
            "198.18.0.1:2377",
            "unsupported join token version",
        ),
        (
            "SWMTKN-1-00000000000000000000000000000000000000000000000000-0000000000000000000000000",
            "nowhere",
            "bad manager address",
        ),
        (
            "SWMTKN-1-00000000000000000000000000000000000000000000000000-0000000000000000000000000",
            "198.18.0.2:2377",
            "does not hold the CA",
        ),
    ] {
        refused(
            &lab,
            "n4",
            &["swarm", "join", "--token", token, addr],
            needle,
        );
    }
    // It can join again, under a new id.
    let token = ok(lab.shoal_on("n2", &["swarm", "join-token", "-q", "worker"]));
    ok(lab.shoal_on(
        "n4",
        &["swarm", "join", "--token", token.trim(), "198.18.0.2:2377"],
    ));
    assert_eq!(table(&lab, "n2").unwrap().len(), 4);
}

/// Log compaction and snapshots: with a snapshot every 20 entries, the
/// leader compacts its log; a manager that was down catches up; a manager
/// added after compaction can only be brought up to date by installing a
/// snapshot, and does.
/// A promotion the leader cannot commit (its managers lost their quorum)
/// waits with the new member running and its log kept, and completes once
/// the quorum is back: the member is never wiped and restarted meanwhile
/// (the leader may already count it as a voter, and a voter that forgets
/// its log could vote twice in a term).
#[test]
fn a_promotion_without_quorum_keeps_its_raft_member_until_it_completes() {
    let lab = Lab::up_with(3, 0, "tc", &["--managers", "2"]);
    wait("n1 leads", 30, || {
        leader(&lab, "n1").as_deref() == Some("n1")
    });
    shoal_tests::shoal_ok(&["lab", "stop", "--name", &lab.name, "n3"]);
    ok(lab.shoal_on("n1", &["node", "promote", "n3"]));
    // n1 alone of its two managers: nothing commits.
    shoal_tests::shoal_ok(&["lab", "stop", "--name", &lab.name, "n2"]);
    shoal_tests::shoal_ok(&["lab", "start", "--name", &lab.name, "n3"]);
    wait("n3's promotion refused for want of a quorum", 150, || {
        lab.node_log("n3")
            .contains("did not add this node to Raft yet")
    });
    shoal_tests::shoal_ok(&["lab", "start", "--name", &lab.name, "n2"]);
    wait("n3 serves node ls", 90, || rows(&lab, "n3").is_some());
    let log = lab.node_log("n3");
    assert_eq!(
        log.matches("promotion: Raft member started").count(),
        1,
        "one member for the whole promotion"
    );
    assert!(log.contains("promoted to manager"));
    let r = lab.debug_json("n1", &["raft"]);
    assert_eq!(r["voters"].as_array().unwrap().len(), 3, "{r}");
    // And the three agree on a write.
    assert!(set_label(&lab, "n3", "n2", "after=promotion")
        .status
        .success());
    wait("n2 sees it", 30, || {
        label(&lab, "n2", "n2", "after").as_deref() == Some("promotion")
    });
}

#[test]
fn managers_compact_the_log_and_catch_up_from_a_snapshot() {
    let lab = Lab::up_with(
        4,
        1,
        "tc",
        &[
            "--managers",
            "3",
            "--daemon-arg=--raft-snapshot-interval=20",
        ],
    );
    let writes = |from: usize, to: usize| {
        for i in from..to {
            let kv = format!("seq={i}");
            assert!(set_label(&lab, "n1", "n4", &kv).status.success());
        }
    };
    writes(0, 60);
    let raft = |node: &str| lab.debug_json(node, &["raft"]);
    let r1 = raft("n1");
    assert!(r1["snapshot"].as_u64().unwrap_or(0) >= 40, "{r1}");
    assert!(
        r1["purged"].as_u64().unwrap_or(0) > 20,
        "log compacted: {r1}"
    );
    // A manager down while the log moves on catches up when it returns.
    shoal_tests::shoal_ok(&["lab", "stop", "--name", &lab.name, "n3"]);
    writes(60, 90);
    shoal_tests::shoal_ok(&["lab", "start", "--name", &lab.name, "n3"]);
    wait("n3 caught up", 30, || {
        label(&lab, "n3", "n4", "seq").as_deref() == Some("89")
    });
    // A new manager after compaction: only a snapshot can bring it up.
    ok(lab.shoal_on("n1", &["node", "promote", "n4"]));
    wait("n4 serves node ls", 30, || rows(&lab, "n4").is_some());
    wait("n4 caught up", 30, || {
        label(&lab, "n4", "n4", "seq").as_deref() == Some("89")
    });
    let r4 = raft("n4");
    assert!(
        r4["snapshot"].as_u64().unwrap_or(0) >= 40,
        "n4 installed a snapshot: {r4}"
    );
    assert_eq!(r4["voters"].as_array().unwrap().len(), 4);
}

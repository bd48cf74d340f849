//! Gossip for swarm members only (issue 21): every datagram on 7946 is
//! sealed with a key from the managers. On real lab swarms: a host that
//! never joined gets nothing programmed, a captured datagram replayed
//! later changes nothing, a removed node's key stops working within
//! seconds, and rotations under load lose nothing. Every refusal is
//! counted by reason.

use std::time::{Duration, Instant};

use shoal_tests::pcap;
use shoal_tests::services::{create_whoami, running, task_ns};
use shoal_tests::{ok, send_udp, wait, Lab};

/// A node's `debug gossip` key view: (source, ring, sealing).
fn keys(lab: &Lab, node: &str) -> (String, Vec<u64>, Option<u64>) {
    let k = lab.debug_json(node, &["gossip"])["keys"].clone();
    (
        k["source"].as_str().unwrap_or_default().to_string(),
        k["ring"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
            .unwrap_or_default(),
        k["sealing"].as_u64(),
    )
}

/// Names of the members a node's gossip knows.
fn members(lab: &Lab, node: &str) -> Vec<String> {
    lab.debug_json(node, &["gossip"])["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["node"].as_str().unwrap().to_string())
        .collect()
}

/// The (VNI, a /24 subnet, VIP) of a service's network, from the gossiped
/// task records on `node`.
fn service_net(lab: &Lab, node: &str, service: &str) -> (u64, String, String) {
    let table = lab.debug_json(node, &["gossip"])["table"].clone();
    let e = table
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["svc"]["service"] == service)
        .unwrap_or_else(|| panic!("no task of {service} in {table}"))
        .clone();
    let ip = e["ip"].as_str().unwrap();
    let net = format!("{}.0/24", ip.rsplit_once('.').unwrap().0);
    (
        e["vni"].as_u64().unwrap(),
        net,
        e["svc"]["vip"].as_str().unwrap_or_default().to_string(),
    )
}

/// `web` on network `appnet`, one whoami task per node, once all run.
fn three_web_tasks(lab: &Lab) -> Vec<shoal_tests::services::Task> {
    ok(lab.shoal_on("n1", &["network", "create", "appnet"]));
    create_whoami(
        lab,
        "web",
        &["--replicas", "3", "--replicas-max-per-node", "1"],
    );
    wait("three web tasks", 30, || {
        running(lab, "n1", "web").len() == 3
    });
    running(lab, "n1", "web")
}

#[test]
fn a_host_that_never_joined_gets_nothing_programmed() {
    let lab = Lab::up(3, 0, "tc");
    let tasks = three_web_tasks(&lab);
    wait("every task programmed on every node", 20, || {
        ["n1", "n2", "n3"].iter().all(|n| {
            let ips = lab.remote_ips(n);
            tasks
                .iter()
                .filter(|t| t.node != *n)
                .all(|t| ips.contains(&t.ip))
        })
    });
    let (vni, subnet, _) = service_net(&lab, "n1", "web");
    let prefix = subnet.trim_end_matches("0/24").to_string();

    // Two hosts that never joined run their own daemon with the lab's
    // cluster id, join n1's gossip, and announce an endpoint on appnet:
    // one gossips in clear, one seals with a key of its own.
    let fake = |suffix: &str, ip: &str, extra: &[&str], ep: &str| {
        let ns = lab.extra_host(suffix, ip);
        let (child, sock) = lab.spawn_daemon_with(&ns, suffix, ip, &lab.name, extra);
        let s = sock.to_string_lossy().into_owned();
        let vni = vni.to_string();
        ok(shoal_tests::shoal(&[
            "debug", "--socket", &s, "network", "add", "appnet", "--vni", &vni, "--subnet", &subnet,
        ]));
        let name = format!("{}-{suffix}x", lab.name);
        ok(shoal_tests::shoal(&[
            "endpoint",
            "--socket",
            &s,
            "create",
            "--network",
            "appnet",
            "--ip",
            &format!("{ep}/24"),
            "--name",
            &name,
        ]));
        KillOnDrop(child)
    };
    let own_key = format!("/run/shoal/lab/{}/own.key", lab.name);
    std::fs::write(&own_key, "11".repeat(32)).unwrap();
    let clear_ip = format!("{prefix}200");
    let keyed_ip = format!("{prefix}201");
    let _clear = fake("in", "198.18.0.202", &["--insecure-gossip"], &clear_ip);
    let _keyed = fake(
        "ik",
        "198.18.0.203",
        &["--gossip-key-file", &own_key],
        &keyed_ip,
    );

    // n1 refuses both, by reason: plaintext is malformed, a key of its
    // own is unknown (ids of swarm keys start at 1; a key file's is 0).
    let t = lab.wait_for(Duration::from_secs(10), || {
        lab.refused("n1", "malformed") > 0 && lab.refused("n1", "unknown_key") > 0
    });
    assert!(t.is_some(), "{}", lab.debug_json("n1", &["gossip"]));
    std::thread::sleep(Duration::from_secs(2));
    for n in ["n1", "n2", "n3"] {
        let ips = lab.remote_ips(n);
        assert!(
            !ips.contains(&clear_ip) && !ips.contains(&keyed_ip),
            "{n} programmed an outsider's endpoint: {ips:?}"
        );
        let m = members(&lab, n);
        assert!(
            !m.iter().any(|x| x == "in" || x == "ik"),
            "{n} counts an outsider as a member: {m:?}"
        );
    }
    // The swarm's own endpoints are all still there, and the refusals
    // show in /metrics too.
    for t in &tasks {
        if t.node != "n1" {
            assert!(lab.remote_ips("n1").contains(&t.ip));
        }
    }
    let metrics = lab.run_ok(
        &format!("{}-client", lab.name),
        &["curl", "-s", "http://198.18.0.1:9323/metrics"],
    );
    for reason in ["malformed", "unknown_key"] {
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with("shoal_gossip_refused_total")
                    && l.contains(&format!("reason=\"{reason}\""))
            })
            .unwrap_or_else(|| panic!("no {reason} series"));
        let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n > 0.0, "{line}");
    }
    assert!(metrics.contains("shoal_gossip_key_id{"), "{metrics}");
    assert!(
        lab.info().nodes.iter().all(|n| n.pid.is_some()),
        "a daemon died"
    );
}

/// UDP payloads to 198.18.0.1:7946 from 198.18.0.2 in a pcap (whole
/// datagrams only: an IP fragment is no gossip datagram on its own).
fn gossip_payloads(frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    frames
        .iter()
        .filter_map(|f| {
            if f.len() < 42 || f[12..14] != [0x08, 0x00] || f[23] != 17 {
                return None;
            }
            let frag = u16::from_be_bytes([f[20], f[21]]);
            if frag & 0x3fff != 0 || f[26..30] != [198, 18, 0, 2] || f[30..34] != [198, 18, 0, 1] {
                return None;
            }
            let u = 14 + (f[14] & 0x0f) as usize * 4;
            let len = u16::from_be_bytes([f[u + 4], f[u + 5]]) as usize;
            (u16::from_be_bytes([f[u + 2], f[u + 3]]) == 7946 && f.len() >= u + len)
                .then(|| f[u + 8..u + len].to_vec())
        })
        .collect()
}

#[test]
fn a_captured_datagram_replayed_later_changes_nothing() {
    let lab = Lab::up(2, 1, "tc");
    let info = lab.info();
    // Removed when dropped, also if an assertion fails.
    let dir = tempfile::tempdir().unwrap();
    let file = dir
        .path()
        .join("gossip.pcap")
        .to_string_lossy()
        .into_owned();
    let _ = lab.run(
        &info.underlay_netns,
        &[
            "timeout",
            "6",
            "tcpdump",
            "-i",
            &info.underlay_bridge,
            "-n",
            "-U",
            "--immediate-mode",
            "-c",
            "20",
            "-w",
            &file,
            "udp and dst port 7946 and src host 198.18.0.2 and dst host 198.18.0.1",
        ],
    );
    let payloads = gossip_payloads(&pcap::frames(&std::fs::read(&file).unwrap()));
    assert!(payloads.len() >= 5, "captured {} datagrams", payloads.len());
    assert!(payloads.iter().all(|p| p[0] == 0xc6), "all sealed");
    std::thread::sleep(Duration::from_secs(2));

    let before = lab.debug_json("n1", &["gossip"]);
    let (ips, replays) = (lab.remote_ips("n1"), lab.refused("n1", "replay"));
    // From another host on the underlay (the source is not part of the
    // seal: the counter and the sender id are).
    send_udp(
        &format!("{}-client", lab.name),
        "198.18.0.1:7946",
        &payloads,
    );
    let want = replays + payloads.len() as u64;
    let t = lab.wait_for(Duration::from_secs(3), || {
        lab.refused("n1", "replay") >= want
    });
    assert!(t.is_some(), "{}", lab.debug_json("n1", &["gossip"]));
    let after = lab.debug_json("n1", &["gossip"]);
    for r in [
        "open_failed",
        "unknown_key",
        "malformed",
        "malformed_packets",
    ] {
        assert_eq!(before["refused"][r], after["refused"][r], "{r}");
    }
    assert_eq!(lab.remote_ips("n1"), ips);
    let gens = |v: &serde_json::Value| -> Vec<(String, u64, bool)> {
        v["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["node"].as_str().unwrap().to_string(),
                    m["generation"].as_u64().unwrap(),
                    m["live"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(gens(&before), gens(&after));
}

#[test]
fn a_removed_node_s_key_stops_working_within_seconds() {
    let lab = Lab::up(3, 1, "tc");
    let info = lab.info();
    let n3_ip = info.endpoints[2].ip.clone();
    let (_, ring, sealing) = keys(&lab, "n3");
    assert!(!ring.is_empty() && sealing.is_some());
    // n3 is frozen, as a node that ignores its removal would be: it keeps
    // its keys in memory and gossips with them again once thawed.
    let pid = info.nodes[2].pid.unwrap().to_string();
    ok(std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .output()
        .unwrap());
    let thaw = Thaw(pid.clone());
    ok(lab.shoal_on("n1", &["node", "rm", "--force", "n3"]));
    let t0 = Instant::now();
    // The others drop the key n3 holds.
    let old = sealing.unwrap();
    let t = lab.wait_for(Duration::from_secs(5), || {
        ["n1", "n2"].iter().all(|n| {
            let (_, r, s) = keys(&lab, n);
            !r.contains(&old) && s.is_some_and(|s| s > old)
        })
    });
    eprintln!("node rm: n3's key {old} gone from n1 and n2 after {t:?}");
    assert!(t.is_some(), "{:?} {:?}", keys(&lab, "n1"), keys(&lab, "n2"));
    let unknown = |n: &str| lab.refused(n, "unknown_key");
    let before = (unknown("n1"), unknown("n2"));
    drop(thaw);
    let t = lab.wait_for(Duration::from_secs(5), || {
        unknown("n1") > before.0 || unknown("n2") > before.1
    });
    eprintln!(
        "n3 thawed: its gossip refused after {t:?} ({} s after node rm)",
        t0.elapsed().as_secs_f64()
    );
    assert!(t.is_some(), "n3's gossip was not refused");
    assert!(t0.elapsed() < Duration::from_secs(12));
    std::thread::sleep(Duration::from_secs(2));
    for n in ["n1", "n2"] {
        assert!(
            !lab.remote_ips(n).contains(&n3_ip),
            "{n} still has n3's endpoint"
        );
    }
    // n3 learns of its removal, forgets the swarm's keys and goes quiet.
    let t = lab.wait_for(Duration::from_secs(10), || keys(&lab, "n3").0 == "none");
    assert!(t.is_some(), "{:?}", keys(&lab, "n3"));
    assert!(!std::path::Path::new(&format!(
        "/run/shoal/lab/{}/nodes/n3/gossip-keys.json",
        lab.name
    ))
    .exists());

    // `swarm leave` rotates at once too.
    let newest = |n: &str| keys(&lab, n).1.first().copied().unwrap_or(0);
    let n1_before = newest("n1");
    ok(lab.shoal_on("n2", &["swarm", "leave"]));
    let t = lab.wait_for(Duration::from_secs(3), || newest("n1") > n1_before);
    eprintln!("swarm leave of n2: a new key on n1 after {t:?}");
    assert!(t.is_some());
    assert_eq!(keys(&lab, "n2").0, "none");
}

#[test]
fn rotations_under_load_lose_nothing() {
    let lab = Lab::up_with(3, 1, "tc", &["--daemon-arg=--gossip-key-rotation=3s"]);
    let tasks = three_web_tasks(&lab);
    let (_, _, vip) = service_net(&lab, "n1", "web");
    let client = tasks.iter().find(|t| t.node == "n1").unwrap();
    let others: Vec<String> = tasks
        .iter()
        .filter(|t| t.node != "n1")
        .map(|t| t.ip.clone())
        .collect();
    let targets = format!("{vip} {}", others.join(" "));
    wait("the VIP and the other tasks answer", 30, || {
        let o = lab.run(
            &task_ns(&lab, client),
            &["curl", "-s", "-m", "2", &format!("http://{vip}/")],
        );
        o.status.success()
    });
    let newest = || keys(&lab, "n1").1.first().copied().unwrap_or(0);
    let start_key = newest();
    let refusals = |n: &str| lab.refused(n, "unknown_key") + lab.refused(n, "open_failed");
    let refused_before: Vec<u64> = ["n1", "n2", "n3"].iter().map(|n| refusals(n)).collect();
    let drops_before: Vec<_> = ["n1", "n2", "n3"].iter().map(|n| lab.drops(n)).collect();
    eprintln!("curl targets: {targets} (the VIP first)");

    // A curl loop from n1's task to the VIP and to the tasks on n2 and n3.
    let ns = task_ns(&lab, client);
    let script = format!(
        "end=$(($(date +%s)+14)); while [ $(date +%s) -lt $end ]; do \
         for ip in {targets}; do t=$(date +%s.%N); \
         curl -s -m 3 -o /dev/null -w \"%{{http_code}} $ip %{{time_connect}}s\\n\" http://$ip/ \
         || echo \"fail $ip since $t: curl exit $?\"; done; done"
    );
    let curls = std::thread::scope(|s| {
        let h = s.spawn(|| lab.run(&ns, &["sh", "-c", &script]));
        // Meanwhile endpoints come and go on n2: each must reach n1 and n3,
        // and leave them again.
        let t0 = Instant::now();
        let mut rounds = 0;
        while t0.elapsed() < Duration::from_secs(13) {
            let ip = format!("10.0.1.{}", 100 + rounds % 100);
            let name = format!("{}-r{rounds}", lab.name);
            ok(lab.shoal_on(
                "n2",
                &[
                    "endpoint",
                    "create",
                    "--network",
                    "labnet",
                    "--ip",
                    &format!("{ip}/24"),
                    "--name",
                    &name,
                ],
            ));
            for n in ["n1", "n3"] {
                let t = lab.wait_for(Duration::from_secs(5), || lab.remote_ips(n).contains(&ip));
                assert!(t.is_some(), "round {rounds}: {n} never programmed {ip}");
            }
            ok(lab.shoal_on("n2", &["endpoint", "rm", &name]));
            for n in ["n1", "n3"] {
                let t = lab.wait_for(Duration::from_secs(5), || !lab.remote_ips(n).contains(&ip));
                assert!(t.is_some(), "round {rounds}: {n} kept {ip}");
            }
            rounds += 1;
        }
        eprintln!("{rounds} endpoint create/rm rounds, each programmed and removed everywhere");
        assert!(rounds >= 5, "{rounds} rounds");
        h.join().unwrap()
    });
    let out = String::from_utf8_lossy(&curls.stdout);
    let codes: Vec<&str> = out.lines().collect();
    // "CODE IP CONNECT-TIME" per request ("000 IP ..." then "fail IP since
    // T: curl exit E" for a lost one: which target, when it was asked, and
    // whether it timed out (28) or was refused or reset (7, 56)).
    let good = codes.iter().filter(|c| c.starts_with("200 ")).count();
    eprintln!("{good} of {} requests answered", codes.len());
    assert!(codes.len() >= 30, "{out}");
    let lost: Vec<&&str> = codes.iter().filter(|c| !c.starts_with("200 ")).collect();
    if !lost.is_empty() {
        // Which drop reasons moved on which node while the loop ran.
        for (n, before) in ["n1", "n2", "n3"].iter().zip(&drops_before) {
            let moved: Vec<(String, u64)> = lab
                .drops(n)
                .into_iter()
                .filter(|(r, c)| before.get(r) != Some(c))
                .map(|(r, c)| (r.clone(), c - before.get(&r).copied().unwrap_or(0)))
                .collect();
            eprintln!("{n} drops during the loop: {moved:?}");
        }
        panic!("requests lost of {}: {lost:?}", codes.len());
    }
    let rotated = newest() - start_key;
    eprintln!("{rotated} rotations during the run");
    assert!(rotated >= 3, "only {rotated} rotations");
    let refused_after: Vec<u64> = ["n1", "n2", "n3"].iter().map(|n| refusals(n)).collect();
    assert_eq!(refused_before, refused_after, "a rotation refused gossip");
}

/// A spawned daemon, killed when the test ends (also when it fails).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Resumes a stopped process when dropped (also when the test fails).
struct Thaw(String);

impl Drop for Thaw {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0])
            .output();
    }
}

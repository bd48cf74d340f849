//! Restart safety: the dataplane is pinned, so stopping and restarting a
//! node agent in the middle of a transfer keeps it flowing (also one
//! through a VIP), re-creates no veth and loses no map entry.

use std::process::Command;
use std::time::Duration;

use shoal_tests::services::{running, service_vip, task_ns};
use shoal_tests::{ok, shoal_ok, wait, Lab};

fn host_ifindexes(lab: &Lab, node: &str) -> Vec<(String, u64)> {
    let eps = lab.debug_json(node, &["endpoints"]);
    let mut v: Vec<(String, u64)> = eps
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "local")
        .map(|e| {
            (
                e["ip"].as_str().unwrap().to_string(),
                e["ifindex"].as_u64().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// A finished `iperf3 -J` client that must have succeeded: how many of its
/// intervals moved nothing, and the bytes received.
fn stalled_intervals(client: std::process::Child, what: &str) -> (usize, u64) {
    let out = client.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "iperf3 ({what}) failed across the restart: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stalled = r["intervals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["sum"]["bytes"].as_u64().unwrap_or(0) == 0)
        .count();
    (
        stalled,
        r["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0),
    )
}

/// A flow through a VIP across a restart of its client's agent: the
/// replies keep the VIP as their source, because the re-plumbed entry
/// keeps the balancer's mark (EP_F_VIP_CLIENT) that sends deliveries to
/// the reverse entry. Without it the client's TCP would reset the flow.
#[test]
fn a_vip_flow_keeps_its_replies_across_the_client_agent_s_restart() {
    let lab = Lab::up(2, 0, "tc");
    ok(lab.shoal_on("n1", &["network", "create", "appnet"]));
    let service = |name: &str, node: &str, cmd: &[&str]| {
        let constraint = format!("node.hostname=={node}");
        let mut a = vec!["service", "create", "--name", name, "--network", "appnet"];
        a.extend(["--constraint", &constraint, "--"]);
        a.extend_from_slice(cmd);
        ok(lab.shoal_on("n1", &a));
    };
    service("perf", "n2", &["iperf3", "-s", "-p", "5201"]);
    service("client", "n1", &["sleep", "100000"]);
    wait("perf and client running", 60, || {
        running(&lab, "n1", "perf").len() == 1 && running(&lab, "n1", "client").len() == 1
    });
    let client = task_ns(&lab, &running(&lab, "n1", "client")[0]);
    let vip = service_vip(&lab, "perf");
    wait("perf answering at its VIP", 30, || {
        lab.run(&client, &["iperf3", "-c", &vip, "-t", "1"])
            .status
            .success()
    });
    // A broken flow leaves iperf3 spinning on its control connection:
    // bounded, it fails instead.
    let iperf = Command::new("timeout")
        .args([
            "30", "ip", "netns", "exec", &client, "iperf3", "-c", &vip, "-t", "6",
        ])
        .args(["-i", "0.5", "-J"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    shoal_ok(&["lab", "restart", "--name", &lab.name, "n1"]);
    let (stalled, _) = stalled_intervals(iperf, "through the VIP");
    assert!(stalled <= 1, "stalled for {stalled} half-second intervals");
}

#[test]
fn agent_restart_during_iperf3_keeps_the_flow() {
    let lab = Lab::up(2, 1, "tc");
    let info = lab.info();
    let (a, b) = (&info.endpoints[0], &info.endpoints[1]);
    let before_n1 = host_ifindexes(&lab, "n1");
    let entries_before = lab
        .debug_json("n1", &["endpoints"])
        .as_array()
        .unwrap()
        .len();

    lab.run_ok(&b.netns, &["iperf3", "-s", "-1", "-D", "-p", "5999"]);
    std::thread::sleep(Duration::from_millis(300));
    let client = Command::new("ip")
        .args([
            "netns", "exec", &a.netns, "iperf3", "-c", &b.ip, "-p", "5999", "-t", "6", "-i", "0.5",
            "-J",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    // Restart both ends' agents, one after the other.
    for node in ["n1", "n2"] {
        shoal_ok(&["lab", "restart", "--name", &lab.name, node]);
    }
    let (stalled, received) = stalled_intervals(client, "direct");
    assert!(
        stalled <= 1,
        "flow stalled for {stalled} half-second intervals"
    );
    assert!(received > 0);

    // Nothing re-created, nothing lost, agents back.
    assert_eq!(
        host_ifindexes(&lab, "n1"),
        before_n1,
        "host veths were re-created"
    );
    assert_eq!(
        lab.debug_json("n1", &["endpoints"])
            .as_array()
            .unwrap()
            .len(),
        entries_before
    );
    assert!(
        lab.info().nodes.iter().all(|n| n.pid.is_some()),
        "agents running again"
    );
    // Exactly one program per hook and interface (the pin was reused).
    let progs = lab.debug_json("n1", &["programs"]);
    assert_eq!(progs.as_array().unwrap().len(), 2, "{progs}");
}

#[test]
fn second_agent_on_the_same_data_dir_is_refused() {
    let lab = Lab::up(1, 1, "tc");
    let data_dir = format!("/run/shoal/lab/{}/nodes/n1", lab.name);
    let out = Command::new(shoal_tests::shoal_bin())
        .args([
            "daemon",
            "--advertise-addr",
            "198.18.0.1",
            "--data-dir",
            &data_dir,
            "--bpffs-dir",
            "/sys/fs/bpf/shoal-never",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already using data dir"), "{err}");
    assert!(!std::path::Path::new("/sys/fs/bpf/shoal-never").exists());
}

/// An upgrade whose eBPF object grew a map: as if n2's pins were left by an
/// older version, its `shoal_config` pinned with a smaller value. The new
/// daemon replaces that map (it used to fail verification and not start),
/// says so, and the overlay carries traffic to n2 again.
#[test]
fn a_daemon_starts_in_place_over_maps_an_older_version_pinned() {
    let lab = Lab::up(2, 1, "tc");
    let info = lab.info();
    let (a, b) = (&info.endpoints[0], &info.endpoints[1]);
    shoal_ok(&["lab", "stop", "--name", &lab.name, "n2"]);
    let pin = format!("/sys/fs/bpf/shoal-lab/{}/n2/shoal_config", lab.name);
    std::fs::remove_file(&pin).unwrap();
    let made = Command::new("bpftool")
        .args([
            "map", "create", &pin, "type", "array", "key", "4", "value", "8",
        ])
        .args(["entries", "1", "name", "shoal_config"])
        .status()
        .unwrap();
    assert!(made.success());
    shoal_ok(&["lab", "start", "--name", &lab.name, "n2"]);
    let log = lab.node_log("n2");
    assert!(
        log.contains("a pinned map changed shape with this version: replaced"),
        "{log}"
    );
    shoal_tests::wait("n1's endpoint reaches n2's", 20, || {
        lab.run(&a.netns, &["ping", "-c", "1", "-W", "1", &b.ip])
            .status
            .success()
    });
}

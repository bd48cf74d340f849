//! Shoal on real (virtual) hosts: three VMs, each its own kernel and a
//! virtio-net NIC on one switch, Shoal installed from its .deb and run by
//! systemd as README's install path says (`scripts/vm-cluster.sh`), a
//! swarm formed with `swarm init` and `swarm join`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use shoal_tests::hosts::{text, vm_ip, VmCluster, CLIENT_IP};

const VMS: [&str; 3] = ["vm1", "vm2", "vm3"];

/// A whoami answer's field.
fn field(body: &str, k: &str) -> Option<String> {
    body.lines()
        .find_map(|l| l.strip_prefix(k))
        .map(|v| v.trim().to_string())
}

/// The service's running tasks: (id, node).
fn running(c: &VmCluster, service: &str) -> Vec<(String, String)> {
    let out = c.ok(
        "vm1",
        &[
            "shoal",
            "service",
            "ps",
            service,
            "--no-trunc",
            "--format",
            "json",
        ],
    );
    out.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["DesiredState"] == "Running"
                && v["CurrentState"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("Running")
        })
        .map(|v| {
            (
                v["ID"].as_str().unwrap_or_default().to_string(),
                v["Node"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn three_vms_from_the_deb_under_systemd_form_a_swarm_and_serve() {
    let c = VmCluster::up();
    eprintln!("{}", c.ls());

    // The unit is active on every VM, the swarm has three ready nodes.
    for vm in VMS {
        let active = c.exec(vm, &["systemctl", "is-active", "shoal"]);
        assert!(active.status.success(), "{vm}: {}", text(&active));
    }
    // One JSON object a line, as Docker's `--format '{{json .}}'`.
    let nodes = c.ok("vm1", &["shoal", "node", "ls", "--format", "json"]);
    let ready: BTreeSet<String> = nodes
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|n| n["Status"] == "Ready")
        .map(|n| n["Hostname"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        ready,
        VMS.iter().map(|s| s.to_string()).collect(),
        "{nodes}"
    );

    // A 3-replica service with a published port spreads over the VMs.
    c.ok("vm1", &["shoal", "network", "create", "appnet"]);
    c.ok(
        "vm1",
        &[
            "shoal",
            "service",
            "create",
            "--name",
            "web",
            "--network",
            "appnet",
            "--replicas",
            "3",
            "--replicas-max-per-node",
            "1",
            "-p",
            "8080:80",
            "--",
            "/usr/bin/shoal",
            "whoami",
            "--port",
            "80",
        ],
    );
    let mut tasks = vec![];
    shoal_tests::wait("3 running tasks of web", 120, || {
        tasks = running(&c, "web");
        tasks.len() == 3
    });
    let per_node: BTreeMap<&str, usize> = tasks.iter().fold(BTreeMap::new(), |mut m, (_, n)| {
        *m.entry(n.as_str()).or_default() += 1;
        m
    });
    assert_eq!(per_node.len(), 3, "one task per VM: {tasks:?}");

    // The published port answers on every VM from the outside client,
    // which the task sees as itself.
    for vm in VMS {
        let url = format!("http://{}:8080/", vm_ip(vm));
        let o = c.client(&["curl", "-s", "-m", "10", &url]);
        let body = text(&o);
        let remote = field(&body, "RemoteAddr:").unwrap_or_default();
        assert!(
            remote.starts_with(&format!("{CLIENT_IP}:")),
            "{vm}: the backend saw {remote:?}, not the client: {body}"
        );
    }

    // A task reaches the others across VMs by name and through the VIP
    // (`ip netns exec` keeps the host's resolv.conf: the embedded DNS is
    // asked by address, as a task's own resolv.conf says).
    let ns_of = |vm: &str| {
        let (id, _) = tasks.iter().find(|(_, n)| n == vm).unwrap().clone();
        format!("shoal-t{}", &id[..12])
    };
    let ns1 = ns_of("vm1");
    let vip = c
        .ok(
            "vm1",
            &[
                "ip",
                "netns",
                "exec",
                &ns1,
                "dig",
                "+short",
                "web",
                "@127.0.0.11",
            ],
        )
        .trim()
        .to_string();
    assert!(vip.starts_with("10."), "web's VIP from vm1's task: {vip:?}");
    let mut seen = BTreeSet::new();
    for _ in 0..12 {
        let body = c.ok(
            "vm1",
            &[
                "ip",
                "netns",
                "exec",
                &ns1,
                "curl",
                "-s",
                "-m",
                "5",
                &format!("http://{vip}/"),
            ],
        );
        if let Some(h) = field(&body, "Hostname:") {
            seen.insert(h);
        }
    }
    assert_eq!(seen.len(), 3, "web's VIP from vm1 reached {seen:?}");

    // iperf3 between tasks on two VMs, and between the two VMs' own
    // addresses, in the same run (the ratio is what means something
    // under emulation; bench/ has the benchmark).
    let ns2 = ns_of("vm2");
    let task2 = c
        .ok(
            "vm2",
            &["sh", "-c", &format!("ip -n {ns2} -4 -o addr show eth0")],
        )
        .split_whitespace()
        .nth(3)
        .and_then(|a| a.split('/').next())
        .unwrap()
        .to_string();
    let gbps = |server: &str, to: &str, ns: Option<&str>| -> f64 {
        c.ok("vm2", &["sh", "-c", &format!("{server} iperf3 -s -D -1")]);
        std::thread::sleep(std::time::Duration::from_millis(500));
        let client = match ns {
            Some(ns) => format!("ip netns exec {ns} iperf3 -J -t 3 -c {to}"),
            None => format!("iperf3 -J -t 3 -c {to}"),
        };
        let j: Value = serde_json::from_str(&c.ok("vm1", &["sh", "-c", &client])).unwrap();
        j["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap()
            / 1e9
    };
    let overlay = gbps(&format!("ip netns exec {ns2}"), &task2, Some(&ns1));
    let underlay = gbps("", &vm_ip("vm2"), None);
    eprintln!(
        "iperf3 vm1 -> vm2: tasks over Shoal {overlay:.3} Gbit/s, the VMs' own addresses {underlay:.3} Gbit/s ({:.2}x)",
        overlay / underlay
    );
    assert!(overlay > 0.0 && underlay > 0.0);

    // Native XDP on virtio-net: `--accel auto` puts decap there in the
    // driver (`xdp`, not `xdpgeneric`).
    for vm in VMS {
        let link = c.ok(vm, &["ip", "-d", "link", "show", "eth0"]);
        assert!(
            link.contains(" xdp ") && link.contains("prog/xdp"),
            "{vm}: {link}"
        );
    }
}

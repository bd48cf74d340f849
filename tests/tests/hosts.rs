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

/// A whoami service on appnet, created on vm1 (`extra` before the `--`).
fn create_whoami(c: &VmCluster, name: &str, extra: &[&str]) {
    let mut a = vec![
        "shoal",
        "service",
        "create",
        "--name",
        name,
        "--network",
        "appnet",
    ];
    a.extend_from_slice(extra);
    a.extend_from_slice(&["--", "/usr/bin/shoal", "whoami", "--port", "80"]);
    c.ok("vm1", &a);
}

/// The nodes `node ls` shows Ready (one JSON object a line, as Docker's
/// `--format '{{json .}}'`).
fn ready_nodes(c: &VmCluster) -> BTreeSet<String> {
    c.ok("vm1", &["shoal", "node", "ls", "--format", "json"])
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|n| n["Status"] == "Ready")
        .map(|n| n["Hostname"].as_str().unwrap_or_default().to_string())
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
    let ready = ready_nodes(&c);
    assert_eq!(
        ready,
        VMS.iter().map(|s| s.to_string()).collect(),
        "ready nodes"
    );

    // A 3-replica service with a published port spreads over the VMs.
    c.ok("vm1", &["shoal", "network", "create", "appnet"]);
    create_whoami(
        &c,
        "web",
        &[
            "--replicas",
            "3",
            "--replicas-max-per-node",
            "1",
            "-p",
            "8080:80",
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

    power_off_and_back(&c);
}

/// The remote endpoints vm1 has programmed: their addresses.
fn remote_ips(c: &VmCluster) -> BTreeSet<String> {
    let rows: Value =
        serde_json::from_str(&c.ok("vm1", &["shoal", "debug", "endpoints", "--format", "json"]))
            .unwrap();
    shoal_tests::remote_ips_in(&rows).into_iter().collect()
}

/// vm3 powered off: its tasks run on the others, its endpoints leave vm1's
/// dataplane; booted again, it rejoins from its disk with no manual step.
fn power_off_and_back(c: &VmCluster) {
    create_whoami(c, "api", &["--replicas", "3"]);
    shoal_tests::wait("api on every VM", 120, || {
        let nodes: BTreeSet<String> = running(c, "api").into_iter().map(|(_, n)| n).collect();
        nodes.len() == 3
    });
    let on_vm3 = c.ok(
        "vm3",
        &["sh", "-c", "for n in $(ip netns list | grep -o 'shoal-t[a-z0-9]*' | grep -v ingress); do ip -n $n -4 -o addr show eth0; done"],
    );
    let vm3_ips: BTreeSet<String> = on_vm3
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter_map(|a| a.split('/').next())
        .map(str::to_string)
        .collect();
    assert!(!vm3_ips.is_empty(), "{on_vm3}");
    assert!(
        vm3_ips.is_subset(&remote_ips(c)),
        "vm1 knows vm3's endpoints"
    );

    let t0 = std::time::Instant::now();
    c.stop("vm3");
    let gone = shoal_tests::wait("vm3's endpoints leave vm1", 30, || {
        remote_ips(c).is_disjoint(&vm3_ips)
    });
    shoal_tests::wait("api's 3 tasks on vm1 and vm2", 60, || {
        let ts = running(c, "api");
        ts.len() == 3 && ts.iter().all(|(_, n)| n != "vm3")
    });
    let moved = t0.elapsed();
    eprintln!(
        "vm3 powered off: its endpoints left vm1 after {gone:?}, api ran 3 tasks on vm1 and vm2 after {moved:?} (each measured through ssh, polled)"
    );
    assert!(
        gone <= std::time::Duration::from_secs(5),
        "vm3's endpoints took {gone:?} to leave vm1"
    );

    c.start("vm3");
    let back = shoal_tests::wait("vm3 ready again", 120, || ready_nodes(c).contains("vm3"));
    eprintln!("vm3 booted again: Ready after {back:?} more");
    let active = c.exec("vm3", &["systemctl", "is-active", "shoal"]);
    assert!(active.status.success(), "{}", text(&active));
}

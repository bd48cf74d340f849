//! The embedded DNS on lab clusters, asked with real `dig` from inside task
//! namespaces (through `shoal exec`, so the task's own resolv.conf is
//! used): every name form, scoping across networks, NODATA, case, PTR,
//! TC then TCP, forwarding to a real upstream (dnsmasq in a lab namespace)
//! and SERVFAIL once it stops; a DNS server in a task on port 53 beside
//! the task's resolver; a killed task gone from every node's
//! answers; answers across a daemon restart; malformed packets survived.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use shoal_tests::services::{running, Task};
use shoal_tests::{ok, shoal, shoal_bin, wait, Lab};

const UPSTREAM: &str = "198.18.0.250";

/// `dig ARGS` inside task `t` (on its node), with short timeouts.
fn dig(lab: &Lab, t: &Task, args: &[&str]) -> String {
    let bin = shoal_bin().to_string_lossy().into_owned();
    let mut a = vec![
        "lab", "exec", "--name", &lab.name, &t.node, "--", &bin, "exec", &t.id, "--", "dig",
        "+time=2", "+tries=1",
    ];
    a.extend_from_slice(args);
    String::from_utf8_lossy(&shoal(&a).stdout).into_owned()
}

/// The addresses of `name` (A records, sorted) as task `t` resolves it.
fn a_of(lab: &Lab, t: &Task, name: &str) -> Vec<String> {
    let mut v: Vec<String> = dig(lab, t, &["+short", name])
        .lines()
        .map(String::from)
        .filter(|l| l.parse::<std::net::Ipv4Addr>().is_ok())
        .collect();
    v.sort();
    v
}

fn status(out: &str) -> &str {
    out.split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("?")
}

fn service(lab: &Lab, args: &[&str]) {
    let mut a = vec!["service", "create"];
    a.extend_from_slice(args);
    ok(lab.shoal_on("n1", &a));
}

struct Upstream(Child);

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn dnsmasq(ns: &str) -> Upstream {
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "dnsmasq",
            "--keep-in-foreground",
            "--no-resolv",
        ])
        .args([
            "--no-hosts",
            "--bind-interfaces",
            "--port=53",
            "--user=root",
        ])
        .arg(format!("--listen-address={UPSTREAM}"))
        .args([
            "--local=/lab/",
            "--local-ttl=77",
            "--address=/host.example.lab/198.51.100.7",
        ])
        .spawn()
        .expect("dnsmasq");
    std::thread::sleep(Duration::from_millis(500));
    Upstream(child)
}

#[test]
fn names_scopes_types_case_ptr_truncation_and_forwarding() {
    let lab = Lab::up_with(3, 0, "tc", &[&format!("--daemon-arg=--dns={UPSTREAM}")]);
    let up_ns = lab.extra_host("up", UPSTREAM);
    let upstream = dnsmasq(&up_ns);
    ok(lab.shoal_on("n1", &["network", "create", "appnet"]));
    ok(lab.shoal_on("n1", &["network", "create", "other"]));
    let bin = shoal_bin().to_string_lossy().into_owned();
    let whoami = ["--", bin.as_str(), "whoami", "--port", "80"];
    let mut a = vec![
        "--name",
        "web",
        "--replicas",
        "2",
        "--network",
        "name=appnet,alias=front",
    ];
    a.extend_from_slice(&whoami);
    service(&lab, &a);
    service(
        &lab,
        &[
            "--name",
            "rr",
            "--endpoint-mode",
            "dnsrr",
            "--replicas",
            "3",
            "--network",
            "appnet",
            "--",
            "sleep",
            "1000",
        ],
    );
    service(
        &lab,
        &[
            "--name",
            "secret",
            "--network",
            "other",
            "--",
            "sleep",
            "1000",
        ],
    );
    service(
        &lab,
        &[
            "--name",
            "many",
            "--endpoint-mode",
            "dnsrr",
            "--replicas",
            "40",
            "--network",
            "appnet",
            "--",
            "sleep",
            "1000",
        ],
    );
    let web = running(&lab, "n1", "web");
    let client = &web[0];
    let rr: Vec<String> = {
        let mut v: Vec<String> = running(&lab, "n1", "rr")
            .into_iter()
            .map(|t| t.ip)
            .collect();
        v.sort();
        v
    };
    let secret = &running(&lab, "n1", "secret")[0];
    let vip = shoal_tests::services::service_vip(&lab, "web");

    wait("every record gossiped", 20, || {
        a_of(&lab, client, "tasks.rr").len() == 3
    });
    assert_eq!(a_of(&lab, client, "web"), vec![vip.clone()]);
    // A DNS server run as a service binds port 53 on every address of its
    // task (dnsmasq without --bind-interfaces: the wildcard), which the
    // node's resolver at 127.0.0.11:53 used to refuse: it listens on
    // another port there and the task's loopback program moves 53 to it.
    // The task's own server answers the other tasks; its resolver still
    // answers it, over UDP and TCP.
    service(
        &lab,
        &[
            "--name",
            "ns",
            "--network",
            "appnet",
            "--",
            "dnsmasq",
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--port=53",
            "--user=root",
            "--address=/answer.test/198.18.9.9",
        ],
    );
    let mut ns = vec![];
    wait("the DNS server task answering on its port 53", 30, || {
        ns = running(&lab, "n1", "ns");
        ns.first().is_some_and(|t| {
            dig(
                &lab,
                client,
                &["+short", &format!("@{}", t.ip), "answer.test"],
            )
            .trim()
                == "198.18.9.9"
        })
    });
    assert_eq!(a_of(&lab, &ns[0], "web"), vec![vip.clone()]);
    assert_eq!(
        dig(&lab, &ns[0], &["+short", "+tcp", "web"]).trim(),
        vip,
        "over TCP"
    );
    assert_eq!(a_of(&lab, client, "front"), vec![vip.clone()]);
    let mut web_ips: Vec<String> = web.iter().map(|t| t.ip.clone()).collect();
    web_ips.sort();
    assert_eq!(a_of(&lab, client, "tasks.web"), web_ips);
    assert_eq!(a_of(&lab, client, "tasks.front"), web_ips);
    assert_eq!(a_of(&lab, client, "rr"), rr);
    let other = &web[1];
    let full = ok(lab.shoal_on("n1", &["inspect", &other.id]));
    let name = serde_json::from_str::<serde_json::Value>(&full).unwrap()[0]["Name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(a_of(&lab, client, &name), vec![other.ip.clone()]);
    assert_eq!(a_of(&lab, client, &other.id[..12]), vec![other.ip.clone()]);
    // A stack's service: its prefixed name and its short alias.
    // Removed when dropped, also if an assertion fails.
    let compose_dir = tempfile::tempdir().unwrap();
    let compose = compose_dir.path().join("stack.yml");
    std::fs::write(
        &compose,
        "services:\n  api:\n    command: sleep 1000\n    networks: [appnet]\nnetworks:\n  appnet: {external: true}\n",
    )
    .unwrap();
    ok(lab.shoal_on(
        "n1",
        &["stack", "deploy", "-c", &compose.to_string_lossy(), "app"],
    ));
    wait("the stack's names", 20, || {
        let a = a_of(&lab, client, "app_api");
        !a.is_empty() && a == a_of(&lab, client, "api")
    });
    // Case: matched either way, the question comes back as asked.
    let out = dig(&lab, client, &["WeB"]);
    assert!(out.contains("WeB.") && out.contains(&vip), "{out}");
    // tasks.NAME is shuffled per answer.
    let firsts: std::collections::BTreeSet<String> = (0..12)
        .map(|_| {
            dig(&lab, client, &["+short", "tasks.rr"])
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert!(firsts.len() > 1, "never shuffled: {firsts:?}");
    // NODATA, never NXDOMAIN, for a type the name lacks.
    let out = dig(&lab, client, &["AAAA", "web"]);
    assert_eq!(status(&out), "NOERROR", "{out}");
    assert!(out.contains("ANSWER: 0"), "{out}");
    // Scoping: another network's service is not a name here.
    assert!(a_of(&lab, client, "secret").is_empty());
    assert!(!dig(&lab, client, &["+short", "secret"]).contains(&secret.ip));
    // PTR of a task and of the VIP.
    let out = dig(&lab, client, &["+short", "-x", &other.ip]);
    assert!(out.contains(&format!("{name}.appnet.")), "{out}");
    assert_eq!(dig(&lab, client, &["+short", "-x", &vip]).trim(), "web.");
    // 40 records: TC over plain UDP, all of them after dig's TCP retry.
    wait("40 tasks in tasks.many", 40, || {
        a_of(&lab, client, "tasks.many").len() == 40
    });
    let out = dig(&lab, client, &["+noedns", "+ignore", "tasks.many"]);
    assert!(out.contains(" tc") && out.contains("ANSWER: 0"), "{out}");
    let out = dig(&lab, client, &["+noedns", "tasks.many"]);
    assert!(out.contains("ANSWER: 40"), "{out}");
    // Forwarded, with the upstream's TTL; NXDOMAIN relayed.
    let out = dig(&lab, client, &["+noall", "+answer", "host.example.lab"]);
    assert!(out.contains("77") && out.contains("198.51.100.7"), "{out}");
    assert_eq!(
        status(&dig(&lab, client, &["missing.example.lab"])),
        "NXDOMAIN"
    );
    // The upstream stops: SERVFAIL, promptly.
    drop(upstream);
    let t0 = Instant::now();
    let out = dig(&lab, client, &["host.example.lab"]);
    assert_eq!(status(&out), "SERVFAIL", "{out}");
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
}

#[test]
fn dead_tasks_leave_every_nodes_answers_and_the_resolver_survives() {
    let lab = Lab::up_with(3, 0, "tc", &[]);
    ok(lab.shoal_on("n1", &["network", "create", "appnet"]));
    let bin = shoal_bin().to_string_lossy().into_owned();
    service(
        &lab,
        &[
            "--name",
            "probe",
            "--mode",
            "global",
            "--network",
            "appnet",
            "--",
            "sleep",
            "1000",
        ],
    );
    service(
        &lab,
        &[
            "--name",
            "web",
            "--replicas",
            "3",
            "--restart-condition",
            "none",
            "--network",
            "appnet",
            "--",
            &bin,
            "whoami",
            "--port",
            "80",
        ],
    );
    let probes = running(&lab, "n1", "probe");
    assert_eq!(probes.len(), 3);
    wait("3 web tasks everywhere", 20, || {
        probes.iter().all(|p| a_of(&lab, p, "tasks.web").len() == 3)
    });
    // Kill one web task's process: every node stops answering with it.
    let victim = running(&lab, "n1", "web")[0].clone();
    let ns = format!("{}-{}-t{}", lab.name, victim.node, &victim.id[..12]);
    let t0 = Instant::now();
    Command::new("ip")
        .args(["netns", "pids", &ns])
        .output()
        .map(|o| {
            for p in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", p]).status();
            }
        })
        .unwrap();
    wait("the dead task gone on every node", 10, || {
        probes
            .iter()
            .all(|p| !a_of(&lab, p, "tasks.web").contains(&victim.ip))
    });
    eprintln!(
        "dead task out of every node's answers after {:?}",
        t0.elapsed()
    );

    // A task failing its health check leaves tasks.NAME everywhere too.
    // Its flag file lives in a directory removed when dropped.
    let flags = tempfile::tempdir().unwrap();
    let health = format!("test ! -e {}/sick-$(hostname)", flags.path().display());
    service(
        &lab,
        &[
            "--name",
            "checked",
            "--replicas",
            "2",
            "--restart-condition",
            "none",
            "--health-cmd",
            &health,
            "--health-interval",
            "300ms",
            "--health-retries",
            "1",
            "--network",
            "appnet",
            "--",
            "sleep",
            "1000",
        ],
    );
    wait("2 healthy checked tasks everywhere", 20, || {
        probes
            .iter()
            .all(|p| a_of(&lab, p, "tasks.checked").len() == 2)
    });
    let sick = running(&lab, "n1", "checked")[0].clone();
    std::fs::write(flags.path().join(format!("sick-{}", &sick.id[..12])), "").unwrap();
    wait("the unhealthy task gone on every node", 10, || {
        probes
            .iter()
            .all(|p| !a_of(&lab, p, "tasks.checked").contains(&sick.ip))
    });

    // A daemon restart: the task's resolver answers again.
    let on_n2 = probes.iter().find(|p| p.node == "n2").unwrap();
    shoal_tests::shoal_ok(&["lab", "restart", "--name", &lab.name, "n2"]);
    wait("answers after the restart", 20, || {
        a_of(&lab, on_n2, "tasks.web").len() == 2
    });

    // Malformed packets from inside a task, over UDP and TCP.
    let script = r#"
import socket, struct
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
bad = [b"", b"\x00", b"\x12\x34" + b"\x01\x00" + b"\x00\x01" * 4,
       b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01",
       b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x3f" + b"a" * 63,
       b"\x12\x34\x11\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03web\x00\x00\x01\x00\x01",
       b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03web\x00\x00\x01\x00\x09",
       b"\xff" * 4000]
import time
for i, b in enumerate(bad * 50):
    u.sendto(b, ("127.0.0.11", 53))
    if i % 40 == 0:
        time.sleep(0.002)
for b in [b"\xff\xff" + b"x" * 10, b"\x00\x00", b"\x00\x05abc"]:
    t = socket.create_connection(("127.0.0.11", 53), timeout=2)
    t.sendall(b)
    t.close()
print("sent")
"#;
    let p = &probes[0];
    let out = shoal(&[
        "lab", "exec", "--name", &lab.name, &p.node, "--", &bin, "exec", &p.id, "--", "python3",
        "-c", script,
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("sent"),
        "{out:?}"
    );
    assert_eq!(a_of(&lab, p, "tasks.web").len(), 2, "still answering");
    let report: serde_json::Value = serde_json::from_str(&ok(
        lab.shoal_on(&p.node, &["debug", "dns", "--format", "json"])
    ))
    .unwrap();
    let stats = &report["stats"];
    assert!(stats["formerr"].as_u64().unwrap() >= 100, "{stats}");
    assert!(stats["dropped"].as_u64().unwrap() >= 100, "{stats}");
    assert!(stats["refused_class"].as_u64().unwrap() >= 50, "{stats}");
    assert!(stats["notimp"].as_u64().unwrap() >= 50, "{stats}");
    // The per-task view names what this task sees.
    let mine: serde_json::Value = serde_json::from_str(&ok(lab.shoal_on(
        &p.node,
        &["debug", "dns", "--task", &p.id, "--format", "json"],
    )))
    .unwrap();
    assert!(
        mine["names"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n[0] == "tasks.web"),
        "{mine}"
    );
}

/// An upstream that never answers and a cap of 8 forwards: a flood of
/// forwarded names is REFUSED beyond the cap (counted) while the cluster's
/// names keep answering.
#[test]
fn a_forward_flood_is_refused_beyond_the_cap_and_local_names_still_answer() {
    let lab = Lab::up_with(
        1,
        0,
        "tc",
        &[
            "--daemon-arg=--dns=198.18.0.251",
            "--daemon-arg=--dns-max-forwards=8",
        ],
    );
    let hole_ns = lab.extra_host("hole", "198.18.0.251");
    let _hole = Upstream(
        Command::new("ip")
            .args(["netns", "exec", &hole_ns, "python3", "-c"])
            .arg("import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('198.18.0.251',53))\nwhile True: s.recv(4096)")
            .spawn()
            .unwrap(),
    );
    ok(lab.shoal_on("n1", &["network", "create", "appnet"]));
    service(
        &lab,
        &[
            "--name",
            "web",
            "--network",
            "appnet",
            "--",
            "sleep",
            "1000",
        ],
    );
    let t = running(&lab, "n1", "web").remove(0);
    let bin = shoal_bin().to_string_lossy().into_owned();
    let flood = r#"
import socket, struct, time
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
def q(i, name):
    h = struct.pack(">HHHHHH", i, 0x0100, 1, 0, 0, 0)
    return h + b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\x00\x00\x01\x00\x01"
for i in range(2000):
    u.sendto(q(i, "x%d.example" % i), ("127.0.0.11", 53))
u.settimeout(2)
refused = 0
try:
    while True:
        d = u.recv(4096)
        refused += (d[3] & 0x0f) == 5
except socket.timeout:
    pass
u.sendto(q(9999, "web"), ("127.0.0.11", 53))
d = u.recv(4096)
print("refused", refused, "web_rcode", d[3] & 0x0f, "answers", struct.unpack(">H", d[6:8])[0])
"#;
    let out = shoal(&[
        "lab", "exec", "--name", &lab.name, "n1", "--", &bin, "exec", &t.id, "--", "python3", "-c",
        flood,
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("web_rcode 0 answers 1"),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The client's own socket buffer drops most answers of the burst; the
    // server's counter is the truth.
    let refused: u64 = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(refused > 0, "{text}");
    let report: serde_json::Value = serde_json::from_str(&ok(
        lab.shoal_on("n1", &["debug", "dns", "--format", "json"])
    ))
    .unwrap();
    assert!(
        report["stats"]["refused_overload"].as_u64().unwrap() >= 1900,
        "{report}"
    );
    assert_eq!(a_of(&lab, &t, "web").len(), 1);
}

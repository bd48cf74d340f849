//! Encrypted overlay networks (`network create --opt encrypted`).
//!
//! This machine's kernel has no ESP or GCM: here an
//! encrypted network is refused with what the kernels lack, and nothing is
//! ever sent in clear instead. The rest runs inside Debian's kernel (qemu)
//! on a 3-node lab: a marker sent over the encrypted network never appears
//! on the underlay (ESP does), the same over a plain network does (in
//! VXLAN); services by name, their VIP and a published port work on the
//! encrypted network; an iperf3 run across key rotations completes; and
//! `debug ipsec` shows the peers' SAs counting packets without errors.

use std::time::Duration;

use shoal_tests::services::{running, Task};
use shoal_tests::vm::Vm;
use shoal_tests::{ok, pcap, refused, shoal, shoal_bin, wait, Lab};

/// Where no kernel can encrypt: refused in one line that names the
/// missing module; a plain network still works; `debug ipsec` says why.
#[test]
fn encrypted_networks_are_refused_where_no_kernel_can() {
    let lab = Lab::up(2, 0, "tc");
    refused(
        &lab,
        "n1",
        &["network", "create", "--opt", "encrypted", "secnet"],
        "no node of the swarm can carry an encrypted network (n1: its kernel lacks esp4 (IPsec ESP)",
    );
    let o = lab.shoal_on("n1", &["network", "create", "--opt", "encrypted", "secnet"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&o.stderr).trim().lines().count(), 1);
    refused(
        &lab,
        "n1",
        &["network", "create", "--opt", "bogus", "x"],
        "--opt bogus: unknown option",
    );
    ok(lab.shoal_on("n1", &["network", "create", "plainnet"]));
    let v = lab.debug_json("n2", &["ipsec"]);
    assert_eq!(v["support"]["state"], "missing", "{v}");
    assert_eq!(v["devices"], serde_json::json!([]), "{v}");
    let text = ok(shoal(&[
        "debug", "--lab", &lab.name, "--node", "n1", "ipsec",
    ]));
    assert!(
        text.starts_with("IPsec: unavailable: its kernel lacks esp4 (IPsec ESP)"),
        "{text}"
    );

    // The ingress network replaced, as Docker's `network rm ingress` and
    // `network create --ingress`: encrypted is refused here; a plain one
    // carries published ports on every node; one at a time; in use, kept.
    ok(lab.shoal_on("n1", &["network", "rm", "ingress"]));
    refused(
        &lab,
        "n1",
        &[
            "network",
            "create",
            "--ingress",
            "--opt",
            "encrypted",
            "ingress",
        ],
        "no node of the swarm can carry an encrypted network",
    );
    ok(lab.shoal_on("n1", &["network", "create", "--ingress", "mesh2"]));
    refused(
        &lab,
        "n1",
        &["network", "create", "--ingress", "mesh3"],
        "an ingress network already exists",
    );
    let bin = shoal_bin().to_string_lossy().into_owned();
    ok(lab.shoal_on(
        "n1",
        &[
            "service",
            "create",
            "--name",
            "web",
            "--network",
            "plainnet",
            "-p",
            "8080:80",
            "--constraint",
            "node.hostname==n2",
            "--",
            &bin,
            "whoami",
            "--port",
            "80",
        ],
    ));
    let outside = lab.outside();
    for n in &lab.info().nodes {
        let url = format!("http://{}:8080/", n.underlay_ip);
        wait(&format!("{url} over mesh2"), 60, || {
            let o = lab.run(&outside, &["curl", "-s", "-m", "5", &url]);
            String::from_utf8_lossy(&o.stdout).contains("Hostname:")
        });
    }
    refused(
        &lab,
        "n1",
        &["network", "rm", "mesh2"],
        "network mesh2 is in use by service web",
    );
    assert!(lab
        .node_log("n1")
        .contains("left the replaced ingress network"));
}

/// The encrypted suite inside Debian's kernel: this same test binary,
/// run there with `SHOAL_VM_SUITE=ipsec` (then it is the suite itself).
#[test]
fn encrypted_overlay_in_a_debian_kernel_vm() {
    if std::env::var("SHOAL_VM_SUITE").as_deref() == Ok("ipsec") {
        return suite();
    }
    let vm = Vm::for_test();
    let exe = std::env::current_exe().unwrap();
    let run = vm.run_suite(
        &exe,
        &shoal_bin(),
        &[("SHOAL_VM_SUITE", "ipsec")],
        &[
            "--exact",
            "encrypted_overlay_in_a_debian_kernel_vm",
            "--nocapture",
        ],
        Duration::from_secs(1500),
    );
    assert_eq!(run.exit, Some(0), "the encrypted suite failed in the VM");
    assert!(run.console.contains("test result: ok. 1 passed"));
}

/// Runs `script` with python3 inside task `t`: stdout, or stderr as Err.
fn py(lab: &Lab, t: &Task, script: &str) -> Result<String, String> {
    let bin = shoal_bin().to_string_lossy().into_owned();
    let o = shoal(&[
        "lab", "exec", "--name", &lab.name, &t.node, "--", &bin, "exec", &t.id, "--", "python3",
        "-c", script,
    ]);
    match o.status.success() {
        true => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
        false => Err(String::from_utf8_lossy(&o.stderr).into_owned()),
    }
}

/// One HTTP GET of `path` from task `t` to `host` (a name or an address).
fn get(lab: &Lab, t: &Task, host: &str, path: &str) -> Result<String, String> {
    py(
        lab,
        t,
        &format!(
            r#"
import socket
s = socket.create_connection(("{host}", 80), timeout=10)
s.sendall(b"GET {path} HTTP/1.0\r\n\r\n")
d = b""
while True:
    b = s.recv(4096)
    if not b:
        break
    d += b
print(d.decode())
"#
        ),
    )
}

/// n3 frozen until n1 calls it down and drops its SAs, then thawed: when
/// n1 has SAs with it again, its counters went on from where they were
/// (a liveness blip must not zero a peer's counts, nor the metrics).
fn a_peer_s_flap_keeps_its_counts(lab: &Lab) {
    let n3 = lab.info().nodes.remove(2);
    let counts = || -> Option<(u64, u64)> {
        let v = lab.debug_json("n1", &["ipsec"]);
        let p = v["peers"]
            .as_array()?
            .iter()
            .find(|p| p["peer"] == n3.underlay_ip.as_str())?;
        p["out_key"].as_u64()?;
        Some((p["out_packets"].as_u64()?, p["in_packets"].as_u64()?))
    };
    let before = counts().expect("n1's SAs with n3");
    let daemon = lab.daemon("n3");
    daemon.freeze(true);
    let gone = lab.wait_for(Duration::from_secs(60), || counts().is_none());
    daemon.freeze(false);
    assert!(gone.is_some(), "n1 kept n3's SAs while n3 was frozen");
    wait("n1's SAs with n3 again", 120, || counts().is_some());
    let after = counts().unwrap();
    eprintln!("n3 frozen, called down and back: n1's counts for it {before:?} -> {after:?}");
    assert!(
        after.0 >= before.0 && after.1 >= before.1,
        "n3's counts went back: {before:?} -> {after:?}"
    );
}

/// Frames of a capture that are IPv4 with protocol `proto`.
fn ip_proto(frames: &[Vec<u8>], proto: u8) -> usize {
    frames
        .iter()
        .filter(|f| f.len() > 34 && f[12..14] == [0x08, 0x00] && f[23] == proto)
        .count()
}

fn suite() {
    // Keys rotate every 4 s: the whole suite runs across rotations.
    let lab = Lab::up_with(3, 0, "tc", &["--daemon-arg=--gossip-key-rotation=4s"]);
    let info = lab.info();
    let bin = shoal_bin().to_string_lossy().into_owned();
    // The routing mesh encrypted too: the ingress network replaced by an
    // encrypted one, as Docker's `network create --ingress --opt encrypted`.
    ok(lab.shoal_on("n1", &["network", "rm", "ingress"]));
    ok(lab.shoal_on(
        "n1",
        &[
            "network",
            "create",
            "--ingress",
            "--opt",
            "encrypted",
            "ingress",
        ],
    ));
    ok(lab.shoal_on("n1", &["network", "create", "--opt", "encrypted", "secnet"]));
    ok(lab.shoal_on("n1", &["network", "create", "plainnet"]));
    let inspect = ok(lab.shoal_on("n1", &["network", "inspect", "secnet"]));
    assert!(inspect.contains("\"encrypted\": \"\""), "{inspect}");

    let create = |name: &str, net: &str, extra: &[&str], cmd: &[&str]| {
        let mut a = vec!["service", "create", "--name", name, "--network", net];
        a.extend_from_slice(extra);
        a.push("--");
        a.extend_from_slice(cmd);
        ok(lab.shoal_on("n1", &a));
    };
    let whoami = [bin.as_str(), "whoami", "--port", "80"];
    let not_n1 = ["--replicas", "2", "--constraint", "node.hostname!=n1"];
    let mut published = not_n1.to_vec();
    published.extend(["-p", "8080:80"]);
    create("sweb", "secnet", &published, &whoami);
    create("pweb", "plainnet", &not_n1, &whoami);
    create(
        "perf",
        "secnet",
        &["--constraint", "node.hostname==n2"],
        &["iperf3", "-s"],
    );
    let mut a = vec!["service", "create", "--name", "client"];
    a.extend(["--network", "secnet", "--network", "plainnet"]);
    a.extend(["--constraint", "node.hostname==n1", "--", "sleep", "100000"]);
    ok(lab.shoal_on("n1", &a));
    for (s, n) in [("sweb", 2), ("pweb", 2), ("perf", 1), ("client", 1)] {
        wait(&format!("{n} {s} task(s)"), 120, || {
            running(&lab, "n1", s).len() == n
        });
    }
    let client = running(&lab, "n1", "client").remove(0);
    // Their names reach n1's DNS by gossip from n2 and n3.
    for s in ["sweb", "pweb"] {
        wait(&format!("{s} answering by name on n1"), 60, || {
            get(&lab, &client, s, "/").is_ok_and(|r| r.contains("Hostname:"))
        });
    }

    // SAs with both peers, keys from the ring.
    wait("n1's SAs with n2 and n3", 60, || {
        let v = lab.debug_json("n1", &["ipsec"]);
        v["peers"]
            .as_array()
            .is_some_and(|p| p.len() == 2 && p.iter().all(|x| !x["out_key"].is_null()))
    });

    let outside = lab.outside();
    let n1_url = format!("http://{}:8080/", info.nodes[0].underlay_ip);
    wait("the published port on n1 from outside", 60, || {
        let o = lab.run(&outside, &["curl", "-s", "-m", "5", &n1_url]);
        String::from_utf8_lossy(&o.stdout).contains("Hostname:")
    });

    // A marker over each network while the wire is captured.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ul.pcap").to_string_lossy().into_owned();
    let mut dump = std::process::Command::new("ip")
        .args(["netns", "exec", &info.underlay_netns, "tcpdump", "-i"])
        .arg(&info.underlay_bridge)
        .args(["-n", "-U", "--immediate-mode", "-s", "0", "-w", &file])
        .args(["not", "port", "7946", "and", "not", "port", "2377"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("tcpdump");
    wait("tcpdump listening", 30, || {
        std::fs::metadata(&file).is_ok_and(|m| m.len() >= 24)
    });
    std::thread::sleep(Duration::from_millis(500));
    // By name, through the VIP, on each network; then to each task (on
    // n2 and n3) by its address (`tasks.NAME`).
    for i in 0..4 {
        for (host, marker) in [("sweb", "SECRET"), ("pweb", "PLAIN")] {
            let r = get(&lab, &client, host, &format!("/{marker}-MARKER-{i}"));
            assert!(r.as_ref().is_ok_and(|r| r.contains("Hostname:")), "{r:?}");
        }
    }
    let ips = py(
        &lab,
        &client,
        "import socket; print(' '.join({a[4][0] for a in socket.getaddrinfo('tasks.sweb', 80)}))",
    )
    .unwrap();
    let ips: Vec<&str> = ips.split_whitespace().collect();
    assert_eq!(ips.len(), 2, "{ips:?}");
    for ip in ips {
        let r = get(&lab, &client, ip, "/SECRET-MARKER-TASK");
        assert!(
            r.as_ref().is_ok_and(|r| r.contains("Hostname:")),
            "{ip}: {r:?}"
        );
    }
    // The published port on n1, which runs no sweb task: n1 forwards over
    // the (encrypted) ingress network to n2 or n3.
    for _ in 0..4 {
        let o = lab.run(&outside, &["curl", "-s", "-m", "5", &n1_url]);
        let body = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(body.contains("Hostname:"), "{body}");
    }
    std::thread::sleep(Duration::from_millis(500));
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dump.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let _ = dump.wait();
    let data = std::fs::read(&file).unwrap();
    let has = |m: &[u8]| data.windows(m.len()).any(|w| w == m);
    let frames = pcap::frames(&data);
    let esp = ip_proto(&frames, 50);
    let vxlan: Vec<_> = frames.iter().filter_map(|f| pcap::vxlan(f)).collect();
    eprintln!(
        "underlay: {} frames, {esp} ESP, {} VXLAN",
        frames.len(),
        vxlan.len()
    );
    assert!(
        !has(b"SECRET-MARKER"),
        "the encrypted network's marker crossed in clear"
    );
    assert!(
        has(b"PLAIN-MARKER"),
        "the plain network's marker is in the capture"
    );
    assert!(esp >= 8, "{esp} ESP packets");
    // The encrypted networks' VXLAN port (inside ESP) never in clear.
    let clear_crypt_port = frames
        .iter()
        .filter(|f| f.len() > 38 && f[12..14] == [0x08, 0x00] && f[23] == 17)
        .filter(|f| {
            let l4 = 14 + usize::from(f[14] & 0x0f) * 4;
            f.len() >= l4 + 4 && f[l4 + 2..l4 + 4] == 4790u16.to_be_bytes()
        })
        .count();
    assert_eq!(clear_crypt_port, 0, "UDP 4790 in clear on the underlay");
    let vnis = |net: &str| -> u64 {
        let v: serde_json::Value =
            serde_json::from_str(&ok(lab.shoal_on("n1", &["network", "inspect", net]))).unwrap();
        v[0]["Options"]["com.docker.network.driver.overlay.vxlanid_list"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (sec_vni, plain_vni) = (vnis("secnet"), vnis("plainnet"));
    let ingress_vni = vnis("ingress");
    assert!(vxlan.iter().any(|v| v.vni as u64 == plain_vni));
    assert!(
        vxlan.iter().all(|v| v.vni as u64 != sec_vni),
        "a VXLAN frame of the encrypted network in clear"
    );
    assert!(
        vxlan.iter().all(|v| v.vni as u64 != ingress_vni),
        "a VXLAN frame of the encrypted ingress network in clear"
    );
    // n1 sends each encrypted network through its own vxlan device.
    let v = lab.debug_json("n1", &["ipsec"]);
    for vni in [sec_vni, ingress_vni] {
        let dev = format!("shoal-x{vni:06x}");
        assert!(
            v["devices"].as_array().unwrap().iter().any(|d| d == &dev),
            "{dev}: {v}"
        );
    }

    // The published port of the encrypted network's service, from outside.
    for n in &info.nodes {
        let url = format!("http://{}:8080/", n.underlay_ip);
        wait(&format!("{url} from outside"), 60, || {
            let o = lab.run(&outside, &["curl", "-s", "-m", "5", &url]);
            String::from_utf8_lossy(&o.stdout).contains("Hostname:")
        });
    }

    // iperf3 across rotations (every 4 s): completes, and the send key
    // moved on meanwhile.
    // Its name reaches n1's DNS by gossip from n2 first.
    let mut vip = String::new();
    wait("perf's name on n1", 60, || {
        let r = py(
            &lab,
            &client,
            "import socket; print(socket.gethostbyname('perf'))",
        );
        vip = r.map(|o| o.trim().to_string()).unwrap_or_default();
        !vip.is_empty()
    });
    let before = lab.debug_json("n1", &["ipsec"])["sending"].as_u64();
    let o = shoal(&[
        "lab", "exec", "--name", &lab.name, "n1", "--", &bin, "exec", &client.id, "--", "iperf3",
        "-c", &vip, "-t", "12", "-J",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)));
    assert!(report["error"].is_null(), "{report}");
    let bps = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap();
    let after = lab.debug_json("n1", &["ipsec"]);
    eprintln!(
        "iperf3 over the encrypted network: {:.0} Mbit/s; send key {before:?} -> {}",
        bps / 1e6,
        after["sending"]
    );
    assert!(bps > 1e6, "{bps}");
    assert!(after["sending"].as_u64() > before, "{after}");
    // Each peer's SAs counted packets both ways, across their
    // replacements (n2 carried iperf3); none refused any.
    let peers = after["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 2, "{after}");
    let n2 = &info.nodes[1].underlay_ip;
    let p2 = peers.iter().find(|p| p["peer"] == n2.as_str()).unwrap();
    assert!(p2["out_packets"].as_u64() > Some(1000), "{p2}");
    for p in peers {
        assert!(p["out_packets"].as_u64() > Some(0), "{p}");
        assert!(p["in_packets"].as_u64() > Some(0), "{p}");
        assert_eq!(p["errors"], 0, "{p}");
    }
    let text = ok(shoal(&[
        "debug", "--lab", &lab.name, "--node", "n1", "ipsec",
    ]));
    eprintln!("{text}");
    assert!(
        text.starts_with("IPsec: ready (rfc4106(gcm(aes)))"),
        "{text}"
    );
    a_peer_s_flap_keeps_its_counts(&lab);

    // n1's last task on secnet goes: so does its device (the encrypted
    // ingress network's stays, and with it the SAs).
    ok(lab.shoal_on("n1", &["service", "rm", "client"]));
    let ingress_dev = format!("shoal-x{ingress_vni:06x}");
    wait("n1's secnet device gone", 60, || {
        let v = lab.debug_json("n1", &["ipsec"]);
        v["devices"] == serde_json::json!([ingress_dev])
            && v["peers"].as_array().is_some_and(|p| p.len() == 2)
    });
}

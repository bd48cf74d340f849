//! `shoal debug monitor` on a lab: drops of each kind provoked from the
//! outside client (a VXLAN packet for an unknown VNI, a malformed VXLAN
//! header, a published port whose service has no healthy backend) appear
//! with their reason on the node that dropped them; a cross-node ping shows
//! encap on one node and decap on the other.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use shoal_tests::{ok, shoal_bin, Lab};

/// A monitor on `node`, JSON lines, ending by itself.
fn monitor(lab: &Lab, node: &str, kind: &str, count: u32) -> Child {
    let child = Command::new(shoal_bin())
        .args([
            "debug", "--lab", &lab.name, "--node", node, "--format", "json",
        ])
        .args(["monitor", "--type", kind, "--timeout", "25"])
        .args(["--count", &count.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("shoal debug monitor");
    // It switches reporting on when it starts.
    std::thread::sleep(Duration::from_millis(800));
    child
}

fn events(child: Child) -> Vec<serde_json::Value> {
    let out = child.wait_with_output().expect("monitor output");
    assert!(
        out.status.success(),
        "monitor failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON event per line"))
        .collect()
}

/// A VXLAN datagram from the client to n1's VTEP port.
fn send_vxlan(lab: &Lab, flags: u8, vni: u32) {
    let client = format!("{}-client", lab.name);
    let script = format!(
        "import socket,struct\n\
         vx=bytes([{flags},0,0,0])+struct.pack('!I',{vni}<<8)\n\
         eth=bytes.fromhex('02420a000102')+bytes.fromhex('02420a0001ff')+b'\\x08\\x00'\n\
         ip=bytes.fromhex('4500001c00000000401100000a0001050a000102')\n\
         udp=struct.pack('!HHHH',1234,5678,8,0)\n\
         s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         s.sendto(vx+eth+ip+udp,('198.18.0.1',4789))\n"
    );
    lab.run_ok(&client, &["python3", "-c", &script]);
}

#[test]
fn drops_appear_with_their_reason_and_traces_show_encap_and_decap() {
    let lab = Lab::up(2, 1, "tc");
    let bin = shoal_bin().to_string_lossy().into_owned();
    // A published port whose only task never passes its health check: no
    // backend behind it.
    ok(lab.shoal_on(
        "n1",
        &[
            "service",
            "create",
            "-d",
            "--name",
            "sick",
            "-p",
            "8081:80",
            "--health-cmd",
            "false",
            "--health-interval",
            "1s",
            "--",
            &bin,
            "whoami",
            "--port",
            "80",
        ],
    ));
    std::thread::sleep(Duration::from_secs(2));

    let m = monitor(&lab, "n1", "drop", 3);
    send_vxlan(&lab, 0x08, 999); // unknown VNI
    send_vxlan(&lab, 0x00, 4000); // no I flag
    let client = format!("{}-client", lab.name);
    let _ = lab.run(
        &client,
        &["curl", "-s", "-m", "2", "http://198.18.0.1:8081/"],
    );
    let ev = events(m);
    let reasons: Vec<&str> = ev.iter().filter_map(|e| e["verdict"].as_str()).collect();
    for want in ["unknown_vni", "bad_vxlan_flags", "no_backend"] {
        assert!(reasons.contains(&want), "{want} in {ev:?}");
    }
    for e in &ev {
        assert_eq!(e["node"], "n1");
        assert_eq!(e["kind"], "drop");
    }
    let vni = ev.iter().find(|e| e["verdict"] == "unknown_vni").unwrap();
    assert_eq!(vni["vni"], 999);
    assert_eq!(vni["vtep"], "198.18.0.200");
    assert_eq!(vni["dst"], "10.0.1.2:5678", "the inner flow");
    let nb = ev.iter().find(|e| e["verdict"] == "no_backend").unwrap();
    assert!(nb["src"].as_str().unwrap().starts_with("198.18.0.200:"));
    assert_eq!(nb["dst"], "198.18.0.1:8081");

    // Traces of a ping from n1's endpoint to n2's: encap on n1, decap on
    // n2, both naming the endpoints' addresses and the lab network's VNI.
    let info = lab.info();
    let (a, b) = (&info.endpoints[0], &info.endpoints[1]);
    let t1 = monitor(&lab, "n1", "trace", 2);
    let t2 = monitor(&lab, "n2", "trace", 2);
    lab.run_ok(&a.netns, &["ping", "-c", "3", "-i", "0.2", &b.ip]);
    let (e1, e2) = (events(t1), events(t2));
    let is = |e: &serde_json::Value, point: &str| {
        e["verdict"] == point
            && e["src"] == a.ip.as_str()
            && e["dst"] == b.ip.as_str()
            && e["vni"] == a.vni
    };
    assert!(e1.iter().any(|e| is(e, "encap")), "n1: {e1:?}");
    assert!(e2.iter().any(|e| is(e, "decap")), "n2: {e2:?}");
    assert!(e1.iter().all(|e| e["node"] == "n1"));
}

#[test]
fn monitor_refuses_bad_arguments() {
    let o = shoal_tests::shoal(&[
        "debug",
        "--bpffs-dir",
        "/nonexistent",
        "monitor",
        "--sample",
        "0",
    ]);
    assert!(!o.status.success());
    let o = shoal_tests::shoal(&["debug", "--bpffs-dir", "/nonexistent", "monitor"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no Shoal dataplane pinned"));
}

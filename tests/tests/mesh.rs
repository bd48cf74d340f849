//! The ingress routing mesh on a 3-node lab, tried from the lab's outside
//! client (a host on the underlay that is no node): every node answers a
//! published port, also one without a task of the service, and every
//! backend sees the client's own address; UDP too; published ports come
//! from Raft (dynamic range, conflicts refused); an iperf3 flow through a
//! node survives that node's daemon restart and the death of another
//! backend's node, after which new connections avoid the dead node.
//! Processes on the nodes themselves reach published ports at 127.0.0.1
//! and at their node's address (relayed from the node's ingress sandbox).

use std::collections::BTreeMap;

use shoal_tests::services::running;
use shoal_tests::{ok, refused, shoal_bin, wait, Lab};

/// A whoami answer's (hostname, remote address).
fn whoami_fields(body: &str) -> Option<(String, String)> {
    let field = |k: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
    };
    Some((field("Hostname:")?, field("RemoteAddr:")?))
}

/// `curl http://IP:PORT/` from the client: (hostname, remote address).
fn get(lab: &Lab, ip: &str, port: u16) -> Option<(String, String)> {
    get_from(lab, &lab.info_client_ns(), ip, port)
}

/// `curl http://IP:PORT/` from namespace `ns`: (hostname, remote address).
fn get_from(lab: &Lab, ns: &str, ip: &str, port: u16) -> Option<(String, String)> {
    let o = lab.run(
        ns,
        &["curl", "-s", "-m", "3", &format!("http://{ip}:{port}/")],
    );
    whoami_fields(&String::from_utf8_lossy(&o.stdout))
}

/// One UDP datagram to IP:PORT from the client: (hostname, remote address).
fn udp(lab: &Lab, ip: &str, port: u16) -> Option<(String, String)> {
    udp_from(lab, &lab.info_client_ns(), ip, port)
}

/// One UDP datagram to IP:PORT from namespace `ns`.
fn udp_from(lab: &Lab, ns: &str, ip: &str, port: u16) -> Option<(String, String)> {
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(2)\ns.connect(('{ip}',{port}))\ns.send(b'hi')\nprint(s.recv(4096).decode())"
    );
    let o = lab.run(ns, &["python3", "-c", &script]);
    whoami_fields(&String::from_utf8_lossy(&o.stdout))
}

trait ClientNs {
    fn info_client_ns(&self) -> String;
}

impl ClientNs for Lab {
    fn info_client_ns(&self) -> String {
        let v: serde_json::Value = serde_json::from_str(&ok(shoal_tests::shoal(&[
            "lab", "ls", "--name", &self.name, "--format", "json",
        ])))
        .unwrap();
        v["clients"][0]["netns"].as_str().unwrap().to_string()
    }
}

fn iperf_via(
    lab: &Lab,
    ip: &str,
    port: u16,
    secs: u32,
) -> std::thread::JoinHandle<serde_json::Value> {
    let (ns, ip, port) = (lab.info_client_ns(), ip.to_string(), port.to_string());
    std::thread::spawn(move || {
        let o = std::process::Command::new("timeout")
            .args([
                "60", "ip", "netns", "exec", &ns, "iperf3", "-c", &ip, "-p", &port,
            ])
            .args(["-t", &secs.to_string(), "-J"])
            .output()
            .unwrap();
        serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null)
    })
}

fn assert_iperf_ok(report: &serde_json::Value, what: &str) {
    assert!(report["error"].is_null(), "{what}: {report}");
    let bps = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(bps > 1e8, "{what}: {bps} bit/s");
}

#[test]
fn published_ports_answer_on_every_node_with_the_client_address() {
    published_ports_on_every_node("tc");
}

/// The same with `--accel xdp`: XDP enters the mesh on the underlay, tc
/// behind it carries the return path.
#[test]
fn published_ports_answer_on_every_node_with_the_client_address_xdp() {
    published_ports_on_every_node("xdp");
}

fn published_ports_on_every_node(accel: &str) {
    let lab = Lab::up(3, 0, accel);
    let bin = shoal_bin().to_string_lossy().into_owned();
    let nodes: Vec<String> = lab
        .info()
        .nodes
        .iter()
        .map(|n| n.underlay_ip.clone())
        .collect();
    let client_ip = "198.18.0.200";
    ok(lab.shoal_on("n1", &["network", "create", "appnet"]));
    let create = |args: &[&str]| {
        let mut a = vec!["service", "create", "--network", "appnet"];
        a.extend_from_slice(args);
        ok(lab.shoal_on("n1", &a))
    };
    // Two web tasks on n1 and n2; n3 runs none of them.
    create(&[
        "--name",
        "web",
        "--replicas",
        "2",
        "--replicas-max-per-node",
        "1",
        "--constraint",
        "node.hostname!=n3",
        "-p",
        "8080:80",
        "--",
        &bin,
        "whoami",
        "--port",
        "80",
    ]);
    create(&[
        "--name",
        "echo",
        "--replicas",
        "2",
        "--constraint",
        "node.hostname!=n3",
        "-p",
        "published=5353,target=5353,protocol=udp",
        "--",
        &bin,
        "whoami",
        "--udp",
        "--port",
        "5353",
    ]);
    create(&[
        "--name",
        "perf",
        "--constraint",
        "node.hostname==n1",
        "-p",
        "5201:5201",
        "-p",
        "5202:5202",
        "--",
        "sh",
        "-c",
        "iperf3 -s -p 5201 & exec iperf3 -s -p 5202",
    ]);
    let web: BTreeMap<String, String> = running(&lab, "n1", "web")
        .into_iter()
        .map(|t| (t.id[..12].to_string(), t.node))
        .collect();
    assert_eq!(web.len(), 2);

    // Published ports live in Raft: `-p 80` gets one from 30000-32767,
    // a taken one is refused.
    let out = create(&[
        "--name", "dyn", "-d", "-p", "80", "--", &bin, "whoami", "--port", "80",
    ]);
    assert!(!out.is_empty());
    let ls = ok(lab.shoal_on("n1", &["service", "ls"]));
    assert!(ls.contains("*:30000->80/tcp"), "{ls}");
    assert!(ls.contains("*:8080->80/tcp"), "{ls}");
    refused(
        &lab,
        "n1",
        &[
            "service", "create", "--name", "taken", "-p", "8080:81", "--", "true",
        ],
        "already published",
    );

    // Every node answers, n3 too; connections spread over both tasks and
    // each saw the client itself.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    wait("the published port on every node", 20, || {
        nodes.iter().all(|ip| get(&lab, ip, 8080).is_some())
    });
    for ip in &nodes {
        for _ in 0..12 {
            let (host, remote) = get(&lab, ip, 8080).expect("an answer");
            assert!(
                remote.starts_with(&format!("{client_ip}:")),
                "via {ip}: the backend saw {remote}, not the client"
            );
            *seen.entry(host).or_default() += 1;
        }
    }
    eprintln!("36 requests through the 3 nodes: {seen:?}");
    assert_eq!(seen.len(), 2, "{seen:?}");
    // UDP, through every node.
    for ip in &nodes {
        let (host, remote) = udp(&lab, ip, 5353).expect("a UDP answer");
        assert!(remote.starts_with(&format!("{client_ip}:")), "{remote}");
        assert!(!host.is_empty());
    }
    // Nothing else answers on the nodes' addresses.
    assert!(get(&lab, &nodes[2], 9999).is_none());
    // Another address of n3's underlay device answers published ports too
    // (as Docker's mesh does on every address of a host), the client's
    // address still kept, the replies from the address it used.
    let n3 = &lab.info().nodes[2];
    lab.run_ok(
        &n3.netns,
        &[
            "ip",
            "addr",
            "add",
            "198.18.0.103/24",
            "dev",
            &n3.underlay_dev,
        ],
    );
    // (Until the agent's next pass, at most a second, the node's local
    // relay answers there, from the ingress sandbox.)
    wait("n3's second address on the published port", 10, || {
        get(&lab, "198.18.0.103", 8080)
            .is_some_and(|(_, remote)| remote.starts_with(&format!("{client_ip}:")))
    });
    let (_, remote) = udp(&lab, "198.18.0.103", 5353).expect("UDP on the second address");
    assert!(remote.starts_with(&format!("{client_ip}:")), "{remote}");
    let v = lab.debug_json("n3", &["lb"]);
    assert_eq!(
        v["mesh_addresses"],
        serde_json::json!(["198.18.0.103"]),
        "{v}"
    );
    // An interface of n3 besides the underlay (a second link from the
    // client, on a subnet of its own, as a node's public NIC beside its
    // cluster network): published ports answer there too, the client's
    // address kept, the replies leaving by that link. (Before, the node's
    // local relay answered there, from the ingress sandbox's address.)
    let client_ns = lab.info_client_ns();
    let side_link = || {
        for (ns, cmd) in [
            (
                &n3.netns,
                "ip link add side0 type veth peer name side1 netns CLIENT",
            ),
            (&n3.netns, "ip addr add 198.19.3.3/24 dev side0"),
            (&n3.netns, "ip link set side0 up"),
            (&client_ns, "ip addr add 198.19.3.200/24 dev side1"),
            (&client_ns, "ip link set side1 up"),
        ] {
            let cmd = cmd.replace("CLIENT", &client_ns);
            lab.run_ok(ns, &cmd.split(' ').collect::<Vec<_>>());
        }
    };
    side_link();
    wait("n3's other interface on the published port", 10, || {
        get(&lab, "198.19.3.3", 8080).is_some_and(|(_, r)| r.starts_with("198.19.3.200:"))
    });
    let (_, remote) = udp(&lab, "198.19.3.3", 5353).expect("UDP on n3's other interface");
    assert!(remote.starts_with("198.19.3.200:"), "{remote}");
    // The link deleted and made again under the same name, faster than
    // the agent's pass: its hook went with the old device, and the agent
    // hooks the new one (it tells them apart by ifindex).
    lab.run_ok(&n3.netns, &["ip", "link", "del", "side0"]);
    side_link();
    wait("n3's remade interface on the published port", 10, || {
        get(&lab, "198.19.3.3", 8080).is_some_and(|(_, r)| r.starts_with("198.19.3.200:"))
    });
    let v = lab.debug_json("n3", &["lb"]);
    assert_eq!(
        v["mesh_addresses"],
        serde_json::json!(["198.18.0.103", "198.19.3.3"]),
        "{v}"
    );

    // `debug lb` on the entry node: the published ports and the flows that
    // entered there.
    let v = lab.debug_json("n3", &["lb", "--client", client_ip]);
    let published: Vec<u64> = v["published"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["published"].as_u64().unwrap())
        .collect();
    for p in [8080, 5353, 5201, 30000] {
        assert!(published.contains(&p), "{v}");
    }
    assert!(v["mesh_flows"].as_array().unwrap().len() >= 12, "{v}");
    if accel == "xdp" {
        // The entries were XDP's, and it left the return path to tc.
        let c = lab.debug_json("n3", &["drops"]);
        eprintln!("n3 counters with xdp: {c}");
        assert!(lab.counter("n3", "xdp_to_tc") > 0, "{c}");
    }

    // An iperf3 flow entering at n3 (perf runs on n1) survives a daemon
    // restart of n3.
    let flow = iperf_via(&lab, &nodes[2], 5201, 6);
    std::thread::sleep(std::time::Duration::from_secs(2));
    shoal_tests::shoal_ok(&["lab", "restart", "--name", &lab.name, "n3"]);
    assert_iperf_ok(&flow.join().unwrap(), "through n3 across its restart");

    // n2 (a web backend) dies while flows to n1's iperf3 enter at each
    // live node (n1 itself and n3): they are untouched; new connections
    // through every live node avoid the dead backend.
    let flows = [
        iperf_via(&lab, &nodes[0], 5201, 6),
        iperf_via(&lab, &nodes[2], 5202, 6),
    ];
    std::thread::sleep(std::time::Duration::from_secs(2));
    shoal_tests::shoal_ok(&["lab", "kill", "--name", &lab.name, "n2"]);
    let t0 = std::time::Instant::now();
    let dead = web
        .iter()
        .find(|(_, n)| n.as_str() == "n2")
        .map(|(id, _)| id.clone())
        .unwrap();
    let live = [&nodes[0], &nodes[2]];
    wait("no new connection to the dead node's backend", 30, || {
        live.iter()
            .all(|ip| (0..6).all(|_| get(&lab, ip, 8080).is_some_and(|(h, _)| h != dead)))
    });
    eprintln!("dead backend out of the mesh after {:?}", t0.elapsed());
    for (f, via) in flows.into_iter().zip(["n1", "n3"]) {
        assert_iperf_ok(&f.join().unwrap(), &format!("through {via} while n2 died"));
    }
}

/// Host mode: the port opens only where a task runs, straight to that
/// task (the client's address kept); a node takes one such task at most,
/// the rest stay pending with the reason.
#[test]
fn host_mode_ports_answer_only_where_a_task_runs() {
    let lab = Lab::up(3, 0, "tc");
    let bin = shoal_bin().to_string_lossy().into_owned();
    ok(lab.shoal_on("n1", &["network", "create", "appnet"]));
    ok(lab.shoal_on(
        "n1",
        &[
            "service",
            "create",
            "-d",
            "--name",
            "hm",
            "--replicas",
            "3",
            "--network",
            "appnet",
            "--constraint",
            "node.hostname!=n3",
            "-p",
            "published=9090,target=80,mode=host",
            "--",
            &bin,
            "whoami",
            "--port",
            "80",
        ],
    ));
    wait("two host-mode tasks running", 20, || {
        running(&lab, "n1", "hm").len() == 2
    });
    let tasks = shoal_tests::services::tasks(&lab, "n1", "hm");
    let pending: Vec<_> = tasks.iter().filter(|t| t.state == "pending").collect();
    assert_eq!(pending.len(), 1, "{tasks:?}");
    assert!(
        pending[0].err.contains("host-mode port"),
        "{:?}",
        pending[0]
    );
    let by_node: BTreeMap<String, String> = running(&lab, "n1", "hm")
        .into_iter()
        .map(|t| (t.node, t.id[..12].to_string()))
        .collect();
    for (node, ip) in [("n1", "198.18.0.1"), ("n2", "198.18.0.2")] {
        let answer = || get(&lab, ip, 9090);
        wait("the host-mode port", 10, || answer().is_some());
        let (host, remote) = answer().unwrap();
        assert_eq!(host, by_node[node], "{node} answers with its own task");
        assert!(remote.starts_with("198.18.0.200:"), "{remote}");
    }
    assert!(get(&lab, "198.18.0.3", 9090).is_none(), "n3 runs no task");

    // A task with an ingress port too routes by the ingress network, so a
    // UDP socket bound to 0.0.0.0 answers from its ingress address: its
    // host-mode UDP port goes there (it used to go to its first network's
    // address, and the answers never matched the flow).
    ok(lab.shoal_on(
        "n1",
        &[
            "service",
            "create",
            "--name",
            "both",
            "--network",
            "appnet",
            "--constraint",
            "node.hostname==n1",
            "-p",
            "published=5353,target=5353,protocol=udp",
            "-p",
            "published=5354,target=5353,protocol=udp,mode=host",
            "--",
            &bin,
            "whoami",
            "--udp",
            "--port",
            "5353",
        ],
    ));
    let both = running(&lab, "n1", "both")[0].id[..12].to_string();
    for (ip, port) in [("198.18.0.1", 5354), ("198.18.0.2", 5353)] {
        let answer = || udp(&lab, ip, port);
        wait(&format!("udp {ip}:{port}"), 10, || answer().is_some());
        let (host, remote) = answer().unwrap();
        assert_eq!(host, both, "{ip}:{port}");
        assert!(remote.starts_with("198.18.0.200:"), "{remote}");
    }
}

#[test]
fn processes_on_a_node_reach_published_ports_at_localhost_and_its_address() {
    let lab = Lab::up(3, 0, "tc");
    let bin = shoal_bin().to_string_lossy().into_owned();
    let info = lab.info();
    ok(lab.shoal_on("n1", &["network", "create", "appnet"]));
    let create = |args: &[&str]| {
        let mut a = vec!["service", "create", "--network", "appnet"];
        a.extend_from_slice(args);
        ok(lab.shoal_on("n1", &a))
    };
    // Web and a UDP echo on n1 and n2 only: n3 has no task of either.
    for (name, port, extra) in [
        ("web", "published=8080,target=80", &["--port", "80"][..]),
        (
            "echo",
            "published=5353,target=5353,protocol=udp",
            &["--udp", "--port", "5353"][..],
        ),
        (
            "hm",
            "published=9090,target=80,mode=host",
            &["--port", "80"][..],
        ),
    ] {
        let mut a = vec![
            "--name",
            name,
            "--replicas",
            "2",
            "--replicas-max-per-node",
            "1",
            "--constraint",
            "node.hostname!=n3",
            "-p",
            port,
            "--",
            &bin,
            "whoami",
        ];
        a.extend_from_slice(extra);
        create(&a);
    }
    let web: Vec<String> = running(&lab, "n1", "web")
        .iter()
        .map(|t| t.id[..12].to_string())
        .collect();
    let echo: Vec<String> = running(&lab, "n1", "echo")
        .iter()
        .map(|t| t.id[..12].to_string())
        .collect();
    for n in &info.nodes {
        for ip in ["127.0.0.1", n.underlay_ip.as_str()] {
            let answer = || get_from(&lab, &n.netns, ip, 8080);
            wait(&format!("{ip}:8080 from {}", n.name), 10, || {
                answer().is_some()
            });
            let (host, remote) = answer().unwrap();
            assert!(web.contains(&host), "{}: {host} is a web task", n.name);
            // The task sees the node's ingress sandbox (ingress subnet).
            assert!(remote.starts_with("10.0.0."), "{}: {remote}", n.name);
        }
        let answer = || udp_from(&lab, &n.netns, "127.0.0.1", 5353);
        wait(&format!("udp 127.0.0.1:5353 from {}", n.name), 10, || {
            answer().is_some()
        });
        assert!(echo.contains(&answer().unwrap().0));
    }
    // Host mode: straight into the local task, only where one runs.
    let hm: BTreeMap<String, String> = running(&lab, "n1", "hm")
        .into_iter()
        .map(|t| (t.node, t.id[..12].to_string()))
        .collect();
    for n in ["n1", "n2"] {
        let ns = &info.nodes.iter().find(|x| x.name == n).unwrap().netns;
        let answer = || get_from(&lab, ns, "127.0.0.1", 9090);
        wait(&format!("host-mode 127.0.0.1:9090 on {n}"), 10, || {
            answer().is_some()
        });
        assert_eq!(answer().unwrap().0, hm[n], "{n}: its own task");
    }
    assert!(get_from(&lab, &info.nodes[2].netns, "127.0.0.1", 9090).is_none());
    // Unpublished: the local port closes too.
    ok(lab.shoal_on("n1", &["service", "rm", "web"]));
    wait("8080 closed on n3", 10, || {
        get_from(&lab, &info.nodes[2].netns, "127.0.0.1", 8080).is_none()
    });
}

/// The mesh answers with ICMP where a router and a NAT would: a datagram
/// too big for the overlay once encapsulated (the client sends 1,500 bytes
/// with DF, as Linux does by default) gets "fragmentation needed" from the
/// entry node, so the client's kernel learns the mesh's MTU (1450) instead
/// of losing its datagrams; a datagram to a published port whose task
/// listens on no such port gets the task's "port unreachable", from the
/// published address, so the client sees "connection refused" rather than
/// a timeout, entering at the task's node or at another.
#[test]
fn too_big_datagrams_and_closed_ports_are_answered_with_icmp() {
    let lab = Lab::up(3, 0, "tc");
    let bin = shoal_bin().to_string_lossy().into_owned();
    ok(lab.shoal_on("n1", &["network", "create", "appnet"]));
    ok(lab.shoal_on(
        "n1",
        &[
            "service",
            "create",
            "--name",
            "echo",
            "--network",
            "appnet",
            "--constraint",
            "node.hostname==n1",
            "-p",
            "published=5353,target=5353,protocol=udp",
            "-p",
            "published=5454,target=5999,protocol=udp",
            "--",
            &bin,
            "whoami",
            "--udp",
            "--port",
            "5353",
        ],
    ));
    let client = lab.info_client_ns();
    let n3 = lab.info().nodes[2].underlay_ip.clone();
    wait("the echo through n3", 15, || udp(&lab, &n3, 5353).is_some());
    let before = lab.counter("n3", "too_big_for_underlay");
    // DF on every datagram (IP_PMTUDISC_DO), one of 1,500 bytes; then the
    // socket's path MTU (IP_MTU), which the ICMP answer sets.
    let script = format!(
        "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.setsockopt(socket.IPPROTO_IP,10,2)\ns.connect(('{n3}',5353))\ns.send(b'x'*1472)\ntime.sleep(0.5)\nprint(s.getsockopt(socket.IPPROTO_IP,14))"
    );
    let mtu = lab.run_ok(&client, &["python3", "-c", &script]);
    assert_eq!(mtu.trim(), "1450", "the client's path MTU to n3");
    let route = lab.run_ok(&client, &["ip", "route", "get", &n3]);
    assert!(route.contains("mtu 1450"), "{route}");
    assert_eq!(lab.counter("n3", "too_big_for_underlay"), before + 1);
    // Datagrams that fit still get their answer.
    assert!(udp(&lab, &n3, 5353).is_some());

    // Nothing listens on the task's 5999.
    for n in [0, 2] {
        let ip = lab.info().nodes[n].underlay_ip.clone();
        let script = format!(
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(3)\ns.connect(('{ip}',5454))\ns.send(b'hi')\ntry:\n  s.recv(100)\n  print('answered')\nexcept ConnectionRefusedError:\n  print('refused')\nexcept socket.timeout:\n  print('timeout')"
        );
        let got = lab.run_ok(&client, &["python3", "-c", &script]);
        assert_eq!(got.trim(), "refused", "entering at {ip}");
    }
}

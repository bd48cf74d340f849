//! Real containers on Shoal's attachable networks through the CNI plugin:
//! podman (CNI backend) on one node and `ctr run --cni` on another resolve
//! and reach a service through its VIP, each other by name across nodes,
//! and tasks reach them; removal cleans up everywhere and frees the
//! address. Then the plugin by hand, as the spec defines it, where no
//! client covers a case: each answer's error code, and nothing left behind.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use shoal_tests::containers::{node_socket, Containerd, Dockerd, Podman};
use shoal_tests::services::{create_whoami, running, service_vip, task_ns};
use shoal_tests::{ok, shoal_bin, wait, Lab};

/// A node's attached containers (`/v1/attachments`).
fn attachments(lab: &Lab, node: &str) -> Vec<Value> {
    let out = Command::new("curl")
        .args([
            "-s",
            "--unix-socket",
            &node_socket(lab, node),
            "http://shoal/v1/attachments",
        ])
        .output()
        .unwrap();
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The address of a container attached on `node`, by name or id.
fn attachment_ip(lab: &Lab, node: &str, name: &str) -> Option<String> {
    attachments(lab, node)
        .iter()
        .find(|a| a["name"] == name || a["container_id"] == name)
        .map(|a| a["ip"].as_str().unwrap().to_string())
}

/// The address `nslookup NAME` answers (busybox's output).
fn looked_up(out: &str, name: &str) -> Option<String> {
    let after = out.split(&format!("Name:\t{name}")).nth(1)?;
    let line = after.lines().find(|l| l.starts_with("Address"))?;
    Some(line.rsplit(' ').next()?.trim().to_string())
}

#[test]
fn podman_and_ctr_containers_resolve_and_reach_services_and_each_other() {
    let lab = Lab::up(3, 0, "tc");
    ok(lab.shoal_on("n1", &["network", "create", "--attachable", "appnet"]));
    let out = create_whoami(&lab, "web", &["--replicas", "3"]);
    assert!(out.contains("converged"), "{out}");
    let inspect: Value =
        serde_json::from_str(&ok(lab.shoal_on("n1", &["network", "inspect", "appnet"]))).unwrap();
    assert_eq!(inspect[0]["Attachable"], true);
    let vip = service_vip(&lab, "web");

    // podman on n2.
    let podman = Podman::new(&lab, "n2", "appnet");
    podman.ok(&[
        "run",
        "-d",
        "--name",
        "box1",
        "--network",
        "appnet",
        "--dns",
        "127.0.0.11",
        "localhost/busybox",
        "sleep",
        "600",
    ]);
    let box1 = attachment_ip(&lab, "n2", "box1").expect("box1 attached on n2");
    let exec = |script: &str| podman.ok(&["exec", "box1", "sh", "-c", script]);
    let out = exec("nslookup web");
    assert_eq!(
        looked_up(&out, "web").as_deref(),
        Some(vip.as_str()),
        "{out}"
    );
    // Through the VIP to tasks on several nodes.
    let out = exec("for i in 1 2 3 4 5 6 7 8 9; do wget -qO- http://web/; done");
    let tasks: std::collections::BTreeSet<&str> =
        out.lines().filter(|l| l.starts_with("Task: ")).collect();
    assert!(tasks.len() >= 2, "the VIP spread over {tasks:?}: {out}");
    assert!(out.contains(&format!("RemoteAddr: {box1}:")), "{out}");

    // ctr on n3.
    let ctr = Containerd::new(&lab, "n3", "appnet");
    let o = ctr.run("c2", "sleep 600", true);
    assert!(
        o.status.success(),
        "ctr run: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    // ctr gives CNI `NAMESPACE-ID` as the container's id, and no name: that
    // is the name it answers to.
    let c2 = attachment_ip(&lab, "n3", "default-c2")
        .unwrap_or_else(|| panic!("c2 attached on n3: {:?}", attachments(&lab, "n3")));
    let in_c2 = |script: &str| {
        let o = ctr.ctr(&[
            "task",
            "exec",
            "--exec-id",
            "t",
            "c2",
            "/bin/sh",
            "-c",
            script,
        ]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    // Each resolves and reaches the other by name, across nodes.
    let out = in_c2("nslookup box1; ping -c 2 -W 2 box1; wget -qO- http://web/");
    assert_eq!(
        looked_up(&out, "box1").as_deref(),
        Some(box1.as_str()),
        "{out}"
    );
    assert!(out.contains("2 packets received"), "{out}");
    assert!(out.contains("Task: web."), "{out}");
    let out = exec("nslookup default-c2; ping -c 2 -W 2 default-c2");
    assert_eq!(
        looked_up(&out, "default-c2").as_deref(),
        Some(c2.as_str()),
        "{out}"
    );
    assert!(out.contains("2 packets received"), "{out}");

    // A task reaches both, by address and by name.
    let ts = running(&lab, "n1", "web");
    let t = ts.iter().find(|t| t.node == "n1").expect("a task on n1");
    let ns = task_ns(&lab, t);
    for (name, ip) in [("box1", &box1), ("default-c2", &c2)] {
        let out = lab.run_ok(&ns, &["nslookup", name, "127.0.0.11"]);
        assert!(out.contains(ip.as_str()), "{name}: {out}");
        lab.run_ok(&ns, &["ping", "-c", "1", "-W", "2", ip]);
    }

    // Removal: gone from every node within the gossip bound, and the
    // address is free again (a new container may ask for it).
    podman.ok(&["rm", "-f", "-t", "0", "box1"]);
    assert!(attachments(&lab, "n2").is_empty());
    let took = wait("box1 leaves every node", 5, || {
        ["n1", "n3"]
            .iter()
            .all(|n| !lab.remote_ips(n).contains(&box1))
    });
    eprintln!("box1 gone from every node in {took:?}");
    podman.ok(&[
        "run",
        "-d",
        "--name",
        "box3",
        "--network",
        "appnet",
        "--ip",
        &box1,
        "localhost/busybox",
        "sleep",
        "600",
    ]);
    assert_eq!(
        attachment_ip(&lab, "n2", "box3").as_deref(),
        Some(box1.as_str())
    );
    // A detached `ctr run` never calls DEL: the container's process dies
    // with its namespace (/proc/PID/ns/net), and the node sweeps it.
    ctr.remove("c2");
    let took = wait("c2's vanished namespace is swept", 5, || {
        attachments(&lab, "n3").is_empty()
    });
    eprintln!("c2 swept in {took:?}");
    wait("c2 leaves every node", 5, || {
        ["n1", "n2"]
            .iter()
            .all(|n| !lab.remote_ips(n).contains(&c2))
    });
}

/// The plugin called as a runtime calls it.
struct Call {
    code: i32,
    out: Value,
}

fn cni(env: &[(&str, &str)], stdin: &str) -> Call {
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("shoal-cni");
    std::os::unix::fs::symlink(shoal_bin(), &plugin).unwrap();
    let mut child = Command::new(&plugin)
        .env_clear()
        .env("CNI_PATH", dir.path())
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A plugin refusing its environment exits before reading stdin.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let o = child.wait_with_output().unwrap();
    let out = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    Call {
        code: o.status.code().unwrap_or(-1),
        out,
    }
}

fn conf(version: &str, network: &str, socket: &str) -> String {
    serde_json::json!({"cniVersion": version, "name": "conf", "type": "shoal-cni",
        "network": network, "socket": socket})
    .to_string()
}

/// The `sh*` veths on a node: a refused ADD must leave none.
fn host_veths(lab: &Lab, node: &str) -> usize {
    let out = lab.run_ok(&format!("{}-{node}", lab.name), &["ip", "-br", "link"]);
    out.lines().filter(|l| l.starts_with("sh")).count()
}

#[test]
fn the_plugin_answers_every_command_with_the_specs_codes_and_leaves_nothing_behind() {
    let lab = Lab::up(2, 0, "tc");
    ok(lab.shoal_on("n1", &["network", "create", "--attachable", "appnet"]));
    ok(lab.shoal_on("n1", &["network", "create", "plain"]));
    let sock = node_socket(&lab, "n2");
    let ns = format!("{}-cni1", lab.name);
    assert!(Command::new("ip")
        .args(["netns", "add", &ns])
        .status()
        .unwrap()
        .success());
    let ns_path = format!("/run/netns/{ns}");
    let add = |id: &str, extra: &[(&str, &str)], conf: &str| {
        let mut env = vec![
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", id),
            ("CNI_NETNS", ns_path.as_str()),
            ("CNI_IFNAME", "eth0"),
        ];
        env.extend_from_slice(extra);
        cni(&env, conf)
    };
    let del = |id: &str, netns: &str| {
        cni(
            &[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", id),
                ("CNI_NETNS", netns),
                ("CNI_IFNAME", "eth0"),
            ],
            &conf("1.1.0", "appnet", &sock),
        )
    };
    let veths = host_veths(&lab, "n2");

    // VERSION lists what the clients here speak.
    let v = cni(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"1.1.0"}"#);
    assert_eq!(v.code, 0);
    for ver in ["0.4.0", "1.0.0", "1.1.0"] {
        assert!(v.out["supportedVersions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == ver));
    }

    // ADD, twice: the same answer, one interface; a 0.4.0 result has the
    // old layout.
    let a = add("c1", &[], &conf("1.1.0", "appnet", &sock));
    assert_eq!(a.code, 0, "{}", a.out);
    let ip = a.out["ips"][0]["address"].as_str().unwrap().to_string();
    assert_eq!(a.out["dns"]["nameservers"][0], "127.0.0.11");
    assert_eq!(a.out["routes"][0]["dst"], "0.0.0.0/0");
    assert_eq!(a.out["interfaces"][0]["sandbox"], ns_path.as_str());
    let again = add("c1", &[], &conf("1.1.0", "appnet", &sock));
    assert_eq!(
        (again.code, again.out["ips"][0]["address"].as_str()),
        (0, Some(ip.as_str()))
    );
    assert_eq!(host_veths(&lab, "n2"), veths + 1);
    let out = lab.run_ok(&ns, &["ip", "-br", "addr", "show", "eth0"]);
    assert!(out.contains(&ip), "{out}");

    // CHECK with the ADD result; after tampering, the spec's failure.
    let check = |prev: &Value| {
        let mut c: Value = serde_json::from_str(&conf("1.1.0", "appnet", &sock)).unwrap();
        c["prevResult"] = prev.clone();
        cni(
            &[
                ("CNI_COMMAND", "CHECK"),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_NETNS", &ns_path),
                ("CNI_IFNAME", "eth0"),
            ],
            &c.to_string(),
        )
    };
    assert_eq!(check(&a.out).code, 0);
    lab.run_ok(&ns, &["ip", "addr", "flush", "dev", "eth0"]);
    let bad = check(&a.out);
    assert_eq!(
        (bad.code, bad.out["code"].as_u64()),
        (1, Some(102)),
        "{}",
        bad.out
    );
    assert!(
        bad.out["details"]
            .as_str()
            .unwrap()
            .contains("lacks its address"),
        "{}",
        bad.out
    );

    // DEL, twice (the second with no namespace): both succeed, nothing left.
    assert_eq!(del("c1", &ns_path).code, 0);
    assert_eq!(del("c1", "").code, 0);
    assert_eq!(host_veths(&lab, "n2"), veths);
    assert!(attachments(&lab, "n2").is_empty());
    // CHECK of a container that is not there: code 3.
    let gone = check(&a.out);
    assert_eq!(gone.out["code"], 3, "{}", gone.out);

    // A wanted address: honoured when free (the one just freed), refused
    // when taken.
    let want = ip.split('/').next().unwrap().to_string();
    let arg = format!("IgnoreUnknown=1;IP={want}");
    let a = add("c1", &[("CNI_ARGS", &arg)], &conf("0.4.0", "appnet", &sock));
    assert_eq!(a.code, 0, "{}", a.out);
    assert_eq!(a.out["ips"][0]["address"], ip.as_str());
    assert_eq!(a.out["ips"][0]["version"], "4", "0.4.0 layout: {}", a.out);
    let ns2 = format!("{}-cni2", lab.name);
    assert!(Command::new("ip")
        .args(["netns", "add", &ns2])
        .status()
        .unwrap()
        .success());
    let ns2_path = format!("/run/netns/{ns2}");
    let taken = cni(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c2"),
            ("CNI_NETNS", &ns2_path),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", &arg),
        ],
        &conf("1.0.0", "appnet", &sock),
    );
    assert_eq!(taken.out["code"], 101, "{}", taken.out);
    assert_eq!(host_veths(&lab, "n2"), veths + 1);

    // GC: attachments not in the valid list go.
    let c2 = cni(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c2"),
            ("CNI_NETNS", &ns2_path),
            ("CNI_IFNAME", "eth0"),
        ],
        &conf("1.1.0", "appnet", &sock),
    );
    assert_eq!(c2.code, 0, "{}", c2.out);
    let mut gc: Value = serde_json::from_str(&conf("1.1.0", "appnet", &sock)).unwrap();
    gc["cni.dev/valid-attachments"] = serde_json::json!([{"containerID": "c1", "ifname": "eth0"}]);
    let r = cni(&[("CNI_COMMAND", "GC")], &gc.to_string());
    assert_eq!(r.code, 0, "{}", r.out);
    let left: Vec<String> = attachments(&lab, "n2")
        .iter()
        .map(|a| a["container_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, vec!["c1".to_string()]);

    // A namespace that vanishes without a DEL: swept, its address freed.
    assert!(Command::new("ip")
        .args(["netns", "del", &ns])
        .status()
        .unwrap()
        .success());
    let took = wait("the vanished container is detached", 10, || {
        attachments(&lab, "n2").is_empty()
    });
    eprintln!("swept in {took:?}");
    assert_eq!(host_veths(&lab, "n2"), veths);
    let again = cni(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c3"),
            ("CNI_NETNS", &ns2_path),
            ("CNI_IFNAME", "eth1"),
            ("CNI_ARGS", &arg),
        ],
        &conf("1.1.0", "appnet", &sock),
    );
    assert_eq!(again.out["ips"][0]["address"], ip.as_str(), "{}", again.out);
    assert_eq!(del("c3", &ns2_path).code, 0);
    let r = cni(
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c3"),
            ("CNI_NETNS", &ns2_path),
            ("CNI_IFNAME", "eth1"),
        ],
        &conf("1.1.0", "appnet", &sock),
    );
    assert_eq!(r.code, 0);

    // Junk on the local API: a clear refusal.
    for body in ["{not json", r#"{"network":"appnet"}"#] {
        let o = Command::new("curl")
            .args([
                "-s",
                "--unix-socket",
                &sock,
                "-d",
                body,
                "-H",
                "content-type: application/json",
            ])
            .arg("http://shoal/v1/attachments")
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["kind"], "invalid", "{v}");
    }

    // Refusals, each with its code and nothing made.
    let before = host_veths(&lab, "n2");
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, u64);
    let cases: Vec<Case> = vec![
        ("malformed JSON", "{not json".into(), vec![], 6),
        ("unknown network", conf("1.1.0", "nope", &sock), vec![], 7),
        ("plain network", conf("1.1.0", "plain", &sock), vec![], 7),
        (
            "bad address",
            conf("1.1.0", "appnet", &sock),
            vec![("CNI_ARGS", "IP=10.1.2.300")],
            7,
        ),
        (
            "unsupported version",
            conf("9.9.9", "appnet", &sock),
            vec![],
            1,
        ),
    ];
    for (what, c, extra, code) in cases {
        let r = add("c9", &extra, &c);
        assert_eq!(r.out["code"].as_u64(), Some(code), "{what}: {}", r.out);
        assert_ne!(r.code, 0, "{what}");
    }
    let missing = cni(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_NETNS", &ns2_path),
            ("CNI_IFNAME", "eth0"),
        ],
        &conf("1.1.0", "appnet", &sock),
    );
    assert_eq!(missing.out["code"], 4, "{}", missing.out);
    assert_eq!(host_veths(&lab, "n2"), before);
    assert!(attachments(&lab, "n2").is_empty());

    // STATUS: ready; a network that is not attachable: 50; the daemon
    // stopped: 51, and ADD asks to try again (11).
    let status = |net: &str| cni(&[("CNI_COMMAND", "STATUS")], &conf("1.1.0", net, &sock));
    assert_eq!(status("appnet").code, 0, "{}", status("appnet").out);
    assert_eq!(status("plain").out["code"], 50);
    shoal_tests::shoal_ok(&["lab", "stop", "--name", &lab.name, "n2"]);
    assert_eq!(status("appnet").out["code"], 51);
    let r = add("c9", &[], &conf("1.1.0", "appnet", &sock));
    assert_eq!(r.out["code"], 11, "{}", r.out);
    shoal_tests::shoal_ok(&["lab", "start", "--name", &lab.name, "n2"]);
    wait("n2 serves again", 20, || status("appnet").code == 0);
    std::thread::sleep(Duration::from_millis(100));
    let _ = Command::new("ip").args(["netns", "del", &ns2]).status();
}

#[test]
fn dockerd_runs_containers_on_a_shoal_network_through_the_driver() {
    let lab = Lab::up_with(
        2,
        0,
        "tc",
        &[
            "--daemon-arg=--docker-plugin=docker-plugin.sock",
            "--daemon-arg=--docker-socket=docker.sock",
        ],
    );
    ok(lab.shoal_on("n1", &["network", "create", "--attachable", "appnet"]));
    let out = create_whoami(&lab, "web", &["--replicas", "2"]);
    assert!(out.contains("converged"), "{out}");
    let docker = Dockerd::new(&lab, "n2");
    let net = [
        "network",
        "create",
        "-d",
        "shoal",
        "--ipam-driver",
        "shoal",
        "--ipam-opt",
        "network=appnet",
        "appnet",
    ];
    docker.ok(&net);
    // Only Shoal's IPAM gives Shoal's addresses.
    let o = docker.cmd(&["network", "create", "-d", "shoal", "other"]);
    assert!(!o.status.success());
    docker.ok(&[
        "run",
        "-d",
        "--network",
        "appnet",
        "--dns",
        "127.0.0.12",
        "--name",
        "c1",
        "busybox",
        "sleep",
        "600",
    ]);
    let ip_of_c1 = || {
        docker
            .ok(&[
                "inspect",
                "c1",
                "--format",
                "{{.NetworkSettings.Networks.appnet.IPAddress}}",
            ])
            .trim()
            .to_string()
    };
    let ip = ip_of_c1();
    let held: Vec<String> = attachments(&lab, "n2")
        .iter()
        .map(|a| a["ip"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        held,
        vec![ip.clone()],
        "the address comes from the managers"
    );
    let exec = |script: &str| docker.ok(&["exec", "c1", "sh", "-c", script]);
    let reach = || {
        let out = exec("nslookup web; for i in 1 2 3 4 5 6 7 8; do wget -qO- http://web/; done");
        assert!(looked_up(&out, "web").is_some(), "{out}");
        let tasks: std::collections::BTreeSet<&str> =
            out.lines().filter(|l| l.starts_with("Task: ")).collect();
        assert_eq!(tasks.len(), 2, "{out}");
    };
    reach();
    // A task on the other node reaches the container.
    let t = running(&lab, "n1", "web")
        .into_iter()
        .find(|t| t.node == "n1")
        .expect("a task on n1");
    lab.run_ok(&task_ns(&lab, &t), &["ping", "-c", "1", "-W", "2", &ip]);
    // ... and by the container's name, which the driver learns from
    // dockerd (Docker's plugin protocol does not carry it).
    let named = || {
        let ip = ip_of_c1();
        let took = wait("c1's name in a task's DNS on n1", 10, || {
            let o = lab.run(&task_ns(&lab, &t), &["nslookup", "c1", "127.0.0.11"]);
            String::from_utf8_lossy(&o.stdout).contains(ip.as_str())
        });
        eprintln!("c1 answered by name on n1 after {took:?}");
    };
    named();

    // disconnect and connect a running container.
    docker.ok(&["network", "disconnect", "appnet", "c1"]);
    assert!(attachments(&lab, "n2").is_empty());
    wait("c1 leaves n1", 5, || !lab.remote_ips("n1").contains(&ip));
    docker.ok(&["network", "connect", "appnet", "c1"]);
    reach();
    named();

    // The Shoal daemon restarts: the container keeps its connectivity and
    // the driver its state (Docker does not replay CreateNetwork).
    shoal_tests::shoal_ok(&["lab", "restart", "--name", &lab.name, "n2"]);
    reach();
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "/run/shoal/lab/{}/nodes/n2/docker-driver.json",
            lab.name
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(state["endpoints"].as_object().unwrap().len(), 1, "{state}");
    docker.ok(&[
        "run",
        "--rm",
        "--network",
        "appnet",
        "--dns",
        "127.0.0.12",
        "busybox",
        "wget",
        "-qO-",
        "http://web/",
    ]);

    // Junk on the plugin socket (root's only): an error answer, nothing
    // changed.
    let plugin = format!("/run/shoal/lab/{}/nodes/n2/docker-plugin.sock", lab.name);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&plugin).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    for (call, body) in [
        ("NetworkDriver.Join", "{not json"),
        (
            "NetworkDriver.CreateEndpoint",
            r#"{"NetworkID":"nope","EndpointID":"e"}"#,
        ),
        ("IpamDriver.RequestAddress", r#"{"PoolID":"nope"}"#),
        ("Nonsense.Call", "{}"),
    ] {
        let o = Command::new("curl")
            .args(["-s", "--unix-socket", &plugin, "-d", body])
            .arg(format!("http://docker/{call}"))
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(
            v["Err"].as_str().is_some_and(|e| !e.is_empty()),
            "{call}: {v}"
        );
    }
    reach();

    // Removal gives everything back.
    docker.ok(&["rm", "-f", "c1"]);
    assert!(attachments(&lab, "n2").is_empty(), "{}", docker.log());
    docker.ok(&["network", "rm", "appnet"]);
    let out = lab.run_ok(&format!("{}-n2", lab.name), &["ip", "-br", "link"]);
    assert!(!out.lines().any(|l| l.starts_with("shd")), "{out}");
}

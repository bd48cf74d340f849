//! Bad input: malformed VXLAN on the wire is dropped and counted while the
//! agent keeps serving; invalid CLI input gets one line naming the problem
//! and changes nothing.

use shoal_tests::{join_token, ok, send_udp, shoal, Lab};

#[test]
fn malformed_vxlan_is_dropped_counted_and_survived() {
    let lab = Lab::up(2, 1, "tc");
    let info = lab.info();
    let n1 = &info.nodes[0];
    let inner_to_ep = |vni: u32, flags: u8| {
        let mut p = vec![flags, 0, 0, 0];
        p.extend_from_slice(&(vni << 8).to_be_bytes());
        p.extend_from_slice(&[0x02, 0x42, 10, 0, 1, 2, 0x02, 0x42, 10, 0, 1, 9, 0x08, 0x00]);
        p.extend_from_slice(&[
            0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 1, 9, 10, 0, 1, 2,
        ]);
        p
    };
    let before = |c: &str| lab.counter("n1", c);
    let (t0, f0, v0, d0) = (
        before("truncated"),
        before("bad_vxlan_flags"),
        before("unknown_vni"),
        before("unknown_inner_dst"),
    );
    let mut wrong_dst = inner_to_ep(4000, 0x08);
    wrong_dst[41] = 99; // inner destination 10.0.1.99: nobody
    let bad: Vec<Vec<u8>> = vec![
        vec![0x08, 0, 0],                      // shorter than a VXLAN header
        vec![0x08, 0, 0, 0, 0, 0x10, 0x01, 0], // no inner frame
        inner_to_ep(4000, 0x00),               // I flag clear
        inner_to_ep(77, 0x08),                 // unknown VNI
        wrong_dst,
    ];
    for _ in 0..10 {
        send_udp(
            &info.nodes[1].netns,
            &format!("{}:4789", n1.underlay_ip),
            &bad,
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(before("truncated") - t0, 20);
    assert_eq!(before("bad_vxlan_flags") - f0, 10);
    assert_eq!(before("unknown_vni") - v0, 10);
    assert_eq!(before("unknown_inner_dst") - d0, 10);
    // The agent lives and the overlay still works.
    assert!(lab.info().nodes.iter().all(|n| n.pid.is_some()));
    lab.run_ok(
        &info.endpoints[1].netns,
        &["ping", "-c", "1", "-W", "2", &info.endpoints[0].ip],
    );
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(|s| s.as_str()).collect()
}

fn one_line_error(args: &[&str], needle: &str) {
    let out = shoal(args);
    assert!(
        !out.status.success(),
        "shoal {} should fail",
        args.join(" ")
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(needle),
        "shoal {}: expected {needle:?} in {err:?}",
        args.join(" ")
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err:?}");
}

#[test]
fn invalid_cli_input_is_refused_with_one_line_and_changes_nothing() {
    let lab = Lab::up(1, 1, "tc");
    let l = lab.name.as_str();
    one_line_error(&["lab", "up", "--name", "Bad_Name"], "invalid lab name");
    one_line_error(&["lab", "up", "--name", "zz9", "--nodes", "0"], "--nodes");
    one_line_error(
        &["lab", "up", "--name", "zz9", "--accel", "fast"],
        "unknown accel",
    );
    one_line_error(&["lab", "up", "--name", l], "already exists");
    one_line_error(&["lab", "ls", "--name", "nosuch"], "no lab named");
    // Argument errors caught by the parser are one line too.
    one_line_error(&["lab", "up", "--nodes", "three"], "invalid value");
    one_line_error(&["lab", "frobnicate"], "unrecognized subcommand");
    one_line_error(
        &["node", "update", "--availability", "sometimes", "x"],
        "unknown availability",
    );
    one_line_error(
        &["lab", "exec", "--name", l, "n7", "--", "true"],
        "no node, endpoint or client",
    );
    let peer = |vni: &str, ip: &str, mac: &str, vtep: &str| {
        vec![
            "debug", "--lab", l, "--node", "n1", "peer", "add", "--vni", vni, "--ip", ip, "--mac",
            mac, "--vtep", vtep,
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    };
    let p = peer("0", "10.0.1.9", "02:00:00:00:00:09", "198.18.0.9");
    one_line_error(&refs(&p), "out of range");
    let p = peer("16777216", "10.0.1.9", "02:00:00:00:00:09", "198.18.0.9");
    one_line_error(&refs(&p), "out of range");
    let p = peer("4000", "10.0.1.9", "zz:00:00:00:00:09", "198.18.0.9");
    one_line_error(&refs(&p), "bad MAC");
    let p = peer("4000", "10.0.1.9", "01:00:00:00:00:09", "198.18.0.9");
    one_line_error(&refs(&p), "not a unicast");
    let p = peer("4000", "10.0.1.2", "02:00:00:00:00:09", "198.18.0.9");
    one_line_error(&refs(&p), "local endpoint");
    let out = shoal(&refs(&peer(
        "4000",
        "10.0.1.300",
        "02:00:00:00:00:09",
        "198.18.0.9",
    )));
    assert!(!out.status.success());
    one_line_error(
        &["debug", "--lab", l, "--node", "n9", "maps"],
        "has no node",
    );
    one_line_error(
        &["debug", "--bpffs-dir", "/sys/fs/bpf/nothing-here", "maps"],
        "no Shoal dataplane",
    );
    // Nothing changed: the table holds exactly the lab's own endpoint.
    let eps = lab.debug_json("n1", &["endpoints"]);
    assert_eq!(eps.as_array().unwrap().len(), 1, "{eps}");
}

/// Runs `shoal ARGS` on `node`: a refusal with exit code 1 (Docker's) and
/// one line naming the problem.
fn refused_with_exit_1(lab: &Lab, node: &str, args: &[&str], needle: &str) {
    let o = lab.shoal_on(node, args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{args:?} on {node}: {err}");
    assert!(
        err.contains(needle),
        "{args:?} on {node}: want {needle:?} in {err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err:?}");
}

/// The local API's HTTP status and JSON error for one request on `node`'s
/// socket (the one `lab exec` hands to `shoal`).
fn api_status(lab: &Lab, node: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let script = format!(
        "curl -s -o /dev/stderr -w '%{{http_code}}' --unix-socket \"$SHOAL_SOCKET\" \
         -X {method} -H 'content-type: application/json' --data-binary '{body}' http://shoal{path}"
    );
    let o = shoal(&[
        "lab", "exec", "--name", &lab.name, node, "--", "sh", "-c", &script,
    ]);
    let code = String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (code, String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn each_error_kind_keeps_its_status_through_the_api_and_exit_code_1_in_the_cli() {
    let lab = Lab::up(2, 0, "tc");
    let kind = |j: &str| -> String {
        serde_json::from_str::<serde_json::Value>(j)
            .map(|v| v["kind"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    // invalid: a name the managers refuse, and a body that is not JSON.
    refused_with_exit_1(
        &lab,
        "n1",
        &["network", "create", "bad!name"],
        "invalid network name",
    );
    let (s, j) = api_status(&lab, "n1", "POST", "/v1/networks", r#"{"name":"bad!name"}"#);
    assert_eq!((s, kind(&j).as_str()), (400, "invalid"), "{j}");
    let (s, j) = api_status(&lab, "n1", "POST", "/v1/networks", "{not json");
    assert_eq!((s, kind(&j).as_str()), (400, "invalid"), "{j}");
    // not found.
    refused_with_exit_1(&lab, "n1", &["service", "inspect", "nosuch"], "not found");
    let (s, j) = api_status(&lab, "n1", "GET", "/v1/services/nosuch", "");
    assert_eq!((s, kind(&j).as_str()), (404, "not_found"), "{j}");
    let (s, _) = api_status(&lab, "n1", "GET", "/v1/no/such/route", "");
    assert_eq!(s, 404);
    // conflict: a name taken.
    ok(lab.shoal_on("n1", &["network", "create", "dup"]));
    refused_with_exit_1(&lab, "n1", &["network", "create", "dup"], "already exists");
    let (s, j) = api_status(&lab, "n1", "POST", "/v1/networks", r#"{"name":"dup"}"#);
    assert_eq!((s, kind(&j).as_str()), (409, "conflict"), "{j}");
    // unavailable: cluster state asked of a worker.
    refused_with_exit_1(&lab, "n2", &["service", "ls"], "not a swarm manager");
    let (s, j) = api_status(&lab, "n2", "GET", "/v1/services", "");
    assert_eq!((s, kind(&j).as_str()), (503, "unavailable"), "{j}");
    // forbidden: a node outside the swarm joins with a token whose secret
    // is wrong (the CA digest is right, so the TLS handshake passes and
    // the manager refuses the token itself); the manager's kind crosses
    // the control port and the joining node's API.
    let token = join_token(&lab, "n1", "worker");
    let bad = format!("{}{}", &token[..token.len() - 25], "a".repeat(25));
    let ns = lab.extra_host("x", "198.18.0.60");
    // Another cluster id: it stays out of the lab's gossip.
    let (child, socket) = lab.spawn_daemon(&ns, "x", "198.18.0.60", "outside");
    let _outsider = KillOnDrop(child);
    let o = shoal(&[
        "swarm",
        "join",
        "--socket",
        socket.to_str().unwrap(),
        "--token",
        &bad,
        "198.18.0.1:2377",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("invalid join token"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err:?}");
    // The CLI's usage errors keep exit code 2.
    let o = shoal(&["network", "create"]);
    assert_eq!(o.status.code(), Some(2));
    // Nothing of the refused requests was made.
    let nets = ok(lab.shoal_on("n1", &["network", "ls", "--format", "json"]));
    assert!(!nets.contains("bad!name"), "{nets}");
    assert_eq!(nets.matches("\"dup\"").count(), 1, "{nets}");
}

/// A spawned daemon, killed when the test ends (also when it fails).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Usage errors name what is wrong on their one line, with the detail clap
/// prints below its first line (issue 26): the missing arguments, the
/// possible values, a tip. Exit code 2, as for every usage error.
#[test]
fn usage_errors_name_the_missing_arguments_on_one_line() {
    let usage_error = |args: &[&str], needles: &[&str]| {
        let out = shoal(args);
        assert_eq!(out.status.code(), Some(2), "shoal {}", args.join(" "));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "one line: {err:?}");
        assert!(!err.contains("Usage:"), "{err:?}");
        for n in needles {
            assert!(
                err.contains(n),
                "shoal {}: expected {n:?} in {err:?}",
                args.join(" ")
            );
        }
    };
    usage_error(
        &["service", "create"],
        &[
            "shoal: the following required arguments were not provided: --name <NAME>, <COMMAND>... (see --help)",
        ],
    );
    usage_error(
        &["service", "ls", "--format", "yaml"],
        &["invalid value 'yaml'", "[possible values: table, json]"],
    );
    usage_error(
        &["lab", "ls", "--form", "json"],
        &[
            "unexpected argument '--form'",
            "tip: a similar argument exists: '--format'",
        ],
    );
}
